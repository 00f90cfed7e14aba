/**
 * What the pod lifecycle needs from the tunnel engine (device + data plane + TUN
 * + UDP), and the function that opens the real one. pod.ts talks only to this
 * interface, so its lifecycle is tested with a fake engine.
 */
import type { Logger } from '../log.js';
import type { PodConfig, PeerConfig } from './config.js';
import { formatEndpoint } from '../net/address.js';
import type { LocalService } from '../device/plane.js';
import type { NetnsScope } from '../io/netns.js';

export interface EnginePeerStatus {
  /** The current endpoint (it may have roamed), "ip:port" / "[v6]:port", or null. */
  endpoint: string | null;
  /** Unix time (ms) of the latest completed handshake, or null. */
  latestHandshake: number | null;
  rxBytes: number;
  txBytes: number;
  /** Non-zero drop counts attributed to the peer. */
  drops: Record<string, number>;
}

export interface PodEngine {
  /** Describes the data plane for `tenc status` (e.g. "native, inject tun, udp gso"). */
  readonly description: string;
  /** Adds the peer or updates the one with the same public key (endpoint, allowed IPs, keepalive). */
  setPeer(peer: PeerConfig): void | Promise<void>;
  /** Removes the peer (zeroing its keys); false when unknown. */
  removePeer(publicKey: string): boolean | Promise<boolean>;
  setServices(services: LocalService[]): void;
  /**
   * Starts a new handshake with the peer now, although its session may be current
   * (`tenc rekey`). The protocol allows one initiation per REKEY_TIMEOUT (5 s): asked
   * earlier, it goes out when allowed. True when it went out at once. Optional so
   * test engines need not have it.
   */
  rekey?(publicKey: string): boolean;
  /** Per peer (by base64 public key): endpoint, handshake, transfer, drops. */
  peerStatuses(): Map<string, EnginePeerStatus>;
  /** Non-zero drop counts by reason, all peers and unattributed. */
  drops(): Record<string, number>;
  /** Non-zero counts of handshake messages not used, by reason. */
  handshakeFailures(): Record<string, number>;
  /** The data plane's own counts (native: handshakes and keepalives received, sibling batches, ...). Optional. */
  planeStats?(): Record<string, number>;
  /** The native data plane's switches as it runs them (NativePlane.switches); undefined when the addon does not report them. */
  planeSwitches?(): Record<string, number> | undefined;
  /**
   * Route misses (dns.classifyCidrs): with a handler, each outgoing packet no peer
   * claims is reported (once per destination per second, with a copy of the packet);
   * null turns reporting off. Optional: engines without it never report.
   */
  onRouteMiss?(handler: ((destination: string, packet: Uint8Array | null) => void) | null): void;
  /** Sends a reported packet again through the kernel's routing (after a bypass route). */
  releasePacket?(packet: Uint8Array): void;
  /** Closes the data plane, then the UDP sockets and the TUN (the interface disappears). */
  close(): Promise<void>;
}

export interface EngineOptions {
  config: PodConfig;
  /** 32 bytes; the engine may keep it, the pod zeroes its own copy at exit. */
  privateKey: Uint8Array;
  psk: Uint8Array;
  mtu: number;
  log: Logger;
  /** The pod's namespace in a pod host (io/netns.ts): the TUN and sockets are made there. */
  netns?: NetnsScope;
}

export type EngineOpener = (opts: EngineOptions) => Promise<PodEngine>;

type NativeModule = typeof import('../dataplane/native.js');
type DeviceModule = typeof import('../device/device.js');

/**
 * Opens the production engine: the TUN named config.interface (IFF_VNET_HDR with
 * offloads when dataPlane.tunOffload), the UDP socket on listenPort with
 * SO_MARK = fwmark (GRO when dataPlane.udpGro), raw injection sockets when
 * dataPlane.inject is "raw", the native data plane over them, and the device
 * (handshakes, timers) driving it. Loaded on demand so a missing addon is reported
 * as "data plane not available" instead of breaking every command.
 */
export const openEngine: EngineOpener = async ({ config, privateKey, psk, mtu, log, netns }) => {
  let native: NativeModule;
  let deviceMod: DeviceModule;
  try {
    native = await import('../dataplane/native.js');
    deviceMod = await import('../device/device.js');
  } catch (e) {
    throw new Error(`data plane not available: ${(e as Error).message}`);
  }
  const d = config.dataPlane;
  const fds: number[] = [];
  let plane: InstanceType<NativeModule['NativePlane']>;
  try {
    // one synchronous call in the pod's namespace (a pod host's): the TUN and sockets are made there
    const make = () => {
      const tun = native.openTun(config.interface, { offloads: d.tunOffload });
      fds.push(tun.fd);
      const udp = native.openUdp(config.listenPort, { fwmark: config.fwmark, gro: d.udpGro });
      fds.push(udp.fd);
      let raw4: number | undefined;
      let raw6: number | undefined;
      if (d.inject === 'raw') {
        // No fwmark on the inject sockets: a packet they carry must never be routed past
        // tenc's rule into the main table (the engine delivers only to the pod's addresses).
        raw4 = native.openRaw(4);
        fds.push(raw4);
        raw6 = native.openRaw(6);
        fds.push(raw6);
      }
      return new native.NativePlane({
        tun,
        udp,
        mode: d.inject,
        raw4,
        raw6,
        udpGso: d.udpGso && udp.gso,
        udpGro: d.udpGro && udp.gro,
        mtu,
      });
    };
    plane = netns ? netns.run(make) : make();
  } catch (e) {
    for (const fd of fds) native.closeFd(fd);
    throw e;
  }
  try {
    plane.setLocalAddresses([config.addresses.v4, config.addresses.v6].filter((a): a is string => a !== null));
  } catch (e) {
    await plane.close();
    throw e;
  }
  let device: InstanceType<DeviceModule['Device']>;
  try {
    device = new deviceMod.Device({ privateKey, plane, psk, logger: log });
    device.start();
  } catch (e) {
    await plane.close();
    throw e;
  }
  const description =
    `native, inject ${d.inject}, tun offload ${plane.tun.vnetHdr ? 'on' : 'off'}, ` +
    `udp gso ${d.udpGso && plane.udp.gso ? 'on' : 'off'}, udp gro ${d.udpGro && plane.udp.gro ? 'on' : 'off'}, ` +
    `aead ${native.aeadBackend()}`;
  log.info({ dataPlane: description, tun: plane.tun.name, port: plane.udp.port }, 'data plane open');
  const known = new Set<string>();
  let onMiss: ((destination: string, packet: Uint8Array | null) => void) | null = null;
  let closed = false;
  plane.onEvents((events) => {
    for (const ev of events) {
      if (ev.type !== 'route_miss') continue;
      if (onMiss !== null) onMiss(ev.destination, ev.packet);
      else ev.packet?.fill(0); // reported before reporting was turned off: the pod's plaintext, wiped
    }
  });
  // raw sockets for released packets, opened on first use; no fwmark: they follow tenc's rule
  const releaseFds: Partial<Record<4 | 6, number>> = {};
  return {
    description,
    setPeer(peer) {
      const cfg = { endpoint: peer.endpoint, allowedIps: peer.allowedIps, persistentKeepalive: peer.persistentKeepalive };
      if (known.has(peer.publicKey)) device.updatePeer(peer.publicKey, cfg);
      else {
        device.addPeer({ publicKey: peer.publicKey, ...cfg });
        known.add(peer.publicKey);
      }
    },
    removePeer(publicKey) {
      known.delete(publicKey);
      return device.removePeer(publicKey);
    },
    setServices(services) {
      plane.setLocalServices(services);
    },
    onRouteMiss(handler) {
      onMiss = handler;
      plane.reportRouteMisses(handler !== null);
    },
    releasePacket(packet) {
      if (closed) throw new Error('releasePacket: the engine is closed');
      const family = packet.length > 0 && packet[0] >> 4 === 6 ? 6 : 4;
      // made at first use, in the pod's namespace (a pod host's pod: not the host's)
      releaseFds[family] ??= netns ? netns.run(() => native.openRaw(family)) : native.openRaw(family);
      native.sendRaw(releaseFds[family]!, packet);
    },
    rekey(publicKey) {
      const sent = () => device.status().peers.find((p) => p.publicKey === publicKey)?.initiationsSent ?? 0;
      const before = sent();
      device.initiate(publicKey);
      return sent() > before;
    },
    peerStatuses() {
      const out = new Map<string, EnginePeerStatus>();
      for (const p of device.status().peers) {
        out.set(p.publicKey, {
          endpoint: p.endpoint ? formatEndpoint(p.endpoint) : null,
          latestHandshake: p.latestHandshakeUnixMs,
          rxBytes: p.rxBytes,
          txBytes: p.txBytes,
          drops: p.drops as Record<string, number>,
        });
      }
      return out;
    },
    drops() {
      return device.status().drops as Record<string, number>;
    },
    handshakeFailures() {
      return device.status().handshakeFailures as Record<string, number>;
    },
    planeStats() {
      return plane.stats();
    },
    planeSwitches() {
      return plane.switches();
    },
    async close() {
      onMiss = null;
      closed = true;
      await device.close();
      await plane.close();
      for (const fd of Object.values(releaseFds)) native.closeFd(fd);
      delete releaseFds[4];
      delete releaseFds[6];
    },
  };
};
