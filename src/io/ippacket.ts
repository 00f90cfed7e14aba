/**
 * The few IP header facts the reference data plane needs (RFC 791 §3.1, RFC 8200 §3):
 * version, total length, source and destination. Plus a packet builder for tests.
 */

export interface InnerHeader {
  version: 4 | 6;
  /** Length the header claims (the rest of a decrypted payload is padding). */
  totalLength: number;
  src: Uint8Array;
  dst: Uint8Array;
}

/** Reads an IPv4/IPv6 header; null when the bytes are not a plausible IP packet. */
export function readInnerHeader(p: Uint8Array): InnerHeader | null {
  if (p.length < 1) return null;
  const version = p[0] >> 4;
  if (version === 4) {
    if (p.length < 20) return null;
    const ihl = (p[0] & 0x0f) * 4;
    const total = (p[2] << 8) | p[3];
    if (ihl < 20 || total < ihl || total > p.length) return null;
    return { version: 4, totalLength: total, src: p.subarray(12, 16), dst: p.subarray(16, 20) };
  }
  if (version === 6) {
    if (p.length < 40) return null;
    const total = 40 + ((p[4] << 8) | p[5]);
    if (total > p.length) return null;
    return { version: 6, totalLength: total, src: p.subarray(8, 24), dst: p.subarray(24, 40) };
  }
  return null;
}

/**
 * A minimal IP packet from `src` to `dst` (4- or 16-byte addresses, same family) carrying
 * `payload` as protocol 253 (RFC 3692 experimental). No checksum: nothing here routes it.
 */
export function makeIpPacket(src: Uint8Array, dst: Uint8Array, payload: Uint8Array): Uint8Array {
  if (src.length !== dst.length || (src.length !== 4 && src.length !== 16)) {
    throw new RangeError('makeIpPacket: addresses must both be 4 or both 16 bytes');
  }
  if (src.length === 4) {
    const p = new Uint8Array(20 + payload.length);
    p[0] = 0x45;
    p[2] = p.length >> 8;
    p[3] = p.length & 0xff;
    p[8] = 64;
    p[9] = 253;
    p.set(src, 12);
    p.set(dst, 16);
    p.set(payload, 20);
    return p;
  }
  const p = new Uint8Array(40 + payload.length);
  p[0] = 0x60;
  p[4] = payload.length >> 8;
  p[5] = payload.length & 0xff;
  p[6] = 253;
  p[7] = 64;
  p.set(src, 8);
  p.set(dst, 24);
  p.set(payload, 40);
  return p;
}
