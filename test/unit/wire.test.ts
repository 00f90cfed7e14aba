/**
 * The wire gate (src/wire/messages.ts decodeMessage): a numbered table of refusals and
 * acceptances at every size boundary, field views of each message type, the constants'
 * values against the whitepaper, and the TAI64N encoding.
 */
import { describe, it, expect } from 'vitest';
import * as C from '../../src/wire/constants.js';
import { decodeMessage, readU64LE, writeU64LE, type DecodeReason } from '../../src/wire/messages.js';
import { compareTai64n, tai64nFromUnixMs, tai64nIncrement } from '../../src/wire/tai64n.js';

/** A message of `len` bytes whose first byte is `type`, reserved bytes zero. */
function msg(type: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  if (len > 0) b[0] = type;
  for (let i = 4; i < len; i++) b[i] = (i * 7) & 0xff;
  return b;
}

type Row = [n: number, what: string, bytes: Uint8Array, expected: DecodeReason | number];

const TABLE: Row[] = [
  [1, 'empty', new Uint8Array(0), 'bad_length'],
  [2, '1 byte', msg(1, 1), 'bad_length'],
  [3, '3 bytes (header cut)', msg(1, 3), 'bad_length'],
  [4, 'type 0', msg(0, 148), 'bad_type'],
  [5, 'type 5', msg(5, 148), 'bad_type'],
  [6, 'type 255', msg(255, 32), 'bad_type'],
  [7, 'reserved byte 1 set', (() => { const b = msg(1, 148); b[1] = 1; return b; })(), 'bad_reserved'],
  [8, 'reserved byte 2 set', (() => { const b = msg(2, 92); b[2] = 0x80; return b; })(), 'bad_reserved'],
  [9, 'reserved byte 3 set', (() => { const b = msg(4, 32); b[3] = 1; return b; })(), 'bad_reserved'],
  [10, 'initiation 147', msg(1, 147), 'bad_length'],
  [11, 'initiation 148', msg(1, 148), C.MESSAGE_INITIATION],
  [12, 'initiation 149', msg(1, 149), 'bad_length'],
  [13, 'initiation truncated to 4', msg(1, 4), 'bad_length'],
  [14, 'response 91', msg(2, 91), 'bad_length'],
  [15, 'response 92', msg(2, 92), C.MESSAGE_RESPONSE],
  [16, 'response 93', msg(2, 93), 'bad_length'],
  [17, 'response sized as initiation', msg(2, 148), 'bad_length'],
  [18, 'cookie reply 63', msg(3, 63), 'bad_length'],
  [19, 'cookie reply 64', msg(3, 64), C.MESSAGE_COOKIE_REPLY],
  [20, 'cookie reply 65', msg(3, 65), 'bad_length'],
  [21, 'transport 16 (header only)', msg(4, 16), 'bad_length'],
  [22, 'transport 31', msg(4, 31), 'bad_length'],
  [23, 'transport 32 (keepalive)', msg(4, 32), C.MESSAGE_TRANSPORT],
  [24, 'transport 33 (not a multiple of 16: MTU-capped padding)', msg(4, 33), C.MESSAGE_TRANSPORT],
  [25, 'transport 1452', msg(4, 1452), C.MESSAGE_TRANSPORT],
  [26, 'transport 65535 (largest UDP payload)', msg(4, 65535), C.MESSAGE_TRANSPORT],
  [27, 'transport 65536 (oversized)', msg(4, 65536), 'bad_length'],
  [28, 'initiation 1 MiB (oversized)', msg(1, 1 << 20), 'bad_length'],
];

describe('decodeMessage table', () => {
  for (const [n, what, bytes, expected] of TABLE) {
    it(`${n}. ${what}`, () => {
      const r = decodeMessage(bytes);
      if (typeof expected === 'number') {
        expect(r.ok).toBe(true);
        expect(r.ok && r.message.type).toBe(expected);
        expect(r.ok && r.message.bytes).toBe(bytes); // a view, not a copy
      } else {
        expect(r).toEqual({ ok: false, reason: expected });
      }
    });
  }

  it('non-Uint8Array input is refused, not thrown', () => {
    expect(decodeMessage('abc' as unknown as Uint8Array)).toEqual({ ok: false, reason: 'bad_length' });
    expect(decodeMessage(null as unknown as Uint8Array)).toEqual({ ok: false, reason: 'bad_length' });
  });

  it('works on a subarray at an odd offset', () => {
    const big = new Uint8Array(200);
    big.set(msg(3, 64), 5);
    const r = decodeMessage(big.subarray(5, 69));
    expect(r.ok && r.message.type).toBe(C.MESSAGE_COOKIE_REPLY);
  });
});

describe('field views', () => {
  it('initiation fields at their offsets', () => {
    const b = msg(1, 148);
    b.set([0x78, 0x56, 0x34, 0x12], 4);
    const r = decodeMessage(b);
    if (!r.ok || r.message.type !== C.MESSAGE_INITIATION) throw new Error('decode');
    const m = r.message;
    expect(m.senderIndex).toBe(0x12345678);
    expect(m.ephemeral.byteOffset).toBe(8);
    expect(m.ephemeral.length).toBe(32);
    expect(m.encryptedStatic.byteOffset).toBe(40);
    expect(m.encryptedStatic.length).toBe(48);
    expect(m.encryptedTimestamp.byteOffset).toBe(88);
    expect(m.encryptedTimestamp.length).toBe(28);
    expect(m.mac1.byteOffset).toBe(116);
    expect(m.mac2.byteOffset).toBe(132);
    expect(m.mac2.length).toBe(16);
  });

  it('response fields at their offsets', () => {
    const b = msg(2, 92);
    b.set([1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], 4);
    const r = decodeMessage(b);
    if (!r.ok || r.message.type !== C.MESSAGE_RESPONSE) throw new Error('decode');
    const m = r.message;
    expect(m.senderIndex).toBe(1);
    expect(m.receiverIndex).toBe(0xffffffff);
    expect([m.ephemeral.byteOffset, m.ephemeral.length]).toEqual([12, 32]);
    expect([m.encryptedNothing.byteOffset, m.encryptedNothing.length]).toEqual([44, 16]);
    expect([m.mac1.byteOffset, m.mac2.byteOffset]).toEqual([60, 76]);
  });

  it('cookie reply fields at their offsets', () => {
    const b = msg(3, 64);
    b.set([2, 0, 0, 0], 4);
    const r = decodeMessage(b);
    if (!r.ok || r.message.type !== C.MESSAGE_COOKIE_REPLY) throw new Error('decode');
    expect(r.message.receiverIndex).toBe(2);
    expect([r.message.nonce.byteOffset, r.message.nonce.length]).toEqual([8, 24]);
    expect([r.message.encryptedCookie.byteOffset, r.message.encryptedCookie.length]).toEqual([32, 32]);
  });

  it('transport header: receiver u32 LE, counter u64 LE as bigint', () => {
    const b = msg(4, 48);
    b.set([0xdd, 0xcc, 0xbb, 0xaa], 4);
    b.set([0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0xf1], 8);
    const r = decodeMessage(b);
    if (!r.ok || r.message.type !== C.MESSAGE_TRANSPORT) throw new Error('decode');
    expect(r.message.receiverIndex).toBe(0xaabbccdd);
    expect(r.message.counter).toBe(0xf102030405060708n);
    expect([r.message.ciphertext.byteOffset, r.message.ciphertext.length]).toEqual([16, 32]);
  });

  it('u64 LE round trip at the edges', () => {
    const b = new Uint8Array(8);
    for (const v of [0n, 1n, 0xffffffffn, 0x100000000n, C.REJECT_AFTER_MESSAGES, (1n << 64n) - 1n]) {
      writeU64LE(b, 0, v);
      expect(readU64LE(b, 0)).toBe(v);
    }
  });
});

describe('constants (whitepaper §5.4, §6.1)', () => {
  it('sizes add up field by field', () => {
    expect(4 + 4 + 32 + (32 + 16) + (12 + 16) + 16 + 16).toBe(C.MESSAGE_INITIATION_SIZE);
    expect(4 + 4 + 4 + 32 + 16 + 16 + 16).toBe(C.MESSAGE_RESPONSE_SIZE);
    expect(4 + 4 + 24 + (16 + 16)).toBe(C.MESSAGE_COOKIE_REPLY_SIZE);
    expect(C.MESSAGE_TRANSPORT_HEADER_SIZE).toBe(16);
    expect(C.MESSAGE_INITIATION_SIZE - 32).toBe(C.INITIATION_OFFSET.mac1);
    expect(C.MESSAGE_RESPONSE_SIZE - 32).toBe(C.RESPONSE_OFFSET.mac1);
  });

  it('protocol strings and limits', () => {
    expect(C.CONSTRUCTION).toBe('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s');
    expect(C.IDENTIFIER).toBe('WireGuard v1 zx2c4 Jason@zx2c4.com');
    expect(C.LABEL_MAC1).toBe('mac1----');
    expect(C.LABEL_COOKIE).toBe('cookie--');
    expect(C.REKEY_AFTER_MESSAGES).toBe(1152921504606846976n);
    expect(C.REJECT_AFTER_MESSAGES).toBe(18446744073709543423n);
    expect([C.REKEY_AFTER_TIME, C.REJECT_AFTER_TIME, C.REKEY_ATTEMPT_TIME]).toEqual([120_000, 180_000, 90_000]);
    expect([C.REKEY_TIMEOUT, C.KEEPALIVE_TIMEOUT, C.COOKIE_REFRESH_TIME]).toEqual([5_000, 10_000, 120_000]);
    expect(C.REPLAY_WINDOW_SIZE).toBe(8128);
    expect(C.MAX_TIMER_HANDSHAKES).toBe(18);
  });
});

describe('TAI64N', () => {
  it('Unix epoch is 2^62 + 10 seconds, 0 ns', () => {
    expect(Buffer.from(tai64nFromUnixMs(0)).toString('hex')).toBe('400000000000000a00000000');
  });

  it('seconds big-endian; nanoseconds big-endian with the low 24 bits cleared', () => {
    const t = tai64nFromUnixMs(1_700_000_000_999);
    const dv = new DataView(t.buffer);
    expect(dv.getBigUint64(0, false)).toBe((1n << 62n) + 10n + 1_700_000_000n);
    const ns = dv.getUint32(8, false);
    expect(ns & 0xffffff).toBe(0);
    expect(ns).toBe(999_000_000 & ~0xffffff);
  });

  it('orders by time; increment is strictly greater', () => {
    const a = tai64nFromUnixMs(1000);
    const b = tai64nFromUnixMs(2000);
    expect(compareTai64n(a, b)).toBeLessThan(0);
    expect(compareTai64n(b, a)).toBeGreaterThan(0);
    expect(compareTai64n(a, Uint8Array.from(a))).toBe(0);
    expect(compareTai64n(tai64nIncrement(a), a)).toBeGreaterThan(0);
    const ff = new Uint8Array(12).fill(0xff);
    ff[0] = 0x40;
    expect(compareTai64n(tai64nIncrement(ff), ff)).toBeGreaterThan(0);
  });

  it('refuses bad wall-clock values', () => {
    expect(() => tai64nFromUnixMs(NaN)).toThrow(TypeError);
    expect(() => tai64nFromUnixMs(-1)).toThrow(RangeError);
  });
});
