/**
 * Transport data messages (src/noise/transport.ts), the reference the native engine matches:
 * header layout, nonce = 4 zero bytes || counter LE64, zero padding to 16 capped at the MTU,
 * ChaCha20-Poly1305 recomputed independently with @noble/ciphers, and every refusal reason.
 */
import { describe, it, expect } from 'vitest';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { openTransport, paddingSize, sealTransport } from '../../src/noise/transport.js';
import { REJECT_AFTER_MESSAGES } from '../../src/wire/constants.js';
import { writeU64LE } from '../../src/wire/messages.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const KEY = Uint8Array.from({ length: 32 }, (_, i) => i);

describe('sealTransport layout', () => {
  it('header, nonce and padding as the whitepaper says (checked against @noble/ciphers)', () => {
    const packet = Uint8Array.from({ length: 21 }, (_, i) => 0xa0 + i);
    const counter = 0x0102030405060708n;
    const msg = sealTransport(KEY, 0xdeadbeef, counter, packet);
    expect(hex(msg.subarray(0, 16))).toBe('04000000' + 'efbeadde' + '0807060504030201');
    expect(msg.length).toBe(16 + 32 + 16); // 21 padded to 32, plus tag

    const nonce = new Uint8Array(12);
    nonce.set([0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01], 4);
    const padded = new Uint8Array(32);
    padded.set(packet);
    const expected = chacha20poly1305(KEY, nonce).encrypt(padded);
    expect(hex(msg.subarray(16))).toBe(hex(expected));
  });

  it('a keepalive is 32 bytes', () => {
    const m = sealTransport(KEY, 1, 0n, new Uint8Array(0));
    expect(m.length).toBe(32);
    const r = openTransport(KEY, m);
    expect(r.ok && r.plaintext.length).toBe(0);
  });

  const PAD: [n: number, len: number, mtu: number, pad: number][] = [
    [1, 0, 0, 0],
    [2, 1, 0, 15],
    [3, 16, 0, 0],
    [4, 17, 0, 15],
    [5, 1419, 1420, 1], // 1419 -> 1420 (next 16 would be 1424 > MTU)
    [6, 1420, 1420, 0],
    [7, 1408, 1420, 0],
    [8, 1409, 1420, 11], // -> 1420
    [9, 1405, 1420, 3], // -> 1408
    [10, 100, 1420, 12],
    [11, 1500, 1420, 0], // longer than the MTU: 1500 % 1420 = 80, already aligned
    [12, 1501, 1420, 15], // 81 -> 96
  ];
  for (const [n, len, mtu, pad] of PAD) {
    it(`padding ${n}: ${len} bytes, mtu ${mtu} -> +${pad}`, () => {
      expect(paddingSize(len, mtu)).toBe(pad);
      expect(sealTransport(KEY, 1, 1n, new Uint8Array(len), mtu).length).toBe(32 + len + pad);
    });
  }
});

describe('openTransport', () => {
  const packet = new TextEncoder().encode('0123456789abcdefXYZ');
  const sealed = sealTransport(KEY, 42, 9n, packet, 1420);

  it('round trip returns index, counter and the padded packet', () => {
    const r = openTransport(KEY, sealed);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.receiverIndex).toBe(42);
    expect(r.counter).toBe(9n);
    expect(r.plaintext.length).toBe(32);
    expect(hex(r.plaintext.subarray(0, packet.length))).toBe(hex(packet));
    expect(r.plaintext.subarray(packet.length).every((b) => b === 0)).toBe(true);
  });

  it('any flipped ciphertext or tag bit: auth', () => {
    for (let off = 16; off < sealed.length; off += 5) {
      const m = Uint8Array.from(sealed);
      m[off] ^= 0x10;
      expect(openTransport(KEY, m)).toEqual({ ok: false, reason: 'auth' });
    }
  });

  it('a changed counter (nonce): auth; a wrong key: auth', () => {
    const m = Uint8Array.from(sealed);
    writeU64LE(m, 8, 10n);
    expect(openTransport(KEY, m)).toEqual({ ok: false, reason: 'auth' });
    expect(openTransport(new Uint8Array(32), sealed)).toEqual({ ok: false, reason: 'auth' });
  });

  it('not a transport message, or truncated: bad_header', () => {
    const m = Uint8Array.from(sealed);
    m[0] = 1;
    expect(openTransport(KEY, m)).toEqual({ ok: false, reason: 'bad_header' });
    expect(openTransport(KEY, sealed.subarray(0, 31))).toEqual({ ok: false, reason: 'bad_header' });
    const r = Uint8Array.from(sealed);
    r[2] = 9;
    expect(openTransport(KEY, r)).toEqual({ ok: false, reason: 'bad_header' });
  });

  it('a counter at REJECT_AFTER_MESSAGES or beyond: replay, before any decryption', () => {
    const m = Uint8Array.from(sealed);
    writeU64LE(m, 8, REJECT_AFTER_MESSAGES);
    expect(openTransport(KEY, m)).toEqual({ ok: false, reason: 'replay' });
  });

  it('argument errors are typed', () => {
    expect(() => sealTransport(new Uint8Array(31), 1, 0n, packet)).toThrow(RangeError);
    expect(() => sealTransport(KEY, 1, 0 as unknown as bigint, packet)).toThrow(TypeError);
    expect(() => sealTransport(KEY, 1, -1n, packet)).toThrow(RangeError);
    expect(() => sealTransport(KEY, 1, REJECT_AFTER_MESSAGES, packet)).toThrow(RangeError);
    expect(() => sealTransport(KEY, 2 ** 32, 0n, packet)).toThrow(RangeError);
    expect(() => sealTransport(KEY, 1, 0n, new Uint8Array(65535))).toThrow(RangeError);
    expect(() => openTransport(KEY, 'x' as unknown as Uint8Array)).toThrow(TypeError);
    expect(() => paddingSize(-1)).toThrow(RangeError);
  });

  it('the largest counter allowed seals and opens', () => {
    const c = REJECT_AFTER_MESSAGES - 1n;
    const r = openTransport(KEY, sealTransport(KEY, 1, c, packet));
    expect(r.ok && r.counter).toBe(c);
  });
});
