/**
 * What the device takes and what it reports: its options, a peer's config and update, the
 * status shapes `tenc status` prints, and the checks that guard what a caller passes (a
 * caller's bug throws a TypeError or RangeError here, before any state changes).
 */
import type { DataPlane, DropReason, Endpoint, PeerId } from './plane.js';
import { HANDSHAKE_REASONS } from '../noise/handshake.js';
import { parseKey } from '../noise/keys.js';
import type { Clock } from '../noise/types.js';
import { KEY_SIZE } from '../wire/constants.js';

/** The subset of a pino logger the device uses. */
export interface LoggerLike {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface PeerConfig {
  /** 32 bytes, or wg's base64 form. */
  publicKey: Uint8Array | string;
  endpoint?: Endpoint | null;
  allowedIps?: string[];
  /** This peer's own psk; undefined: the device psk; null: none (all zeros). */
  psk?: Uint8Array | null;
  /** Seconds; 0 or undefined: off. */
  persistentKeepalive?: number;
}

export interface PeerUpdate {
  endpoint?: Endpoint | null;
  /** Replaces the whole list. */
  allowedIps?: string[];
  psk?: Uint8Array | null;
  persistentKeepalive?: number;
}

export interface DeviceOptions {
  privateKey: Uint8Array;
  plane: DataPlane;
  clock?: Clock;
  /** The project psk used for every peer without its own. */
  psk?: Uint8Array;
  logger?: LoggerLike;
  /** Randomness for local indices and ephemeral keys (tests inject). */
  random?: (n: number) => Uint8Array;
  /** Retransmit jitter in ms (tests pass () => 0). */
  jitter?: () => number;
  /** Handshake messages per second above which the device is under load. */
  underLoadThreshold?: number;
  /** Wall clock for the "latest handshake" shown to people. */
  wallClock?: () => number;
}

/** Why a received handshake message was not used; decode failures plus the handshake's reasons. */
export const HANDSHAKE_FAILURES = ['bad_length', 'bad_type', 'bad_reserved', 'not_handshake', ...HANDSHAKE_REASONS] as const;
export type HandshakeFailure = (typeof HANDSHAKE_FAILURES)[number];

export interface PeerStatus {
  id: PeerId;
  publicKey: string;
  fingerprint: string;
  endpoint: Endpoint | null;
  allowedIps: string[];
  /** Clock ms / wall-clock ms of the latest completed handshake, null if none. */
  latestHandshakeMs: number | null;
  latestHandshakeUnixMs: number | null;
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  persistentKeepalive: number;
  hasSession: boolean;
  /** Non-zero drop counts only. */
  drops: Partial<Record<DropReason, number>>;
  initiationsSent: number;
  handshakesCompleted: number;
}

export interface DeviceStatus {
  publicKey: string;
  fingerprint: string;
  underLoad: boolean;
  peers: PeerStatus[];
  /** Non-zero counts only. */
  handshakeFailures: Partial<Record<HandshakeFailure, number>>;
  drops: Partial<Record<DropReason, number>>;
  /** The data plane's own counts (native plane: handshake gate and key memory), when it has them. */
  plane?: Record<string, number>;
}

export function toKeyBytes(key: Uint8Array | string, what: string): Uint8Array {
  if (typeof key === 'string') return parseKey(key, what); // KeyFormatError (with a code) when wg would refuse it
  if (!(key instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array or base64 string`);
  if (key.length !== KEY_SIZE) throw new RangeError(`${what} must be ${KEY_SIZE} bytes, got ${key.length}`);
  return key;
}

export function checkPsk(psk: unknown, what: string): Uint8Array {
  if (!(psk instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
  if (psk.length !== KEY_SIZE) throw new RangeError(`${what} must be ${KEY_SIZE} bytes, got ${psk.length}`);
  return psk;
}

export function checkEndpoint(e: unknown): Endpoint | null {
  if (e === null || e === undefined) return null;
  if (typeof e !== 'object') throw new TypeError('endpoint must be an object or null');
  const { address, port } = e as Endpoint;
  if (typeof address !== 'string' || typeof port !== 'number') throw new TypeError('endpoint needs a string address and a numeric port');
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`endpoint port out of range: ${port}`);
  return { address, port };
}

export function checkKeepalive(s: unknown): number {
  if (s === undefined) return 0;
  if (typeof s !== 'number' || !Number.isInteger(s)) throw new TypeError('persistentKeepalive must be an integer (seconds)');
  if (s < 0 || s > 65535) throw new RangeError(`persistentKeepalive must be 0 .. 65535 s, got ${s}`);
  return s;
}

export function nonZero<K extends string>(r: Record<K, number>): Partial<Record<K, number>> {
  const out: Partial<Record<K, number>> = {};
  for (const k of Object.keys(r) as K[]) if (r[k] !== 0) out[k] = r[k];
  return out;
}
