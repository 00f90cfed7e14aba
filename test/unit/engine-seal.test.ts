/**
 * The native send path's segmentation and sealing of one TUN frame (native/engine_tx.c
 * tx_frame + seal / seal_scatter, through the engineTestSeal hook), without threads,
 * sockets or namespaces:
 *  - scatter seal (each TSO/USO segment's payload sealed straight out of the
 *    super-packet, TENC_SCATTER_SEAL=1) produces byte-identical messages to the
 *    copy path (TENC_SCATTER_SEAL=0);
 *  - every message opens with @noble/ciphers under the WireGuard nonce (whitepaper
 *    §5.4.6: 4 zero bytes, then the counter little-endian), and the plaintexts are
 *    the segments RFC 7414 / the virtio spec (§5.1.6.2) ask for: the payload in
 *    order, sequence numbers advancing, IP lengths and IDs, valid IPv4 header and
 *    TCP/UDP checksums (RFC 1071), zero padding to 16 bytes.
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { addon } from '../../src/native.js';
import { sealTransport } from '../../src/noise/transport.js';

const VNET_LEN = 10;
const GSO_TCPV4 = 1;
const GSO_UDP_L4 = 5;
const GSO_TCPV6 = 4;
const NEEDS_CSUM = 1;

function sum16(b: Uint8Array, acc = 0): number {
  for (let i = 0; i + 1 < b.length; i += 2) acc += (b[i]! << 8) | b[i + 1]!;
  if (b.length & 1) acc += b[b.length - 1]! << 8;
  return acc;
}
function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + Math.floor(acc / 0x10000);
  return acc;
}

/** RFC 1071 check of an L4 segment with its pseudo-header: 0xffff when valid. */
function l4Valid(v6: boolean, ip: Uint8Array, l4: Uint8Array, proto: number): boolean {
  const src = v6 ? ip.subarray(8, 24) : ip.subarray(12, 16);
  const dst = v6 ? ip.subarray(24, 40) : ip.subarray(16, 20);
  let acc = sum16(src) + sum16(dst) + proto + l4.length;
  acc = sum16(l4, acc);
  return fold(acc) === 0xffff;
}

interface Frame {
  frame: Uint8Array;
  hlen: number;
  payload: Uint8Array;
  v6: boolean;
  proto: number;
}

/** A virtio_net_hdr + super-packet as the kernel hands it over with TSO/USO on. */
function superPacket(kind: 'tcp4' | 'tcp6' | 'udp4', payloadLen: number, gso: number): Frame {
  const v6 = kind === 'tcp6';
  const proto = kind === 'udp4' ? 17 : 6;
  const ihl = v6 ? 40 : 20;
  const l4h = proto === 6 ? 32 : 8; // TCP with 12 bytes of options (timestamps)
  const hlen = ihl + l4h;
  const payload = new Uint8Array(randomBytes(payloadLen));
  const pkt = new Uint8Array(hlen + payloadLen);
  const dv = new DataView(pkt.buffer);
  if (v6) {
    pkt[0] = 0x60;
    dv.setUint16(4, l4h + payloadLen);
    pkt[6] = proto;
    pkt[7] = 64;
    pkt.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 8);
    pkt.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 24);
  } else {
    pkt[0] = 0x45;
    dv.setUint16(2, hlen + payloadLen);
    dv.setUint16(4, 0x1234);
    pkt[6] = 0x40; // DF
    pkt[8] = 64;
    pkt[9] = proto;
    pkt.set([10, 0, 0, 1], 12);
    pkt.set([10, 0, 0, 2], 16);
  }
  const l4 = pkt.subarray(ihl);
  const l4v = new DataView(pkt.buffer, ihl);
  l4v.setUint16(0, 40000);
  l4v.setUint16(2, 5201);
  if (proto === 6) {
    l4v.setUint32(4, 0xfffff000); // wraps during the split
    l4v.setUint32(8, 77);
    l4[12] = (l4h / 4) << 4;
    l4[13] = 0x18 | 0x80 | 0x01; // ACK PSH CWR FIN: CWR first only, PSH/FIN last only
    l4v.setUint16(14, 512);
    l4.set([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], 20);
  } else {
    l4v.setUint16(4, 8 + payloadLen);
  }
  pkt.set(payload, hlen);
  // NEEDS_CSUM: the L4 checksum field holds the pseudo-header sum (not complemented).
  const src = v6 ? pkt.subarray(8, 24) : pkt.subarray(12, 16);
  const dst = v6 ? pkt.subarray(24, 40) : pkt.subarray(16, 20);
  const ps = fold(sum16(src) + sum16(dst) + proto + l4h + payloadLen);
  l4v.setUint16(proto === 6 ? 16 : 6, ps);
  const h = new Uint8Array(VNET_LEN);
  const hv = new DataView(h.buffer);
  h[0] = NEEDS_CSUM;
  h[1] = kind === 'udp4' ? GSO_UDP_L4 : v6 ? GSO_TCPV6 : GSO_TCPV4;
  hv.setUint16(2, hlen, true);
  hv.setUint16(4, gso, true);
  hv.setUint16(6, ihl, true);
  hv.setUint16(8, proto === 6 ? 16 : 6, true);
  const frame = new Uint8Array(VNET_LEN + pkt.length);
  frame.set(h);
  frame.set(pkt, VNET_LEN);
  return { frame, hlen, payload, v6, proto };
}

function testSeal(frame: Uint8Array, key: Uint8Array, scatter: boolean, remote: number, ctr: bigint, align = 0, mtu = 0): Uint8Array[] {
  const out = addon.engineTestSeal(frame, key, scatter, remote, ctr, align, mtu) as Uint8Array;
  const msgs: Uint8Array[] = [];
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let o = 0; o < out.length; ) {
    const n = dv.getUint32(o, true);
    msgs.push(out.subarray(o + 4, o + 4 + n));
    o += 4 + n;
  }
  return msgs;
}

function nonce(counter: bigint): Uint8Array {
  const n = new Uint8Array(12);
  new DataView(n.buffer).setBigUint64(4, counter, true);
  return n;
}

const CASES: { kind: 'tcp4' | 'tcp6' | 'udp4'; payload: number; gso: number }[] = [
  { kind: 'tcp4', payload: 64_000, gso: 1368 }, // a full-size burst, last segment short
  { kind: 'tcp4', payload: 13_680, gso: 1368 }, // exact multiple
  { kind: 'tcp4', payload: 5001, gso: 1001 }, // odd sizes: padding differs per segment
  { kind: 'tcp6', payload: 30_000, gso: 1348 },
  { kind: 'udp4', payload: 9000, gso: 1392 },
  { kind: 'udp4', payload: 1, gso: 1392 }, // one segment
];

describe('send path split + seal: scatter seal against the copy path', () => {
  for (const c of CASES) {
    it(`${c.kind}, ${c.payload} payload bytes in ${c.gso}-byte segments: identical messages that open to correct segments`, () => {
      const key = new Uint8Array(randomBytes(32));
      const f = superPacket(c.kind, c.payload, c.gso);
      const copied = testSeal(f.frame, key, false, 0xa1b2c3d4, 1000n);
      const scattered = testSeal(f.frame, key, true, 0xa1b2c3d4, 1000n);
      const nseg = Math.max(1, Math.ceil(c.payload / c.gso));
      expect(copied.length).toBe(nseg);
      expect(scattered.length).toBe(nseg);
      for (let i = 0; i < nseg; i++) expect(Buffer.from(scattered[i]!).equals(Buffer.from(copied[i]!))).toBe(true);

      const got: Uint8Array[] = [];
      scattered.forEach((m, i) => {
        const hv = new DataView(m.buffer, m.byteOffset, 16);
        expect(hv.getUint32(0, true)).toBe(4);
        expect(hv.getUint32(4, true)).toBe(0xa1b2c3d4);
        expect(hv.getBigUint64(8, true)).toBe(1000n + BigInt(i));
        expect((m.length - 32) % 16).toBe(0);
        const pt = chacha20poly1305(key, nonce(1000n + BigInt(i))).decrypt(m.subarray(16));
        const plen = Math.min(c.gso, c.payload - i * c.gso);
        const seglen = f.hlen + plen;
        expect(pt.length).toBe(Math.ceil(seglen / 16) * 16);
        expect(pt.subarray(seglen).every((b) => b === 0)).toBe(true);
        const seg = pt.subarray(0, seglen);
        const sv = new DataView(seg.buffer, seg.byteOffset, seg.byteLength);
        const ihl = f.v6 ? 40 : 20;
        if (f.v6) {
          expect(sv.getUint16(4)).toBe(seglen - 40);
        } else {
          expect(sv.getUint16(2)).toBe(seglen);
          expect(sv.getUint16(4)).toBe((0x1234 + i) & 0xffff);
          expect(fold(sum16(seg.subarray(0, 20)))).toBe(0xffff);
        }
        if (f.proto === 6) {
          expect(sv.getUint32(ihl + 4)).toBe((0xfffff000 + i * c.gso) >>> 0);
          const flags = seg[ihl + 13]!;
          expect(flags & 0x80).toBe(i === 0 ? 0x80 : 0);
          expect(flags & 0x09).toBe(i === nseg - 1 ? 0x09 : 0);
        } else {
          expect(sv.getUint16(ihl + 4)).toBe(8 + plen);
        }
        expect(l4Valid(f.v6, seg, seg.subarray(ihl), f.proto)).toBe(true);
        got.push(seg.subarray(f.hlen));
      });
      expect(Buffer.concat(got).equals(Buffer.from(f.payload))).toBe(true);
    });
  }

  for (const kind of ['tcp4', 'tcp6'] as const) {
    it(`${kind}: TENC_TSO_ALIGN=64 cuts segments to IP lengths that are multiples of 64, same payload, same bytes in both modes`, () => {
      const key = new Uint8Array(randomBytes(32));
      const f = superPacket(kind, 40_000, kind === 'tcp4' ? 1368 : 1348);
      const copied = testSeal(f.frame, key, false, 9, 0n, 64);
      const scattered = testSeal(f.frame, key, true, 9, 0n, 64);
      expect(scattered.length).toBe(copied.length);
      const seg = Math.floor((f.hlen + (kind === 'tcp4' ? 1368 : 1348)) / 64) * 64 - f.hlen;
      expect(copied.length).toBe(Math.ceil(40_000 / seg));
      const got: Uint8Array[] = [];
      copied.forEach((m, i) => {
        expect(Buffer.from(scattered[i]!).equals(Buffer.from(m))).toBe(true);
        const pt = chacha20poly1305(key, nonce(BigInt(i))).decrypt(m.subarray(16));
        const plen = Math.min(seg, 40_000 - i * seg);
        if (i < copied.length - 1) expect(pt.length).toBe(f.hlen + plen); // a multiple of 64: no padding
        expect((f.hlen + plen) % 64 === 0 || i === copied.length - 1).toBe(true);
        const ihl = f.v6 ? 40 : 20;
        expect(l4Valid(f.v6, pt, pt.subarray(ihl, f.hlen + plen), 6)).toBe(true);
        got.push(pt.subarray(f.hlen, f.hlen + plen));
      });
      expect(Buffer.concat(got).equals(Buffer.from(f.payload))).toBe(true);
    });
  }

  it('TENC_TSO_ALIGN leaves UDP (USO) datagrams as the application cut them', () => {
    const key = new Uint8Array(randomBytes(32));
    const f = superPacket('udp4', 9000, 1392);
    expect(testSeal(f.frame, key, true, 9, 0n, 64).length).toBe(Math.ceil(9000 / 1392));
  });

  it('a plain packet (no GSO) is sealed the same in both modes', () => {
    const key = new Uint8Array(randomBytes(32));
    const f = superPacket('tcp4', 700, 1368);
    f.frame[1] = 0; // GSO_NONE, NEEDS_CSUM still set: the checksum is finished
    const a = testSeal(f.frame, key, false, 7, 0n);
    const b = testSeal(f.frame, key, true, 7, 0n);
    expect(a.length).toBe(1);
    expect(Buffer.from(a[0]!).equals(Buffer.from(b[0]!))).toBe(true);
    const pt = chacha20poly1305(key, nonce(0n)).decrypt(a[0]!.subarray(16));
    expect(l4Valid(false, pt, pt.subarray(20, f.hlen + 700), 6)).toBe(true);
  });

  it('a malformed super-packet yields no message in either mode', () => {
    const key = new Uint8Array(randomBytes(32));
    const f = superPacket('tcp4', 5000, 1000);
    f.frame[VNET_LEN] = 0x75; // IP version 7
    expect(testSeal(f.frame, key, false, 1, 0n)).toHaveLength(0);
    expect(testSeal(f.frame, key, true, 1, 0n)).toHaveLength(0);
  });

  // from a review of the C send path
  it('padding stops at the tunnel MTU, byte for byte as sealTransport (Linux) pads: a full-size packet fits the path', () => {
    const key = new Uint8Array(randomBytes(32));
    for (const [mtu, len] of [[1390, 1390], [1420, 1420], [1420, 1410], [1400, 1400], [1390, 100], [0, 1390]] as const) {
      const f = superPacket('udp4', len - 28, 1392);
      f.frame[1] = 0; // GSO_NONE
      f.frame[0] = 0; // checksum already done: the packet as it is
      for (const scatter of [false, true]) {
        const m = testSeal(f.frame, key, scatter, 0x11223344, 5n, 0, mtu);
        expect(m).toHaveLength(1);
        const want = sealTransport(key, 0x11223344, 5n, f.frame.subarray(VNET_LEN), mtu);
        expect(m[0]!.length).toBe(want.length);
        expect(Buffer.from(m[0]!).equals(Buffer.from(want))).toBe(true);
        if (mtu) expect(m[0]!.length - 32).toBeLessThanOrEqual(mtu);
      }
    }
  });

  it('a UDP checksum that computes to 0 is sent as 0xffff (0 is "none" to IPv4 and invalid to IPv6)', () => {
    const key = new Uint8Array(randomBytes(32));
    // one IPv6 UDP datagram, NEEDS_CSUM, its last payload word chosen so the sum folds to 0xffff
    const f = superPacket('tcp6', 0, 1000);
    const pkt = new Uint8Array(40 + 8 + 64);
    pkt.set(f.frame.subarray(VNET_LEN, VNET_LEN + 40));
    const dv = new DataView(pkt.buffer);
    dv.setUint16(4, 8 + 64);
    pkt[6] = 17;
    dv.setUint16(40, 5353);
    dv.setUint16(42, 53);
    dv.setUint16(44, 8 + 64);
    pkt.set(randomBytes(62), 48);
    const ps = fold(sum16(pkt.subarray(8, 24)) + sum16(pkt.subarray(24, 40)) + 17 + 8 + 64);
    dv.setUint16(46, ps); // the pseudo-header sum, as the kernel leaves it
    dv.setUint16(40 + 8 + 62, 0);
    const r = fold(sum16(pkt.subarray(40)));
    dv.setUint16(40 + 8 + 62, 0xffff - r); // the whole sum is now 0xffff: its complement 0
    expect(fold(sum16(pkt.subarray(40)))).toBe(0xffff);
    const frame = new Uint8Array(VNET_LEN + pkt.length);
    const hv = new DataView(frame.buffer);
    frame[0] = NEEDS_CSUM;
    hv.setUint16(6, 40, true);
    hv.setUint16(8, 6, true);
    frame.set(pkt, VNET_LEN);
    const m = testSeal(frame, key, false, 1, 0n);
    expect(m).toHaveLength(1);
    const pt = chacha20poly1305(key, nonce(0n)).decrypt(m[0]!.subarray(16));
    expect(new DataView(pt.buffer, pt.byteOffset).getUint16(46)).toBe(0xffff);
    expect(l4Valid(true, pt, pt.subarray(40, 40 + 8 + 64), 17)).toBe(true);
  });

  it('TENC_TSO_ALIGN never cuts a segment to 0 bytes or wraps it (small alignments, a tiny MSS): the split goes on', () => {
    // from a review of this session's change: without the old guard, align 4 made a 2-byte
    // MSS 0 (the split never advanced: a division by zero ended the process) and align 5 wrapped it
    const key = new Uint8Array(randomBytes(32));
    for (const align of [4, 5, 7]) {
      const f = superPacket('tcp4', 200, 2);
      expect(testSeal(f.frame, key, false, 9, 0n, align)).toHaveLength(100);
    }
  });

  it('a packet over the MTU yields no message from the test hook (as the send path drops it), never one padded past its room', () => {
    const key = new Uint8Array(randomBytes(32));
    const f = superPacket('udp4', 1421 - 28, 1392);
    f.frame[1] = 0;
    f.frame[0] = 0;
    expect(testSeal(f.frame, key, false, 1, 0n, 0, 1420)).toHaveLength(0);
    expect(testSeal(f.frame, key, false, 1, 0n, 0, 1421)).toHaveLength(1);
  });

  it('TENC_TSO_ALIGN leaves a small MSS alone (a peer\'s SYN chooses it): no segment cut to a few bytes', () => {
    const key = new Uint8Array(randomBytes(32));
    const f = superPacket('tcp4', 3600, 36); // MSS 36 with timestamps: 88-byte segments
    const m = testSeal(f.frame, key, false, 9, 0n, 64);
    expect(m).toHaveLength(100); // aligned to 64 it was 300 segments of 12 bytes
  });

  it('a super-packet whose IP length is not the frame\'s (cut short by the read, or lying) yields no message', () => {
    const key = new Uint8Array(randomBytes(32));
    for (const kind of ['udp4', 'tcp4', 'tcp6'] as const) {
      const f = superPacket(kind, 9000, 1392);
      const dv = new DataView(f.frame.buffer, VNET_LEN);
      if (kind === 'tcp6') dv.setUint16(4, dv.getUint16(4) + 13);
      else dv.setUint16(2, dv.getUint16(2) + 13);
      expect(testSeal(f.frame, key, false, 1, 0n)).toHaveLength(0);
      expect(testSeal(f.frame, key, true, 1, 0n)).toHaveLength(0);
    }
  });

  it('argument errors are typed', () => {
    const f = superPacket('tcp4', 100, 50).frame;
    expect(() => addon.engineTestSeal(f, new Uint8Array(31), true, 1, 0n)).toThrow(RangeError);
    expect(() => addon.engineTestSeal('x', new Uint8Array(32), true, 1, 0n)).toThrow(TypeError);
  });
});

/** A plain TCP segment (ACK, or ACK|PSH) of flow `port` with sequence number `seq`. */
function tcpSegment(v6: boolean, port: number, seq: number, payload: Uint8Array, psh = false): Uint8Array {
  const ihl = v6 ? 40 : 20;
  const hlen = ihl + 32;
  const p = new Uint8Array(hlen + payload.length);
  const dv = new DataView(p.buffer);
  if (v6) {
    p[0] = 0x60;
    dv.setUint16(4, 32 + payload.length);
    p[6] = 6;
    p[7] = 64;
    p.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 8);
    p.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 24);
  } else {
    p[0] = 0x45;
    dv.setUint16(2, p.length);
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p.set([10, 0, 0, 1], 12);
    p.set([10, 0, 0, 2], 16);
  }
  dv.setUint16(ihl, port);
  dv.setUint16(ihl + 2, 5201);
  dv.setUint32(ihl + 4, seq >>> 0);
  dv.setUint32(ihl + 8, 99);
  p[ihl + 12] = 8 << 4;
  p[ihl + 13] = psh ? 0x18 : 0x10;
  dv.setUint16(ihl + 14, 1000);
  p.set([1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6], ihl + 20);
  p.set(payload, hlen);
  return p;
}

describe('receive path TCP merge: writev of headers + payloads in place against the copied frame', () => {
  for (const v6 of [false, true]) {
    it(`IPv${v6 ? 6 : 4}: runs, breaks and singles give byte-identical frames`, () => {
      const seg = 1000; // 64 segments stay under the 64 KiB IP packet limit
      const pkts: Uint8Array[] = [];
      const payloads: Uint8Array[] = [];
      let seq = 0xffffff00;
      for (let i = 0; i < 70; i++) {
        // 70 full segments: one run of 64 (the limit), then 6 more
        const pl = new Uint8Array(randomBytes(seg));
        payloads.push(pl);
        pkts.push(tcpSegment(v6, 40000, seq, pl));
        seq += seg;
      }
      const short = new Uint8Array(randomBytes(300));
      pkts.push(tcpSegment(v6, 40000, seq, short, true)); // short + PSH: ends the second run
      payloads.push(short);
      pkts.push(tcpSegment(v6, 40001, 5, new Uint8Array(randomBytes(seg)))); // another flow: alone
      const copied = addon.engineTestGro(pkts, false) as Buffer[];
      const gathered = addon.engineTestGro(pkts, true) as Buffer[];
      expect(copied.length).toBe(3);
      expect(gathered.length).toBe(3);
      copied.forEach((c, i) => expect(gathered[i]!.equals(c)).toBe(true));

      const ihl = v6 ? 40 : 20;
      const hlen = ihl + 32;
      const runs = [payloads.slice(0, 64), payloads.slice(64)];
      runs.forEach((run, r) => {
        const f = gathered[r]!;
        const h = new DataView(f.buffer, f.byteOffset, 10);
        expect(f[0]).toBe(NEEDS_CSUM);
        expect(f[1]).toBe(v6 ? GSO_TCPV6 : GSO_TCPV4);
        expect(h.getUint16(2, true)).toBe(hlen);
        expect(h.getUint16(4, true)).toBe(seg);
        const ip = f.subarray(VNET_LEN);
        const total = hlen + run.reduce((a, b) => a + b.length, 0);
        expect(ip.length).toBe(total);
        const iv = new DataView(ip.buffer, ip.byteOffset);
        if (v6) expect(iv.getUint16(4)).toBe(total - 40);
        else {
          expect(iv.getUint16(2)).toBe(total);
          expect(fold(sum16(ip.subarray(0, 20)))).toBe(0xffff);
        }
        expect(ip[ihl + 13]).toBe(r === 0 ? 0x10 : 0x18); // the last segment's flags
        expect(ip.subarray(hlen).equals(Buffer.concat(run))).toBe(true);
      });
      expect(gathered[2]!.equals(Buffer.from(pkts[71]!))).toBe(true);
    });
  }

  it('segments that differ only in TCP byte 12 (the reserved and AE bits) are not merged, as Linux compares the whole flag word (from a review)', () => {
    for (const v6 of [false, true]) {
      const ihl = v6 ? 40 : 20;
      const a = tcpSegment(v6, 40000, 1000, new Uint8Array(randomBytes(1000)));
      const b = tcpSegment(v6, 40000, 2000, new Uint8Array(randomBytes(1000)));
      expect(addon.engineTestGro([a, b], false)).toHaveLength(1); // as they are: one run
      b[ihl + 12] |= 0x01; // AE (RFC 9768; formerly NS), data offset unchanged
      for (const iov of [false, true]) {
        const frames = addon.engineTestGro([a, b], iov) as Buffer[];
        expect(frames).toHaveLength(2);
        expect(frames[1]!.equals(Buffer.from(b))).toBe(true);
      }
    }
  });
});
