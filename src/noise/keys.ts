/**
 * Keys as `wg genkey | wg pubkey | wg genpsk` handle them: 32 bytes, written as 44 characters
 * of standard base64 ending in one '='. Private keys are generated clamped (RFC 7748 §5).
 * Parsing is as strict as wg's: exact length, standard alphabet, canonical final character.
 *
 * For logs use keyFingerprint: a short hash that names a key without revealing it.
 */

import { randomBytes } from '@noble/hashes/utils.js';
import { KEY_SIZE } from '../wire/constants.js';
import { dhPublic, hash } from './kdf.js';

/** Length of a key in wg's base64 form. */
export const KEY_BASE64_LENGTH = 44;

export type KeyErrorCode = 'bad_length' | 'bad_character' | 'bad_padding' | 'non_canonical';

/** A key string that wg would refuse. `what` names the key ("private key", "peer public key"...). */
export class KeyFormatError extends Error {
  override readonly name = 'KeyFormatError';
  constructor(
    readonly code: KeyErrorCode,
    readonly what: string,
    detail: string,
  ) {
    super(`${what}: ${detail}`);
  }
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const DECODE = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

function assertKeyBytes(key: unknown, what: string): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
  if (key.length !== KEY_SIZE) throw new RangeError(`${what} must be ${KEY_SIZE} bytes, got ${key.length}`);
}

/** Clamps a 32-byte X25519 private key in place (RFC 7748 §5) and returns it. */
export function clampPrivateKey(key: Uint8Array): Uint8Array {
  assertKeyBytes(key, 'private key');
  key[0] &= 248;
  key[31] = (key[31] & 127) | 64;
  return key;
}

/** A fresh random private key, clamped (as `wg genkey`). */
export function generatePrivateKey(random: (n: number) => Uint8Array = randomBytes): Uint8Array {
  return clampPrivateKey(Uint8Array.from(random(KEY_SIZE)));
}

/** The X25519 public key of a private key (as `wg pubkey`). */
export function publicKeyFromPrivate(privateKey: Uint8Array): Uint8Array {
  assertKeyBytes(privateKey, 'private key');
  return dhPublic(privateKey);
}

/** A fresh random pre-shared key (as `wg genpsk`). */
export function generatePsk(random: (n: number) => Uint8Array = randomBytes): Uint8Array {
  return Uint8Array.from(random(KEY_SIZE));
}

/** 32 bytes as wg writes them: 44 characters of base64. */
export function formatKey(key: Uint8Array): string {
  assertKeyBytes(key, 'key');
  return Buffer.from(key.buffer, key.byteOffset, key.length).toString('base64');
}

/**
 * Parses a key written by wg (surrounding whitespace, e.g. a trailing newline from a file, is
 * ignored). Throws TypeError for a non-string, KeyFormatError naming `what` otherwise.
 */
export function parseKey(text: string, what = 'key'): Uint8Array {
  if (typeof text !== 'string') throw new TypeError(`${what} must be a string`);
  const s = text.trim();
  if (s.length !== KEY_BASE64_LENGTH) {
    throw new KeyFormatError('bad_length', what, `must be ${KEY_BASE64_LENGTH} base64 characters, got ${s.length}`);
  }
  if (s.charCodeAt(43) !== 0x3d /* '=' */) {
    throw new KeyFormatError('bad_padding', what, "must end with exactly one '='");
  }
  const out = new Uint8Array(KEY_SIZE);
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < 43; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? DECODE[c] : -1;
    if (v < 0) {
      throw new KeyFormatError('bad_character', what, `invalid base64 character at position ${i + 1}`);
    }
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
      acc &= (1 << bits) - 1;
    }
  }
  // 43 characters carry 258 bits: the last 2 must be zero for the canonical encoding.
  if (acc !== 0) {
    out.fill(0);
    throw new KeyFormatError('non_canonical', what, 'last character is not the canonical base64 encoding');
  }
  return out;
}

/** A short name for a key in logs: 8 base64url characters of a hash, never the key itself. */
export function keyFingerprint(key: Uint8Array): string {
  assertKeyBytes(key, 'key');
  const h = hash(new TextEncoder().encode('tenc key fingerprint'), key);
  return Buffer.from(h.subarray(0, 6)).toString('base64url');
}
