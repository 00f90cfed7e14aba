/**
 * The only importer of the native addon (build/Release/tenc.node, built by node-gyp
 * during `npm ci`). Other modules import the typed wrappers from here.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { endianness } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** Walk up from this file (src/ or dist/src/) to the package root holding build/.
 * TENC_ADDON=/path/tenc.node loads another build instead (the sanitizer build of
 * netns-scripts/sanitize.sh); a missing file is an error naming it. */
function findAddon(): string {
  const forced = process.env.TENC_ADDON;
  if (forced) {
    if (!existsSync(forced)) throw new Error(`TENC_ADDON=${forced}: no such file`);
    return forced;
  }
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, 'build', 'Release', 'tenc.node');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  throw new Error('tenc native addon not found (build/Release/tenc.node): run `npm ci` or `npx node-gyp rebuild`');
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const addon: any = require(findAddon());

// ---- AEAD: ChaCha20-Poly1305 (RFC 8439 §2.8) over node's OpenSSL (native/aead.c) ----

const EMPTY = new Uint8Array(0);

export const AEAD_KEY_LEN = 32;
export const AEAD_NONCE_LEN = 12;
export const AEAD_TAG_LEN = 16;

/** Per-packet result codes written by {@link aeadOpenBatch}. */
export const AEAD_STATUS = {
  ok: 0,
  /** Tag mismatch (forged, corrupted, wrong key or counter); the plaintext area is zeroed. */
  auth: 1,
  /** Shorter than the 16-byte tag. */
  badLength: 2,
} as const;
export type AeadStatus = (typeof AEAD_STATUS)[keyof typeof AEAD_STATUS];

/**
 * A batch of packets inside one slab, in WireGuard transport layout: packet i starts at
 * `offsets[i]`, its nonce is 4 zero bytes || `counters[i]` as u64 little-endian, no AAD.
 * Offsets need no alignment; packets must not overlap. Only the first `count` entries
 * are used (default: offsets.length).
 */
export interface AeadBatch {
  slab: Uint8Array;
  offsets: Uint32Array;
  lengths: Uint32Array;
  counters: BigUint64Array;
  count?: number;
}

/**
 * Seals every packet of the batch in place with one key, in one native call:
 * plaintext `slab[offsets[i], offsets[i] + lengths[i])` becomes the ciphertext and the
 * 16-byte tag is written right after it, so the slab must hold `lengths[i] + 16` bytes
 * from `offsets[i]`.
 * @throws TypeError (code ERR_INVALID_ARG_TYPE) for a wrong argument type; RangeError
 * (code ERR_OUT_OF_RANGE) for a key that is not 32 bytes, a count above an array's length,
 * or a packet that does not fit in the slab (the message names the packet index). All
 * packets are checked before any byte is written, and each again just before it is
 * sealed (offsets/lengths that alias the slab and change mid-batch throw, never write
 * outside it). The key is copied once per call.
 */
export function aeadSealBatch(batch: AeadBatch, key: Uint8Array): void {
  addon.aeadSealBatch(batch.slab, batch.offsets, batch.lengths, batch.counters, key, batchCount(batch));
}

/**
 * Opens every packet of the batch in place with one key, in one native call:
 * `slab[offsets[i], offsets[i] + lengths[i])` is ciphertext || tag (lengths include the
 * tag); on success the plaintext is `slab[offsets[i], offsets[i] + lengths[i] - 16)`.
 * Writes one {@link AEAD_STATUS} code per packet into `status` (allocated when omitted)
 * and returns it with the number of authentic packets. A failed packet's plaintext area
 * is zeroed. Argument errors throw as for {@link aeadSealBatch}.
 */
export function aeadOpenBatch(
  batch: AeadBatch,
  key: Uint8Array,
  status?: Uint8Array,
): { status: Uint8Array; ok: number } {
  const count = batchCount(batch);
  const out = status ?? new Uint8Array(count);
  const ok: number = addon.aeadOpenBatch(batch.slab, batch.offsets, batch.lengths, batch.counters, key, count, out);
  return { status: out, ok };
}

/**
 * A Uint32Array over the same memory as `counters`, for writing counters as u32 pairs
 * (`[2i]` low, `[2i + 1]` high) without creating a BigInt per packet. That word order
 * holds on little-endian hosts (x86-64, arm64); elsewhere this throws.
 */
export function counterWords(counters: BigUint64Array): Uint32Array {
  if (endianness() !== 'LE') throw new Error('counterWords: little-endian hosts only');
  return new Uint32Array(counters.buffer, counters.byteOffset, counters.length * 2);
}

/** Single-shot seal with an explicit 12-byte nonce and AAD; returns ciphertext || tag. */
export function aeadSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array = EMPTY): Uint8Array {
  return addon.aeadSeal(key, nonce, aad, plaintext);
}

/** Single-shot open of ciphertext || tag; returns the plaintext, or null if not authentic (or shorter than the tag). */
export function aeadOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array = EMPTY): Uint8Array | null {
  return addon.aeadOpen(key, nonce, aad, sealed);
}

/**
 * Which ChaCha20-Poly1305 code the native contexts of this process use: "evp"
 * (OpenSSL's EVP API; forced with TENC_AEAD=evp in the environment), "direct"
 * (OpenSSL's ChaCha20 and Poly1305 cores called straight, where node exports them
 * and they pass the start-up check), or "direct, lanes avx512|avx2|base" (also
 * runs of 16 records made ahead: Poly1305 keys and short keystream computed side
 * by side by tenc's lane code, checked against OpenSSL at start-up). Same bytes
 * either way.
 */
export function aeadBackend(): string {
  return addon.aeadBackend();
}

/** WireGuard transport nonce (whitepaper §5.4.6): 4 zero bytes, then the counter as u64 little-endian. */
export function wgNonce(counter: bigint): Uint8Array {
  const nonce = new Uint8Array(AEAD_NONCE_LEN);
  new DataView(nonce.buffer).setBigUint64(4, BigInt.asUintN(64, counter), true);
  return nonce;
}


function batchCount(batch: AeadBatch): number {
  if (batch.count === undefined) {
    if (!(batch.offsets instanceof Uint32Array)) throw typeError('offsets must be a Uint32Array');
    return batch.offsets.length;
  }
  return batch.count;
}

function typeError(message: string): TypeError {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG_TYPE' });
}

/**
 * Makes this process non-dumpable (prctl(PR_SET_DUMPABLE, 0)): no core file on a crash, and
 * no ptrace or /proc/PID/mem for other processes of the same user (root still can). Returns
 * the read-back value (0). `tenc pod` and `tenc agent` call it at start: they hold private
 * keys, psks and session keys.
 */
export function protectProcess(): { dumpable: number } {
  return addon.processProtect() as { dumpable: number };
}

/**
 * Moves the calling thread (node's main thread) into the network namespace at `path`
 * (setns(CLONE_NEWNET), native/netns.c), and makes runProcess's worker threads enter it
 * before each child. Once per process (EALREADY after); errors name the path (ENOENT,
 * EINVAL: not a network namespace, EPERM). A standby `tenc pod` calls it at its handoff
 * (cli/standby.ts).
 */
export function enterNetns(path: string): void {
  addon.enterNetns(path);
}

/**
 * After enterNetns: each of libuv's `n` worker threads enters the same namespace
 * (native/netns.c: n works that wait for each other, so each thread takes one).
 * `timedOut`: not all n met within 10 s (a pool smaller than n, or busy).
 */
export function enterNetnsWorkers(n: number): Promise<{ entered: number; timedOut: boolean }> {
  return addon.enterNetnsWorkers(n) as Promise<{ entered: number; timedOut: boolean }>;
}

/** The size of libuv's thread pool as libuv reads it: UV_THREADPOOL_SIZE (atoi; 0 -> 1; at most 1024), default 4. */
export function threadpoolSize(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.UV_THREADPOOL_SIZE;
  if (v === undefined) return 4;
  const n = parseInt(v, 10);
  return Math.min(1024, Math.max(1, Number.isNaN(n) || n <= 0 ? 1 : n));
}

/** fd 2 becomes `path` (opened O_APPEND|O_CREAT|O_NOFOLLOW, mode 0600): a handed-over standby's log. */
export function redirectStderr(path: string): void {
  addon.redirectStderr(path);
}
