/**
 * The contract between the control plane (TypeScript: handshakes, timers, peers,
 * config) and a data plane that moves packets. Two implementations:
 *  - native (src/dataplane/native.ts over native/engine_*.c (engine.h: the pipeline)): per-packet work in C
 *    threads, batches, offloads; the production path.
 *  - reference (src/dataplane/reference.ts): pure TypeScript over the fake TUN and
 *    UDP interfaces of src/io/, used by the pair tests.
 * The device (src/device/device.ts) drives it; the contract lives beside the device so
 * the planes build on it and nothing below them needs src/dataplane/.
 *
 * The control plane calls these per flow / per handshake, never per packet. The
 * data plane reports per-flow events in batches and exposes counters as typed
 * arrays that are read without a native call.
 */
import type { Endpoint } from '../net/address.js';
import type { PeerCounters, PeerId } from '../peer/peer.js';

export type { Endpoint, PeerCounters, PeerId };

export interface PlaneKeypair {
  localIndex: number;
  remoteIndex: number;
  sendKey: Uint8Array;
  recvKey: Uint8Array;
}

/** Why a packet was dropped. Order is the index into the drop counter array. */
export const DROP_REASONS = [
  'bad_header', // too short, wrong type, wrong length for its type
  'unknown_index', // transport data for a receiver index we do not have
  'replay', // counter already seen or left of the window
  'auth', // AEAD authentication failed
  'spoofed_source', // authentic, but the inner source is not in the peer's allowed IPs
  'bad_inner', // authentic, but the inner packet is not valid IPv4/IPv6
  'no_session', // outgoing packet for a peer without keys, dropped from its queue
  'no_route', // outgoing packet for a destination no peer claims
  'queue_full', // outgoing packet while the peer's handshake queue was full
  'counter_exhausted', // send counter reached REJECT_AFTER_MESSAGES
  'handshake_queue_full', // too many handshake messages waiting for the control plane
  'too_big', // packet larger than the MTU allows
  'io', // a send or inject system call failed
  'bad_destination', // authentic, but the inner destination (after DNAT) is not an address of this pod
  'bad_mac1', // handshake message whose mac1 is not made with our public key (checked before the control plane)
  'handshake_ratelimited', // under handshake load: its source address was over its rate (20/s, burst 5)
  'keypair_expired', // keypair older than REJECT_AFTER_TIME: nothing sealed or opened with it
  'nat_table_full', // authentic, a new flow to a service VIP, but its NAT bucket holds only live flows (never evicted: their replies would lose the VIP)
  'nat_clash', // authentic, a new flow to a service VIP whose reply tuple is a live flow's of another VIP (its replies could not be told apart)
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export type PlaneEvent =
  /** A handshake message (type 1, 2 or 3) arrived; the control plane validates it. */
  | { type: 'handshake'; data: Uint8Array; from: Endpoint }
  /** A packet was queued for a peer that has no send keypair. */
  | { type: 'need_handshake'; peer: PeerId }
  /** First authentic transport message on a keypair (key confirmation for the responder). */
  | { type: 'keypair_confirmed'; peer: PeerId; localIndex: number }
  /** The send counter of the peer's send keypair passed REKEY_AFTER_MESSAGES. */
  | { type: 'rekey_needed'; peer: PeerId; localIndex: number }
  /** Authentic transport data arrived from a new outer address (roaming). */
  | { type: 'endpoint'; peer: PeerId; endpoint: Endpoint }
  /**
   * An outgoing packet no peer claims (dropped as no_route), reported only while
   * reportRouteMisses(true): at most once per destination per second and at most 64
   * waiting. `packet` is a copy of it (null when larger than 2048 bytes).
   */
  | { type: 'route_miss'; destination: string; packet: Uint8Array | null };

/** A service VIP this pod serves: traffic to vip:port arriving through the tunnel is DNATed to localAddress:port. */
export interface LocalService {
  vip: string;
  localAddress: string;
  /** Protocol and port pairs; an empty list means every port of tcp and udp. */
  ports: { protocol: 'tcp' | 'udp'; port: number }[];
}

export interface DataPlane {
  addPeer(peer: PeerId, endpoint: Endpoint | null): void;
  /** Removes the peer's keypairs (zeroed), allowed IPs and queued packets. */
  removePeer(peer: PeerId): void;
  setEndpoint(peer: PeerId, endpoint: Endpoint): void;
  /** CIDR like 10.1.0.5/32 or fd00::5/128; longest prefix wins across peers. */
  addAllowedIp(peer: PeerId, cidr: string): void;
  removeAllowedIp(peer: PeerId, cidr: string): void;
  /** The keypair receives from now on; it sends only once made the send keypair. */
  addKeypair(peer: PeerId, keypair: PlaneKeypair): void;
  /** Makes the keypair (by local index) the one the peer's packets are sealed with; null stops sending. Flushes the peer's queue through it. */
  setSendKeypair(peer: PeerId, localIndex: number | null): void;
  /** Forgets a keypair and zeroes its keys. */
  removeKeypair(localIndex: number): void;
  /** Sends one handshake message as a UDP datagram. A failed send (no route, EPERM, a full socket buffer) is counted as io and never throws: the retransmit timer tries again. */
  sendHandshake(to: Endpoint, data: Uint8Array): void;
  /** Sends an empty transport message (keepalive) with the peer's send keypair. */
  sendKeepalive(peer: PeerId): void;
  /** Drops the packets queued for the peer, counting them as no_session. */
  flushQueue(peer: PeerId): void;
  setLocalServices(services: LocalService[]): void;
  /**
   * The pod's own addresses. Once set, an authentic inner packet is delivered only when its
   * destination (after DNAT) is one of them or a service's localAddress; anything else is
   * dropped as bad_destination, so a peer can never make the pod relay a packet (raw
   * injection routes like a local packet and could leave the pod in plaintext).
   */
  setLocalAddresses(addresses: string[]): void;
  peerCounters(peer: PeerId): PeerCounters;
  /** Drop counts by reason, summed over peers and unattributed drops. */
  drops(): Record<DropReason, number>;
  /** Per-peer drop counts (only the reasons that can be attributed to a peer). */
  peerDrops(peer: PeerId): Record<DropReason, number>;
  onEvents(handler: (events: PlaneEvent[]) => void): void;
  /** Turns route_miss events on or off (off at start). Optional: a plane without it never reports. */
  reportRouteMisses?(on: boolean): void;
  /**
   * Our static public key, so the plane can refuse handshake messages whose mac1 is not made
   * with it before they cost the control plane anything (bad_mac1). Optional: a plane without
   * it hands every handshake-shaped message over.
   */
  setPublicKey?(publicKey: Uint8Array): void;
  /** Plane-wide counts for status (names are the plane's own). Optional. */
  stats?(): Record<string, number>;
  close(): Promise<void>;
}
