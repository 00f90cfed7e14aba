/**
 * X25519 as the handshake uses it (src/noise/kdf.ts dh/dhPublic over node:crypto): RFC 7748
 * §5.2 and §6.1 vectors, and refusal of every low-order point (all-zero shared secret).
 * The 1,000,000-iteration §5.2 check is left out (minutes of CPU); 1 and 1,000 run.
 */
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { dh, dhPublic } from '../../src/noise/kdf.js';
import { makeHandshakePeer, makeIdentity } from '../../src/noise/handshake.js';
import { generatePrivateKey } from '../../src/noise/keys.js';

const V = JSON.parse(readFileSync(new URL('../vectors/rfc7748-x25519.json', import.meta.url), 'utf8'));
const hex = (b: Uint8Array | null): string => (b === null ? 'null' : Buffer.from(b).toString('hex'));
const unhex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));

describe('RFC 7748 §5.2 scalar multiplication', () => {
  for (const v of V.scalarmult as { name: string; scalar: string; u: string; out: string }[]) {
    it(v.name, () => {
      expect(hex(dh(unhex(v.scalar), unhex(v.u)))).toBe(v.out);
    });
  }

  it('iterated 1 and 1,000 times', () => {
    let k = unhex(V.iterated.start);
    let u = unhex(V.iterated.start);
    for (let i = 1; i <= 1000; i++) {
      const r = dh(k, u)!;
      u = k;
      k = r;
      if (i === 1) expect(hex(k)).toBe(V.iterated.after1);
    }
    expect(hex(k)).toBe(V.iterated.after1000);
  });
});

describe('RFC 7748 §6.1 Diffie-Hellman', () => {
  it('public keys and the shared secret, both ways', () => {
    const d = V.dh;
    expect(hex(dhPublic(unhex(d.alicePrivate)))).toBe(d.alicePublic);
    expect(hex(dhPublic(unhex(d.bobPrivate)))).toBe(d.bobPublic);
    expect(hex(dh(unhex(d.alicePrivate), unhex(d.bobPublic)))).toBe(d.shared);
    expect(hex(dh(unhex(d.bobPrivate), unhex(d.alicePublic)))).toBe(d.shared);
  });
});

describe('low-order public keys', () => {
  const priv = generatePrivateKey();
  for (const u of V.lowOrder as string[]) {
    it(`refuses ${u.slice(0, 8)}…`, () => {
      expect(dh(priv, unhex(u))).toBeNull();
      expect(() => makeHandshakePeer(makeIdentity(priv), unhex(u))).toThrow(RangeError);
    });
  }

  it('a wrong-length peer value is refused, not thrown', () => {
    expect(dh(priv, new Uint8Array(31))).toBeNull();
  });
});
