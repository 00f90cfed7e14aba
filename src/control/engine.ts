/**
 * What the pod lifecycle needs from the tunnel engine (device + data plane + TUN
 * + UDP), and the function that opens the real one. pod.ts talks only to this
 * interface, so its lifecycle is tested with a fake engine.
 */
import type { Logger } from '../log.js';
import type { PodConfig, PeerConfig } from './config.js';
import type { LocalService } from '../dataplane/plane.js';

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
  peerStatus(publicKey: string): EnginePeerStatus | null;
  /** Non-zero drop counts by reason, all peers and unattributed. */
  drops(): Record<string, number>;
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
}

export type EngineOpener = (opts: EngineOptions) => Promise<PodEngine>;

/**
 * Opens the production engine: the TUN named config.interface, the UDP socket on
 * listenPort with SO_MARK = fwmark, the native data plane and the device.
 */
export const openEngine: EngineOpener = async () => {
  throw new Error(
    'data plane not available: the native data plane (src/dataplane/native.ts) and the device (src/device/device.ts) are not wired into src/control/engine.ts yet',
  );
};
