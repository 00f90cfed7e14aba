/**
 * One peer as the control plane holds it: identity, where to reach it, what it may send
 * from, its handshake record, keypair slots and timers, and the numbers `tenc status`
 * shows. Protocol state only; the device (src/device/device.ts) drives it.
 */
import type { Endpoint } from '../net/address.js';
import { Keypairs } from '../noise/keypairs.js';
import { PeerTimers } from '../noise/timers.js';
import type { Clock, HandshakePeer } from '../noise/types.js';
import { keyFingerprint } from '../log.js';

/** Small integer chosen by the control plane for each peer (0 .. 65535): how the data plane names it. */
export type PeerId = number;

/** A peer's traffic as the data plane counts it (src/device/plane.ts peerCounters). */
export interface PeerCounters {
  txBytes: number;
  rxBytes: number;
  txPackets: number;
  rxPackets: number;
  /** Clock ms of the last transport message sent / authenticated-received, 0 if never. */
  lastTxMs: number;
  lastRxMs: number;
  /** Of those, data (non-keepalive) messages. */
  lastTxDataMs: number;
  lastRxDataMs: number;
}

export interface PeerInit {
  id: PeerId;
  publicKey: Uint8Array;
  handshake: HandshakePeer;
  endpoint: Endpoint | null;
  clock: Clock;
  jitter?: () => number;
  persistentKeepaliveMs?: number;
  /** True when this peer has its own psk (not the device's). */
  ownPsk: boolean;
}

export class Peer {
  readonly id: PeerId;
  readonly publicKey: Uint8Array;
  /** Base64 of the public key (wg's form), the registry key. */
  readonly keyText: string;
  /** Short hash for logs; never log the key. */
  readonly fingerprint: string;
  endpoint: Endpoint | null;
  /** Canonical CIDRs. */
  readonly allowedIps = new Set<string>();
  readonly handshake: HandshakePeer;
  readonly keypairs = new Keypairs();
  readonly timers: PeerTimers;
  ownPsk: boolean;
  persistentKeepaliveMs: number;
  /** An initiation was wanted while we had no endpoint for the peer. */
  initiationBlocked = false;
  /** Local index of our initiation in flight, null if none. */
  handshakeIndex: number | null = null;
  /** Counters as last polled from the data plane. */
  lastCounters: PeerCounters | null = null;
  /** Keepalives we asked the plane to send since the last poll. */
  ownKeepalives = 0;
  /** Clock ms and wall-clock ms of the latest completed handshake. */
  latestHandshakeMs: number | null = null;
  latestHandshakeUnixMs: number | null = null;
  readonly stats = { initiationsSent: 0, responsesSent: 0, handshakesCompleted: 0, keepalivesSent: 0 };

  constructor(init: PeerInit) {
    this.id = init.id;
    this.publicKey = Uint8Array.from(init.publicKey);
    this.keyText = Buffer.from(this.publicKey).toString('base64');
    this.fingerprint = keyFingerprint(this.publicKey);
    this.endpoint = init.endpoint ? { ...init.endpoint } : null;
    this.handshake = init.handshake;
    this.ownPsk = init.ownPsk;
    this.persistentKeepaliveMs = init.persistentKeepaliveMs ?? 0;
    this.timers = new PeerTimers({
      clock: init.clock,
      keypairs: this.keypairs,
      jitter: init.jitter,
      persistentKeepaliveMs: this.persistentKeepaliveMs,
    });
  }
}
