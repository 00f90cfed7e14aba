/**
 * The cryptographic primitives of WireGuard's Noise instance (whitepaper §5.4, "Cryptographic
 * primitives"), on @noble/hashes, @noble/ciphers and node:crypto (X25519, which node runs
 * in its OpenSSL: no module to load and compile at start, and about 10x faster per DH than
 * a TypeScript curve):
 *   HASH(x)        BLAKE2s-256 (RFC 7693)
 *   MAC(key, x)    keyed BLAKE2s with a 16-byte output
 *   HMAC(key, x)   HMAC-BLAKE2s-256 (RFC 2104)
 *   KDFn(key, x)   HKDF (RFC 5869) with HMAC-BLAKE2s, n = 1..3 outputs of 32 bytes
 *   AEAD(k, n, p, a)   ChaCha20-Poly1305 (RFC 8439), nonce = 4 zero bytes || n as u64 LE
 *   XAEAD(k, n, p, a)  XChaCha20-Poly1305, 24-byte random nonce (cookie replies)
 *   DH(priv, pub)  X25519 (RFC 7748); all-zero / low-order results are refused (null).
 */

import { blake2s } from '@noble/hashes/blake2.js';
import { hmac as nobleHmac } from '@noble/hashes/hmac.js';
import { chacha20poly1305, xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { createPrivateKey, createPublicKey, diffieHellman, type KeyObject } from 'node:crypto';
import { AEAD_TAG_SIZE, HASH_SIZE, KEY_SIZE, MAC_SIZE } from '../wire/constants.js';

const EMPTY = new Uint8Array(0);
const ONE = Uint8Array.of(1);

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** BLAKE2s-256 of the concatenation of the parts. */
export function hash(...parts: Uint8Array[]): Uint8Array {
  const h = blake2s.create({ dkLen: HASH_SIZE });
  for (const p of parts) h.update(p);
  return h.digest();
}

/** Keyed BLAKE2s with a 16-byte output (mac1, mac2, cookies). */
export function mac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return blake2s(data, { key, dkLen: MAC_SIZE });
}

/** HMAC-BLAKE2s. */
export function hmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return nobleHmac(blake2s, key, data);
}

/** HKDF-BLAKE2s with `n` 32-byte outputs (whitepaper: KDF1, KDF2, KDF3). */
export function kdf(n: 1 | 2 | 3, key: Uint8Array, input: Uint8Array): Uint8Array[] {
  const prk = hmac(key, input);
  const out: Uint8Array[] = [];
  let prev = hmac(prk, ONE);
  out.push(prev);
  for (let i = 2; i <= n; i++) {
    prev = hmac(prk, concatBytes(prev, Uint8Array.of(i)));
    out.push(prev);
  }
  prk.fill(0);
  return out;
}

export function kdf1(key: Uint8Array, input: Uint8Array): Uint8Array {
  return kdf(1, key, input)[0];
}

export function kdf2(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
  const [a, b] = kdf(2, key, input);
  return [a, b];
}

export function kdf3(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] {
  const [a, b, c] = kdf(3, key, input);
  return [a, b, c];
}

/** The 12-byte ChaCha20-Poly1305 nonce of WireGuard: 4 zero bytes then the counter u64 LE. */
export function counterNonce(counter: bigint): Uint8Array {
  const n = new Uint8Array(12);
  const lo = Number(counter & 0xffffffffn);
  const hi = Number((counter >> 32n) & 0xffffffffn);
  const dv = new DataView(n.buffer);
  dv.setUint32(4, lo, true);
  dv.setUint32(8, hi, true);
  return n;
}

const NONCE_ZERO = new Uint8Array(12);

/** AEAD(key, counter, plaintext, aad): ciphertext || 16-byte tag. */
export function aeadSeal(key: Uint8Array, counter: bigint, plaintext: Uint8Array, aad: Uint8Array = EMPTY): Uint8Array {
  const nonce = counter === 0n ? NONCE_ZERO : counterNonce(counter);
  return chacha20poly1305(key, nonce, aad).encrypt(plaintext);
}

/** Inverse of aeadSeal; null when the tag does not verify. Never throws on content. */
export function aeadOpen(
  key: Uint8Array,
  counter: bigint,
  ciphertext: Uint8Array,
  aad: Uint8Array = EMPTY,
): Uint8Array | null {
  if (ciphertext.length < AEAD_TAG_SIZE) return null;
  const nonce = counter === 0n ? NONCE_ZERO : counterNonce(counter);
  try {
    return chacha20poly1305(key, nonce, aad).decrypt(ciphertext);
  } catch {
    return null;
  }
}

/** XAEAD with a 24-byte nonce: ciphertext || 16-byte tag. */
export function xaeadSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  return xchacha20poly1305(key, nonce, aad).encrypt(plaintext);
}

/** Inverse of xaeadSeal; null when the tag does not verify. */
export function xaeadOpen(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, aad: Uint8Array): Uint8Array | null {
  if (ciphertext.length < AEAD_TAG_SIZE) return null;
  try {
    return xchacha20poly1305(key, nonce, aad).decrypt(ciphertext);
  } catch {
    return null;
  }
}

// RFC 8410 key encodings around a raw 32-byte X25519 key (OID 1.3.101.110)
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');

function privateKeyObject(privateKey: Uint8Array): KeyObject {
  if (privateKey.length !== KEY_SIZE) throw new RangeError(`X25519 private key must be ${KEY_SIZE} bytes, got ${privateKey.length}`);
  const der = Buffer.concat([PKCS8_X25519, privateKey]);
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
}

/** X25519 public key of a private key (the private key is clamped as RFC 7748 §5 says). */
export function dhPublic(privateKey: Uint8Array): Uint8Array {
  const spki = createPublicKey(privateKeyObject(privateKey)).export({ format: 'der', type: 'spki' });
  return new Uint8Array(spki.subarray(SPKI_X25519.length));
}

/**
 * X25519(priv, pub), or null when the result would be all zeros (pub is a low-order point,
 * RFC 7748 §6.1; OpenSSL refuses to derive it). Never throws on a 32-byte peer value.
 */
export function dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array | null {
  if (publicKey.length !== KEY_SIZE) return null;
  let out: Uint8Array;
  try {
    const pub = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(publicKey).toString('base64url') }, format: 'jwk' });
    out = new Uint8Array(diffieHellman({ privateKey: privateKeyObject(privateKey), publicKey: pub }));
  } catch {
    return null;
  }
  let acc = 0;
  for (let i = 0; i < out.length; i++) acc |= out[i];
  return acc === 0 ? null : out;
}

/** Constant-time equality of two byte strings of the same length. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc |= a[i] ^ b[i];
  return acc === 0;
}

export { EMPTY };
