/**
 * Keys as wg handles them (src/noise/keys.ts): clamped generation, public keys (RFC 7748 §6.1
 * vector and the wg binary itself), strict base64 parsing with typed errors naming the key,
 * and fingerprints that never reveal the key.
 */
import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import {
  KeyFormatError,
  formatKey,
  generatePrivateKey,
  generatePsk,
  keyFingerprint,
  parseKey,
  publicKeyFromPrivate,
  type KeyErrorCode,
} from '../../src/noise/keys.js';

// RFC 7748 §6.1 Alice, in wg's base64.
const ALICE_PRIVATE = 'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=';
const ALICE_PUBLIC = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';

describe('generation', () => {
  it('private keys are clamped and differ', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 64; i++) {
      const k = generatePrivateKey();
      expect(k.length).toBe(32);
      expect(k[0] & 7).toBe(0);
      expect(k[31] & 0x80).toBe(0);
      expect(k[31] & 0x40).toBe(0x40);
      seen.add(formatKey(k));
    }
    expect(seen.size).toBe(64);
  });

  it('clamping uses the injected random source', () => {
    const k = generatePrivateKey((n) => new Uint8Array(n).fill(0xff));
    expect(k[0]).toBe(0xf8);
    expect(k[31]).toBe(0x7f);
    expect(k.subarray(1, 31).every((b) => b === 0xff)).toBe(true);
  });

  it('psks are 32 random bytes, unclamped', () => {
    const p = generatePsk((n) => new Uint8Array(n).fill(0xff));
    expect(p.every((b) => b === 0xff)).toBe(true);
    expect(generatePsk().length).toBe(32);
  });

  it('public key of the RFC 7748 §6.1 private key', () => {
    expect(formatKey(publicKeyFromPrivate(parseKey(ALICE_PRIVATE)))).toBe(ALICE_PUBLIC);
  });

  it('agrees with `wg pubkey` on fresh keys', () => {
    for (let i = 0; i < 3; i++) {
      const priv = formatKey(generatePrivateKey());
      const theirs = execFileSync('wg', ['pubkey'], { input: priv + '\n' }).toString().trim();
      expect(formatKey(publicKeyFromPrivate(parseKey(priv)))).toBe(theirs);
    }
  });
});

describe('parse and format', () => {
  it('round-trips 44 characters and 32 bytes', () => {
    const k = generatePsk();
    const s = formatKey(k);
    expect(s).toHaveLength(44);
    expect(s.endsWith('=')).toBe(true);
    expect(Buffer.from(parseKey(s)).equals(Buffer.from(k))).toBe(true);
    expect(formatKey(parseKey(ALICE_PRIVATE))).toBe(ALICE_PRIVATE);
  });

  it('ignores surrounding whitespace (a key file with a newline)', () => {
    expect(formatKey(parseKey(`  ${ALICE_PUBLIC}\n`))).toBe(ALICE_PUBLIC);
  });

  const BAD: [n: number, what: string, text: string, code: KeyErrorCode][] = [
    [1, 'empty', '', 'bad_length'],
    [2, '43 characters', ALICE_PUBLIC.slice(0, 43), 'bad_length'],
    [3, '45 characters', ALICE_PUBLIC + 'A', 'bad_length'],
    [4, 'hex instead of base64', '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a', 'bad_length'],
    [5, 'no padding', ALICE_PUBLIC.slice(0, 43) + 'A', 'bad_padding'],
    [6, 'url-safe alphabet', ALICE_PUBLIC.replace('/', '_'), 'bad_character'],
    [7, 'padding inside', 'A=' + ALICE_PUBLIC.slice(2), 'bad_character'],
    [8, 'non-ASCII', 'é' + ALICE_PUBLIC.slice(1), 'bad_character'],
    [9, 'non-canonical last character', ALICE_PRIVATE.slice(0, 42) + 'p=', 'non_canonical'],
  ];
  for (const [n, what, text, code] of BAD) {
    it(`${n}. refuses ${what} (${code})`, () => {
      let err: unknown;
      try {
        parseKey(text, 'peer public key');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KeyFormatError);
      expect((err as KeyFormatError).code).toBe(code);
      expect((err as KeyFormatError).what).toBe('peer public key');
      expect((err as Error).message).toMatch(/^peer public key: /);
    });
  }

  it('wg refuses the same non-canonical key', () => {
    let status = 0;
    try {
      execFileSync('wg', ['pubkey'], { input: ALICE_PRIVATE.slice(0, 42) + 'p=\n', stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (e) {
      status = (e as { status: number }).status;
    }
    expect(status).not.toBe(0);
  });

  it('argument errors are typed', () => {
    expect(() => parseKey(42 as unknown as string)).toThrow(TypeError);
    expect(() => formatKey(new Uint8Array(31))).toThrow(RangeError);
    expect(() => formatKey('x' as unknown as Uint8Array)).toThrow(TypeError);
    expect(() => publicKeyFromPrivate(new Uint8Array(33))).toThrow(RangeError);
  });
});

describe('fingerprint', () => {
  it('is short, stable, distinct per key, and contains no part of the key', () => {
    const k = parseKey(ALICE_PRIVATE);
    const f = keyFingerprint(k);
    expect(f).toMatch(/^[A-Za-z0-9_-]{8}$/);
    expect(keyFingerprint(parseKey(ALICE_PRIVATE))).toBe(f);
    expect(keyFingerprint(parseKey(ALICE_PUBLIC))).not.toBe(f);
    expect(ALICE_PRIVATE.includes(f.slice(0, 6))).toBe(false);
    expect(f).not.toBe(Buffer.from(k.subarray(0, 6)).toString('base64url'));
  });
});
