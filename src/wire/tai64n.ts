/**
 * TAI64N timestamps as WireGuard writes them in handshake initiations (whitepaper §5.4.2):
 * 8 bytes big-endian seconds with the TAI64 label 2^62 plus the 10 s TAI-UTC offset that
 * WireGuard implementations add, then 4 bytes big-endian nanoseconds with the low 24 bits
 * cleared (so the timestamp does not leak a fine-grained clock). Responders only compare
 * timestamps from the same peer, byte-wise, as big-endian numbers.
 */

import { TIMESTAMP_SIZE } from './constants.js';

/** 2^62 + 10, the seconds base used by WireGuard. */
export const TAI64_BASE = (1n << 62n) + 10n;
/** Nanosecond bits cleared before sending. */
export const TAI64N_WHITENER_MASK = 0xffffff;

/** TAI64N of a wall-clock time given in Unix milliseconds (integer or fractional). */
export function tai64nFromUnixMs(unixMs: number): Uint8Array {
  if (typeof unixMs !== 'number' || !Number.isFinite(unixMs)) throw new TypeError('unixMs must be a finite number');
  if (unixMs < 0) throw new RangeError('unixMs must not be negative');
  const secs = Math.floor(unixMs / 1000);
  const nanos = Math.floor((unixMs - secs * 1000) * 1e6) & ~TAI64N_WHITENER_MASK;
  const out = new Uint8Array(TIMESTAMP_SIZE);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, TAI64_BASE + BigInt(secs), false);
  dv.setUint32(8, nanos >>> 0, false);
  return out;
}

/** TAI64N of the current wall clock. */
export function tai64nNow(): Uint8Array {
  return tai64nFromUnixMs(Date.now());
}

/** Byte-wise (big-endian) comparison: negative, zero or positive. */
export function compareTai64n(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < TIMESTAMP_SIZE; i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return 0;
}

/** The timestamp plus one nanosecond (a fresh copy); used to keep sent timestamps increasing. */
export function tai64nIncrement(t: Uint8Array): Uint8Array {
  const out = Uint8Array.from(t);
  for (let i = TIMESTAMP_SIZE - 1; i >= 0; i--) {
    out[i] = (out[i] + 1) & 0xff;
    if (out[i] !== 0) break;
  }
  return out;
}
