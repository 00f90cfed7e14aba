/**
 * ChaCha20-Poly1305 (RFC 8439): the native addon (native/aead.c over node's OpenSSL)
 * against the RFC vectors and against @noble/ciphers, single-shot and batch, including
 * forged packets, odd offsets, in-place layout, the WireGuard nonce and argument errors.
 */
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { chacha20, chacha20poly1305 } from '@noble/ciphers/chacha.js';
import {
  aeadBackend,
  aeadSeal,
  aeadOpen,
  aeadSealBatch,
  aeadOpenBatch,
  wgNonce,
  counterWords,
  AEAD_STATUS,
  AEAD_TAG_LEN,
  type AeadBatch,
  addon,
} from '../../src/native.js';

interface Vector {
  name: string;
  key: string;
  nonce: string;
  aad: string;
  plaintext: string;
  ciphertext: string;
  tag: string;
}

const VECTORS: Vector[] = JSON.parse(
  readFileSync(new URL('../vectors/rfc8439-aead.json', import.meta.url), 'utf8'),
).vectors;

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const unhex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));
const rand = (n: number): Uint8Array => Uint8Array.from(randomBytes(n));

/** One implementation under the same interface: open returns null when not authentic. */
interface Impl {
  name: string;
  seal(key: Uint8Array, nonce: Uint8Array, pt: Uint8Array, aad: Uint8Array): Uint8Array;
  open(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null;
}

const native: Impl = {
  name: 'native',
  seal: (k, n, pt, aad) => aeadSeal(k, n, pt, aad),
  open: (k, n, sealed, aad) => aeadOpen(k, n, sealed, aad),
};

const noble: Impl = {
  name: 'noble',
  seal: (k, n, pt, aad) => chacha20poly1305(k, n, aad).encrypt(pt),
  open: (k, n, sealed, aad) => {
    try {
      return chacha20poly1305(k, n, aad).decrypt(sealed);
    } catch {
      return null;
    }
  },
};

const IMPLS = [native, noble];

/** Small deterministic PRNG (xorshift32) so failing sizes are reproducible. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** Packs plaintexts into one slab at the given gaps (odd on purpose), room for tags. */
function packSlab(
  plaintexts: Uint8Array[],
  gap: (i: number) => number,
  counters: bigint[],
  canary = 0xa5,
): AeadBatch & { count: number } {
  const offsets = new Uint32Array(plaintexts.length);
  const lengths = new Uint32Array(plaintexts.length);
  let pos = 0;
  plaintexts.forEach((pt, i) => {
    pos += gap(i);
    offsets[i] = pos;
    lengths[i] = pt.length;
    pos += pt.length + AEAD_TAG_LEN;
  });
  const slab = new Uint8Array(pos + gap(plaintexts.length)).fill(canary);
  plaintexts.forEach((pt, i) => slab.set(pt, offsets[i]));
  return { slab, offsets, lengths, counters: BigUint64Array.from(counters), count: plaintexts.length };
}

/** Bytes of the slab outside every packet's [offset, offset + len + 16). */
function outside(batch: AeadBatch): number[] {
  const inside = new Uint8Array(batch.slab.length);
  for (let i = 0; i < batch.offsets.length; i++) {
    inside.fill(1, batch.offsets[i], batch.offsets[i] + batch.lengths[i] + AEAD_TAG_LEN);
  }
  const out: number[] = [];
  batch.slab.forEach((b, i) => {
    if (!inside[i]) out.push(b);
  });
  return out;
}

function packet(batch: AeadBatch, i: number, extra = AEAD_TAG_LEN): Uint8Array {
  return batch.slab.subarray(batch.offsets[i], batch.offsets[i] + batch.lengths[i] + extra);
}

describe('RFC 8439 vectors (test/vectors/rfc8439-aead.json)', () => {
  for (const impl of IMPLS) {
    for (const v of VECTORS) {
      describe(`${impl.name}: ${v.name}`, () => {
        const key = unhex(v.key);
        const nonce = unhex(v.nonce);
        const aad = unhex(v.aad);
        const pt = unhex(v.plaintext);
        const sealed = unhex(v.ciphertext + v.tag);

        it('seals to the published ciphertext and tag', () => {
          expect(hex(impl.seal(key, nonce, pt, aad))).toBe(v.ciphertext + v.tag);
        });

        it('opens the published ciphertext', () => {
          const out = impl.open(key, nonce, sealed, aad);
          expect(out).not.toBeNull();
          expect(hex(out!)).toBe(v.plaintext);
        });

        it('rejects a flipped tag bit', () => {
          const bad = sealed.slice();
          bad[bad.length - 1] ^= 0x80;
          expect(impl.open(key, nonce, bad, aad)).toBeNull();
        });

        it('rejects a flipped ciphertext bit', () => {
          const bad = sealed.slice();
          bad[7] ^= 0x01;
          expect(impl.open(key, nonce, bad, aad)).toBeNull();
        });

        it('rejects a truncated ciphertext (one byte short, and shorter than a tag)', () => {
          expect(impl.open(key, nonce, sealed.subarray(0, sealed.length - 1), aad)).toBeNull();
          expect(impl.open(key, nonce, sealed.subarray(1), aad)).toBeNull();
          expect(impl.open(key, nonce, sealed.subarray(0, AEAD_TAG_LEN - 1), aad)).toBeNull();
        });

        it('rejects a wrong key, nonce or AAD', () => {
          const k2 = key.slice();
          k2[31] ^= 1;
          const n2 = nonce.slice();
          n2[0] ^= 1;
          const a2 = aad.slice();
          a2[0] ^= 1;
          expect(impl.open(k2, nonce, sealed, aad)).toBeNull();
          expect(impl.open(key, n2, sealed, aad)).toBeNull();
          expect(impl.open(key, nonce, sealed, a2)).toBeNull();
          expect(impl.open(key, nonce, sealed, new Uint8Array(0))).toBeNull();
        });
      });
    }
  }

  it('native single-shot accepts views at odd byte offsets', () => {
    const v = VECTORS[0];
    const backing = new Uint8Array(1 + v.plaintext.length / 2 + 3);
    const pt = backing.subarray(1, 1 + v.plaintext.length / 2);
    pt.set(unhex(v.plaintext));
    const keyBacking = new Uint8Array(35);
    const key = keyBacking.subarray(3, 35);
    key.set(unhex(v.key));
    const sealed = aeadSeal(key, unhex(v.nonce), pt, unhex(v.aad));
    expect(hex(sealed)).toBe(v.ciphertext + v.tag);
    const sealedBacking = new Uint8Array(sealed.length + 5);
    sealedBacking.set(sealed, 5);
    expect(hex(aeadOpen(key, unhex(v.nonce), sealedBacking.subarray(5), unhex(v.aad))!)).toBe(v.plaintext);
  });
});

describe(`backend (TENC_AEAD=${process.env.TENC_AEAD ?? ''})`, () => {
  // On this machine's node (OpenSSL linked in, its symbols exported) the direct
  // backend must be chosen and pass its start-up check; aead-evp.test.ts reruns
  // this file with TENC_AEAD=evp.
  it('is the one the environment asks for, with the widest lane code this CPU has', () => {
    const flags = readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1].split(/\s+/) ?? [];
    const lanes = flags.includes('avx512f') ? 'avx512' : flags.includes('avx2') ? 'avx2' : 'base';
    expect(aeadBackend()).toBe(process.env.TENC_AEAD === 'evp' ? 'evp' : `direct, lanes ${lanes}`);
  });

  it('matches noble on every length 0..320 and around a packet (block and padding edges), with AAD 0..40', () => {
    const key = rand(32);
    const lengths = [...Array(321).keys(), 1023, 1024, 1025, 1403, 1404, 1419, 1420, 1436, 1500, 9000, 65535];
    for (const n of lengths) {
      const nonce = rand(12);
      const pt = rand(n);
      const aad = rand(n % 41);
      const ours = aeadSeal(key, nonce, pt, aad);
      const ref = chacha20poly1305(key, nonce, aad).encrypt(pt);
      expect(hex(ours), `length ${n}`).toBe(hex(ref));
      expect(hex(aeadOpen(key, nonce, ref, aad)!), `length ${n}`).toBe(hex(pt));
      if (n > 0) {
        const bad = Uint8Array.from(ref);
        bad[n - 1] ^= 0x80;
        expect(aeadOpen(key, nonce, bad, aad), `length ${n}`).toBeNull();
      }
    }
  });
});

describe('Poly1305 keys of many records side by side (ChaCha20 block 0, RFC 8439 §2.6)', () => {
  const cpuFlags = readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1].split(/\s+/) ?? [];
  const impls: [number, string, string | null][] = [
    [0, 'auto', null],
    [1, 'baseline', null],
    [2, 'AVX2', 'avx2'],
    [3, 'AVX-512', 'avx512f'],
  ];
  for (const [which, name, flag] of impls) {
    it(`${name}: block 0 of 1..40 records equals noble's ChaCha20 keystream`, () => {
      if (flag !== null && !cpuFlags.includes(flag)) {
        expect(() => addon.aeadTestBlock0(which, rand(32), rand(12))).toThrow(/lacks/);
        return;
      }
      for (const n of [1, 2, 15, 16, 17, 31, 33, 40]) {
        const keys = rand(32 * n);
        const nonces = rand(12 * n);
        if (n === 40) keys.fill(0xff, 0, 64); // carries in the additions
        const got = addon.aeadTestBlock0(which, keys, nonces) as Uint8Array;
        expect(got.length).toBe(32 * n);
        for (let i = 0; i < n; i++) {
          const want = chacha20(keys.subarray(32 * i, 32 * i + 32), nonces.subarray(12 * i, 12 * i + 12), new Uint8Array(32));
          expect(hex(got.subarray(32 * i, 32 * i + 32)), `${name}, ${n} records, record ${i}`).toBe(hex(want));
        }
      }
    });
  }

  for (const [which, name, flag] of impls) {
    it(`${name}: keystream blocks of 1..40 records at any counter equal noble's`, () => {
      if (flag !== null && !cpuFlags.includes(flag)) {
        expect(() => addon.aeadTestBlock0(which, rand(32), rand(12), new Uint32Array(1))).toThrow(/lacks/);
        return;
      }
      for (const n of [1, 7, 16, 17, 40]) {
        const keys = rand(32 * n);
        const nonces = rand(12 * n);
        const ctrs = new Uint32Array(n).map((_, i) => (i === 0 ? 0xfffffff0 : (i * 977) % 70)); // noble refuses a block at 2^32-1
        const got = addon.aeadTestBlock0(which, keys, nonces, ctrs) as Uint8Array;
        expect(got.length).toBe(64 * n);
        for (let i = 0; i < n; i++) {
          const want = chacha20(keys.subarray(32 * i, 32 * i + 32), nonces.subarray(12 * i, 12 * i + 12), new Uint8Array(64), undefined, ctrs[i]);
          expect(hex(got.subarray(64 * i, 64 * i + 64)), `${name}, ${n} records, record ${i}, counter ${ctrs[i]}`).toBe(hex(want));
        }
      }
    });
  }

  it('RFC 8439 §2.6.2 Poly1305 key generation vector', () => {
    const key = unhex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f');
    const nonce = unhex('000000000001020304050607');
    const want = '8ad5a08b905f81cc815040274ab29471a833b637e3fd0da508dbb8e2fdd1a646';
    for (const which of [0, 1]) expect(hex(addon.aeadTestBlock0(which, key, nonce) as Uint8Array)).toBe(want);
  });

  it('rejects bad arguments with typed errors', () => {
    expect(() => addon.aeadTestBlock0(4, rand(32), rand(12))).toThrow(RangeError);
    expect(() => addon.aeadTestBlock0(0, rand(31), rand(12))).toThrow(RangeError);
    expect(() => addon.aeadTestBlock0(0, 'x', rand(12))).toThrow(TypeError);
  });
});

describe('batches of every length 0..2100 (records made ahead 16 at a time: lanes for block 0 and the part after the last whole KiB)', () => {
  it('seal matches noble and open restores, with one forged record per run of 16', () => {
    const key = rand(32);
    const lengths = [...Array(2101).keys()];
    const offsets = new Uint32Array(lengths.length);
    let off = 3; // odd offsets
    lengths.forEach((l, i) => {
      offsets[i] = off;
      off += l + AEAD_TAG_LEN + (i % 5);
    });
    const slab = rand(off);
    const plain = Uint8Array.from(slab);
    const counters = new BigUint64Array(lengths.length).map((_, i) => BigInt(i) * 0x1_0000_0001n);
    const batch: AeadBatch = { slab, offsets, lengths: Uint32Array.from(lengths), counters };
    aeadSealBatch(batch, key);
    for (let i = 0; i < lengths.length; i += 97) {
      const ref = chacha20poly1305(key, wgNonce(counters[i])).encrypt(plain.subarray(offsets[i], offsets[i] + lengths[i]));
      expect(hex(packet(batch, i)), `length ${lengths[i]}`).toBe(hex(ref));
    }
    for (const i of [1023, 1024, 1025, 1408, 1420, 2047, 2048, 2049, 2100]) {
      const ref = chacha20poly1305(key, wgNonce(counters[i])).encrypt(plain.subarray(offsets[i], offsets[i] + lengths[i]));
      expect(hex(packet(batch, i)), `length ${lengths[i]}`).toBe(hex(ref));
    }
    const forged = lengths.map((_, i) => i).filter((i) => i % 16 === 5 && lengths[i] > 0);
    for (const i of forged) slab[offsets[i] + lengths[i] - 1] ^= 1;
    const status = new Uint8Array(lengths.length);
    const opened = { ...batch, lengths: Uint32Array.from(lengths, (l) => l + AEAD_TAG_LEN) };
    expect(aeadOpenBatch(opened, key, status).ok).toBe(lengths.length - forged.length);
    for (let i = 0; i < lengths.length; i++) {
      if (forged.includes(i)) {
        expect(status[i], `record ${i}`).toBe(AEAD_STATUS.auth);
        continue;
      }
      expect(status[i], `record ${i}`).toBe(AEAD_STATUS.ok);
      if (i % 53 === 0 || (i >= 1020 && i <= 1030) || i >= 2040)
        expect(hex(slab.subarray(offsets[i], offsets[i] + lengths[i])), `record ${i}`).toBe(hex(plain.subarray(offsets[i], offsets[i] + lengths[i])));
    }
  });
});

describe('WireGuard nonce', () => {
  it('is 4 zero bytes then the counter little-endian', () => {
    expect(hex(wgNonce(0x0102030405060708n))).toBe('00000000' + '0807060504030201');
    expect(hex(wgNonce(0n))).toBe('000000000000000000000000');
    expect(hex(wgNonce(2n ** 64n - 1n))).toBe('00000000ffffffffffffffff');
  });

  it('the batch seals with that nonce, as noble does with the same nonce', () => {
    const key = rand(32);
    const counters = [0n, 1n, 0x0102030405060708n, 2n ** 32n, 2n ** 64n - 1n];
    const pts = counters.map(() => rand(37));
    const batch = packSlab(pts, () => 0, counters);
    aeadSealBatch(batch, key);
    counters.forEach((c, i) => {
      const nonce = new Uint8Array(12);
      for (let b = 0; b < 8; b++) nonce[4 + b] = Number((c >> BigInt(8 * b)) & 0xffn);
      expect(hex(packet(batch, i))).toBe(hex(chacha20poly1305(key, nonce).encrypt(pts[i])));
    });
  });
});

describe('counterWords', () => {
  it('writes u32 pairs (low, high) that the batch reads as u64 counters', () => {
    const counters = new BigUint64Array(3);
    const words = counterWords(counters);
    words[2] = 0x89abcdef;
    words[3] = 0x01234567;
    words[4] = 0xffffffff;
    words[5] = 0xffffffff;
    expect(Array.from(counters)).toEqual([0n, 0x0123456789abcdefn, 2n ** 64n - 1n]);
    const key = rand(32);
    const batch = packSlab([rand(30), rand(30), rand(30)], () => 1, [0n, 0n, 0n]);
    batch.counters = counters;
    const pts = [0, 1, 2].map((i) => packet(batch, i, 0).slice());
    aeadSealBatch(batch, key);
    pts.forEach((pt, i) => expect(hex(packet(batch, i))).toBe(hex(chacha20poly1305(key, wgNonce(counters[i])).encrypt(pt))));
  });

  it('follows a subarray of counters', () => {
    const all = new BigUint64Array(4);
    counterWords(all.subarray(2))[0] = 7;
    expect(all[2]).toBe(7n);
  });
});

describe('batch against noble', () => {
  const next = prng(0x7e4c);
  const sizes = [0, 1, 15, 16, 17, 63, 64, 65, 255, 1420, 2000, 65535];
  for (let i = 0; i < 40; i++) sizes.push(next() % 2001);

  it('native batch seal (odd offsets, in place) opens with noble', () => {
    const key = rand(32);
    const pts = sizes.map((n) => rand(n));
    const counters = sizes.map((_, i) => BigInt(i) * 0x1_0000_0001n + 7n);
    const batch = packSlab(pts, (i) => 1 + (i % 3) * 2, counters);
    aeadSealBatch(batch, key);
    pts.forEach((pt, i) => {
      const sealed = packet(batch, i);
      // a short record may encrypt to itself by chance (1 byte: 1 in 256): only from 8 bytes on
      if (pt.length >= 8) expect(hex(sealed.subarray(0, pt.length))).not.toBe(hex(pt));
      expect(hex(chacha20poly1305(key, wgNonce(counters[i])).decrypt(sealed))).toBe(hex(pt));
    });
    expect(outside(batch).every((b) => b === 0xa5)).toBe(true);
  });

  it('noble seals, native batch opens in place (odd offsets)', () => {
    const key = rand(32);
    const pts = sizes.map((n) => rand(n));
    const counters = sizes.map(() => BigInt('0x' + hex(rand(8))));
    const sealed = pts.map((pt, i) => chacha20poly1305(key, wgNonce(counters[i])).encrypt(pt));
    // Lay out the sealed messages; lengths include the tag for open.
    const batch = packSlab(sealed, (i) => 3 + (i % 2), counters);
    for (let i = 0; i < sealed.length; i++) batch.lengths[i] = sealed[i].length;
    const before = outside({ ...batch, lengths: batch.lengths.map((l) => l - AEAD_TAG_LEN) });
    const { status, ok } = aeadOpenBatch(batch, key);
    expect(ok).toBe(pts.length);
    expect(Array.from(status)).toEqual(pts.map(() => AEAD_STATUS.ok));
    pts.forEach((pt, i) => expect(hex(packet(batch, i, -AEAD_TAG_LEN))).toBe(hex(pt)));
    expect(outside({ ...batch, lengths: batch.lengths.map((l) => l - AEAD_TAG_LEN) })).toEqual(before);
  });

  it('a mixed batch with one forged packet and one runt reports only those', () => {
    const key = rand(32);
    const pts = [rand(1420), rand(64), rand(0), rand(777), rand(1)];
    const counters = pts.map((_, i) => BigInt(100 + i));
    const batch = packSlab(pts, () => 1, counters);
    aeadSealBatch(batch, key);
    for (let i = 0; i < pts.length; i++) batch.lengths[i] += AEAD_TAG_LEN;
    packet(batch, 3, 0)[500] ^= 0x04; // forge packet 3
    batch.lengths[4] = AEAD_TAG_LEN - 1; // packet 4 shorter than a tag
    const status = new Uint8Array(8).fill(0xff);
    const res = aeadOpenBatch(batch, key, status);
    expect(res.status).toBe(status);
    expect(res.ok).toBe(3);
    expect(Array.from(status)).toEqual([
      AEAD_STATUS.ok,
      AEAD_STATUS.ok,
      AEAD_STATUS.ok,
      AEAD_STATUS.auth,
      AEAD_STATUS.badLength,
      0xff,
      0xff,
      0xff,
    ]);
    for (const i of [0, 1, 2]) expect(hex(packet(batch, i, -AEAD_TAG_LEN))).toBe(hex(pts[i]));
    // The forged packet's plaintext area holds no unauthenticated plaintext.
    expect(packet(batch, 3, -AEAD_TAG_LEN).every((b) => b === 0)).toBe(true);
  });

  it('a wrong key or counter fails every packet', () => {
    const key = rand(32);
    const pts = [rand(10), rand(100)];
    const batch = packSlab(pts, () => 0, [5n, 6n]);
    aeadSealBatch(batch, key);
    for (let i = 0; i < pts.length; i++) batch.lengths[i] += AEAD_TAG_LEN;
    const copy = batch.slab.slice();
    const wrongKey = key.slice();
    wrongKey[0] ^= 1;
    expect(aeadOpenBatch(batch, wrongKey).ok).toBe(0);
    batch.slab.set(copy);
    const shifted = { ...batch, counters: BigUint64Array.from([6n, 5n]) };
    expect(Array.from(aeadOpenBatch(shifted, key).status)).toEqual([AEAD_STATUS.auth, AEAD_STATUS.auth]);
    batch.slab.set(copy);
    expect(aeadOpenBatch(batch, key).ok).toBe(2);
  });

  it('alternating keys between batches and directions give the right results', () => {
    const keys = [rand(32), rand(32), rand(32)];
    for (let round = 0; round < 6; round++) {
      const key = keys[round % 3];
      const pt = rand(50 + round);
      const batch = packSlab([pt], () => 2, [BigInt(round)]);
      aeadSealBatch(batch, key);
      expect(hex(packet(batch, 0))).toBe(hex(chacha20poly1305(key, wgNonce(BigInt(round))).encrypt(pt)));
      // Open with another key first (must fail), then with the right one.
      batch.lengths[0] += AEAD_TAG_LEN;
      const saved = batch.slab.slice();
      expect(aeadOpenBatch(batch, keys[(round + 1) % 3]).ok).toBe(0);
      batch.slab.set(saved);
      expect(aeadOpenBatch(batch, key).ok).toBe(1);
      expect(hex(packet(batch, 0, -AEAD_TAG_LEN))).toBe(hex(pt));
    }
  });

  it('uses only the first `count` entries', () => {
    const key = rand(32);
    const pts = [rand(20), rand(20)];
    const batch = packSlab(pts, () => 0, [1n, 2n]);
    aeadSealBatch({ ...batch, count: 1 }, key);
    expect(hex(packet(batch, 0))).toBe(hex(chacha20poly1305(key, wgNonce(1n)).encrypt(pts[0])));
    expect(hex(packet(batch, 1, 0))).toBe(hex(pts[1]));
  });
});

describe('argument errors are typed, coded and thrown before any byte is written', () => {
  const key = new Uint8Array(32);
  const good = (): AeadBatch & { count: number } => packSlab([new Uint8Array(10), new Uint8Array(20)], () => 1, [1n, 2n], 0x11);

  type Case = [string, (b: any) => void, typeof TypeError | typeof RangeError, string, RegExp];
  const cases: Case[] = [
    ['slab is an array', (b) => aeadSealBatch({ ...b, slab: [1, 2, 3] }, key), TypeError, 'ERR_INVALID_ARG_TYPE', /slab must be a Uint8Array/],
    ['slab is a DataView', (b) => aeadSealBatch({ ...b, slab: new DataView(b.slab.buffer) }, key), TypeError, 'ERR_INVALID_ARG_TYPE', /slab/],
    ['offsets is an Int32Array', (b) => aeadSealBatch({ ...b, offsets: new Int32Array(b.offsets) }, key), TypeError, 'ERR_INVALID_ARG_TYPE', /offsets must be a Uint32Array/],
    ['lengths is a plain array', (b) => aeadSealBatch({ ...b, lengths: [10, 20] }, key), TypeError, 'ERR_INVALID_ARG_TYPE', /lengths/],
    ['counters is a Uint32Array', (b) => aeadSealBatch({ ...b, counters: new Uint32Array(2) }, key), TypeError, 'ERR_INVALID_ARG_TYPE', /counters must be a BigUint64Array/],
    ['key is a string', (b) => aeadSealBatch(b, 'k'.repeat(32) as any), TypeError, 'ERR_INVALID_ARG_TYPE', /key/],
    ['key is 31 bytes', (b) => aeadSealBatch(b, new Uint8Array(31)), RangeError, 'ERR_OUT_OF_RANGE', /key must be 32 bytes/],
    ['count is not a number', (b) => aeadSealBatch({ ...b, count: '2' }, key), TypeError, 'ERR_INVALID_ARG_TYPE', /count/],
    ['count is negative', (b) => aeadSealBatch({ ...b, count: -1 }, key), RangeError, 'ERR_OUT_OF_RANGE', /count/],
    ['count is fractional', (b) => aeadSealBatch({ ...b, count: 1.5 }, key), RangeError, 'ERR_OUT_OF_RANGE', /count/],
    ['count exceeds counters', (b) => aeadSealBatch({ ...b, counters: new BigUint64Array(1) }, key), RangeError, 'ERR_OUT_OF_RANGE', /count 2 exceeds/],
    ['packet 1 has no room for its tag', (b) => aeadSealBatch({ ...b, lengths: Uint32Array.from([10, 22]) }, key), RangeError, 'ERR_OUT_OF_RANGE', /packet 1 does not fit/],
    ['packet 0 offset past the slab', (b) => aeadSealBatch({ ...b, offsets: Uint32Array.from([0xffffffff, 12]) }, key), RangeError, 'ERR_OUT_OF_RANGE', /packet 0 does not fit/],
    ['open: packet 1 past the slab', (b) => aeadOpenBatch({ ...b, lengths: Uint32Array.from([26, 38]) }, key), RangeError, 'ERR_OUT_OF_RANGE', /packet 1 does not fit/],
    ['open: packet 1 longer than the maximum', (b) => aeadOpenBatch({ ...b, lengths: Uint32Array.from([26, 0xfffffff0]) }, key), RangeError, 'ERR_OUT_OF_RANGE', /packet 1: length 4294967280 exceeds/],
    ['open: status too short', (b) => aeadOpenBatch(b, key, new Uint8Array(1)), RangeError, 'ERR_OUT_OF_RANGE', /status/],
    ['open: status is a Uint16Array', (b) => aeadOpenBatch(b, key, new Uint16Array(2) as any), TypeError, 'ERR_INVALID_ARG_TYPE', /status/],
    ['single seal: nonce 8 bytes', () => aeadSeal(key, new Uint8Array(8), new Uint8Array(1)), RangeError, 'ERR_OUT_OF_RANGE', /nonce must be 12 bytes/],
    ['single seal: plaintext is a string', () => aeadSeal(key, new Uint8Array(12), 'hi' as any), TypeError, 'ERR_INVALID_ARG_TYPE', /data/],
    ['single open: aad is null', () => aeadOpen(key, new Uint8Array(12), new Uint8Array(16), null as any), TypeError, 'ERR_INVALID_ARG_TYPE', /aad/],
    ['single open: key 33 bytes', () => aeadOpen(new Uint8Array(33), new Uint8Array(12), new Uint8Array(16)), RangeError, 'ERR_OUT_OF_RANGE', /key/],
  ];

  it.each(cases)('%s', (_name, call, type, code, message) => {
    const b = good();
    const before = b.slab.slice();
    let caught: unknown;
    try {
      call(b);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(type);
    expect((caught as { code?: string }).code).toBe(code);
    expect((caught as Error).message).toMatch(message);
    expect(hex(b.slab)).toBe(hex(before));
  });

  it('a slab exactly large enough is accepted (boundary)', () => {
    const slab = new Uint8Array(5 + 10 + AEAD_TAG_LEN);
    const batch = { slab, offsets: Uint32Array.of(5), lengths: Uint32Array.of(10), counters: BigUint64Array.of(0n) };
    expect(() => aeadSealBatch(batch, key)).not.toThrow();
    expect(() => aeadSealBatch({ ...batch, offsets: Uint32Array.of(6) }, key)).toThrow(RangeError);
  });
});

describe('offsets, lengths or key aliasing the slab cannot make the batch write outside it', () => {
  it('an offset overwritten by an earlier packet is re-checked: RangeError naming that packet', () => {
    const key = new Uint8Array(32);
    const slab = new Uint8Array(256);
    // offsets live in the slab's first 8 bytes, which packet 0 (offset 0, 8 bytes) encrypts.
    const offsets = new Uint32Array(slab.buffer, 0, 2);
    offsets[0] = 0;
    offsets[1] = 100;
    const before = slab.slice(0, 8);
    const overwritten = new DataView(chacha20poly1305(key, wgNonce(0n)).encrypt(before).buffer).getUint32(4, true);
    expect(overwritten + 8 + AEAD_TAG_LEN).toBeGreaterThan(slab.length); // precondition of this test
    const batch = { slab, offsets, lengths: Uint32Array.of(8, 8), counters: BigUint64Array.of(0n, 1n) };
    expect(() => aeadSealBatch(batch, key)).toThrow(/packet 1 does not fit/);
    expect(slab.subarray(0, 8).every((b, i) => b === before[i])).toBe(false); // packet 0 was sealed
  });

  it('a key that is part of the slab is read once per batch', () => {
    const slab = Uint8Array.from(randomBytes(200));
    const key = slab.slice(0, 32);
    const pts = [slab.slice(0, 40), slab.slice(80, 120)];
    const batch = { slab, offsets: Uint32Array.of(0, 80), lengths: Uint32Array.of(40, 40), counters: BigUint64Array.of(3n, 4n) };
    aeadSealBatch(batch, slab.subarray(0, 32)); // packet 0 overwrites the key bytes
    expect(hex(slab.subarray(80, 136))).toBe(hex(chacha20poly1305(key, wgNonce(4n)).encrypt(pts[1])));
  });
});
