/**
 * ChaCha20-Poly1305 throughput per core at 64 B, 1420 B (a full inner packet at
 * WireGuard's default MTU) and 64 KiB (a GSO-sized super-packet), sealing, for:
 *   - native batch: aeadSealBatch over a slab of BATCH packets (one N-API call per batch)
 *   - native batch open: aeadOpenBatch, each batch re-sealed untimed before opening
 *   - node:crypto: createCipheriv('chacha20-poly1305') + update + final + getAuthTag per packet
 *   - @noble/ciphers: chacha20poly1305(key, nonce).encrypt per packet (pure JS)
 *   - baseline run in this invocation: `openssl speed -evp chacha20-poly1305 -bytes N`
 *     (Debian's openssl binary). It streams EVP_EncryptUpdate calls through one context
 *     with no per-record nonce, poly key block, final or tag, so it is an upper bound
 *     that per-packet AEAD cannot reach (in OpenSSL 3.0 `-aead` does not change this
 *     for ChaCha20-Poly1305, so it is not run).
 * Figures are Gbit/s of payload per CPU second of one thread, then ratios against
 * openssl speed. Flags: --seconds=S per measurement (0.4), --rounds=N (2), --batch=N (64).
 */
import { spawnSync } from 'node:child_process';
import { createCipheriv, randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { aeadOpenBatch, aeadSealBatch, counterWords, AEAD_TAG_LEN, type AeadBatch } from '../src/native.js';
import { numberFlag, type BenchContext } from './lib/bench.js';
import { gbits, measure, measureWithSetup } from './lib/measure.js';
import { markdownTable } from './lib/table.js';

const SIZES = [64, 1420, 65536];
const sizeLabel = (n: number): string => (n % 1024 === 0 ? `${n / 1024} KiB` : `${n} B`);

interface Row {
  name: string;
  /** bytes per CPU second by size; undefined when not measured. */
  rates: (number | undefined)[];
}

export async function run(ctx: BenchContext): Promise<void> {
  const seconds = numberFlag(ctx, 'seconds', 0.4);
  const rounds = Math.floor(numberFlag(ctx, 'rounds', 2));
  const batchSize = Math.floor(numberFlag(ctx, 'batch', 64));
  const key = Uint8Array.from(randomBytes(32));

  // The headline pair (native seal, openssl speed) is measured in alternating rounds and
  // the best of each kept, so load from other processes on a shared machine skews the
  // ratio less than one back-to-back measurement would.
  const seal: Row = { name: `native batch seal (${batchSize}/call)`, rates: SIZES.map(() => undefined) };
  const speed: Row = { name: 'openssl speed -evp (stream)', rates: SIZES.map(() => undefined) };
  const best = (a: number | undefined, b: number | undefined): number | undefined =>
    a === undefined ? b : b === undefined ? a : Math.max(a, b);
  for (let r = 0; r < rounds; r++) {
    SIZES.forEach((n, i) => {
      seal.rates[i] = best(seal.rates[i], nativeSeal(key, n, batchSize, seconds));
      speed.rates[i] = best(speed.rates[i], opensslSpeed(n));
    });
  }
  const rows: Row[] = [
    seal,
    { name: `native batch open (${batchSize}/call)`, rates: SIZES.map((n) => nativeOpen(key, n, batchSize, seconds)) },
    { name: 'node:crypto per packet', rates: SIZES.map((n) => nodeCrypto(key, n, seconds)) },
    { name: '@noble/ciphers per packet', rates: SIZES.map((n) => noble(key, n, seconds)) },
  ];
  const all = [...rows, speed];

  const fmt = (r: number | undefined): string => (r === undefined ? 'n/a' : gbits(r).toFixed(2));
  ctx.log('Gbit/s of payload per CPU-second of one thread (seal unless noted):\n');
  ctx.log(markdownTable(['implementation', ...SIZES.map(sizeLabel)], all.map((r) => [r.name, ...r.rates.map(fmt)])));

  const ratio = (a: number | undefined, b: number | undefined): string =>
    a === undefined || b === undefined ? 'n/a' : (a / b).toFixed(2);
  ctx.log(`\nRatio to \`${speed.name}\` (same run):\n`);
  ctx.log(
    markdownTable(
      ['implementation', ...SIZES.map(sizeLabel)],
      rows.map((r) => [r.name, ...r.rates.map((x, i) => ratio(x, speed.rates[i]))]),
    ),
  );
  const i1420 = SIZES.indexOf(1420);
  ctx.log(`\nnative batch seal / openssl speed at 1420 B: ${ratio(seal.rates[i1420], speed.rates[i1420])} (issue 2 target: >= 0.70)`);
  ctx.log(`native batch seal / node:crypto at 1420 B: ${ratio(seal.rates[i1420], rows[2].rates[i1420])}`);
  if (speed.rates.every((r) => r === undefined)) ctx.log('(openssl not found or failed: no baseline)');
  ctx.log(`(best of ${rounds} rounds for native seal and openssl; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')})`);
}

/** A slab of `count` packets of `size` bytes, each followed by room for its tag. */
function makeBatch(size: number, count: number): AeadBatch & { count: number } {
  const stride = size + AEAD_TAG_LEN;
  const slab = new Uint8Array(stride * count);
  slab.set(randomBytes(Math.min(slab.length, 1 << 20)));
  const offsets = new Uint32Array(count);
  const lengths = new Uint32Array(count).fill(size);
  for (let i = 0; i < count; i++) offsets[i] = i * stride;
  return { slab, offsets, lengths, counters: new BigUint64Array(count), count };
}

/** Packets per batch: `batch`, but at most ~4 MiB of slab. */
function batchCount(size: number, batch: number): number {
  return Math.max(1, Math.min(batch, Math.floor((4 << 20) / (size + AEAD_TAG_LEN))));
}

function nativeSeal(key: Uint8Array, size: number, batch: number, seconds: number): number {
  const b = makeBatch(size, batchCount(size, batch));
  // Counters written as u32 pairs through a view (no BigInt per packet), as a data plane would.
  const words = counterWords(b.counters);
  let counter = 0;
  return measure(
    () => {
      for (let i = 0; i < b.count; i++, counter++) {
        words[2 * i] = counter >>> 0;
        words[2 * i + 1] = Math.floor(counter / 0x1_0000_0000);
      }
      aeadSealBatch(b, key);
    },
    size * b.count,
    seconds,
  ).bytesPerSec;
}

function nativeOpen(key: Uint8Array, size: number, batch: number, seconds: number): number {
  const b = makeBatch(size, batchCount(size, batch));
  for (let i = 0; i < b.count; i++) b.counters[i] = BigInt(i);
  const opened = { ...b, lengths: b.lengths.map((l) => l + AEAD_TAG_LEN) };
  const status = new Uint8Array(b.count);
  let bad = 0;
  const rate = measureWithSetup(
    () => aeadSealBatch(b, key), // untimed: the open below turns it back into plaintext
    () => {
      if (aeadOpenBatch(opened, key, status).ok !== b.count) bad++;
    },
    size * b.count,
    seconds,
  ).bytesPerSec;
  if (bad > 0) throw new Error(`native open: ${bad} batches failed to authenticate`);
  return rate;
}

function nodeCrypto(key: Uint8Array, size: number, seconds: number): number {
  const pt = randomBytes(size);
  const nonce = Buffer.alloc(12);
  let counter = 0n;
  return measure(
    () => {
      nonce.writeBigUInt64LE(counter++, 4);
      const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
      c.update(pt);
      c.final();
      c.getAuthTag();
    },
    size,
    seconds,
  ).bytesPerSec;
}

function noble(key: Uint8Array, size: number, seconds: number): number {
  const pt = Uint8Array.from(randomBytes(size));
  const nonce = new Uint8Array(12);
  const view = new DataView(nonce.buffer);
  let counter = 0n;
  // noble is ~100x slower than the others: a shorter run is plenty.
  return measure(
    () => {
      view.setBigUint64(4, counter++, true);
      chacha20poly1305(key, nonce).encrypt(pt);
    },
    size,
    Math.min(seconds, 0.3),
  ).bytesPerSec;
}

/** Bytes per second from `openssl speed -mr` (its `+F:` line), or undefined if openssl is missing or failed. */
function opensslSpeed(size: number): number | undefined {
  const args = ['speed', '-mr', '-seconds', '1', '-evp', 'chacha20-poly1305', '-bytes', String(size)];
  const res = spawnSync('openssl', args, { encoding: 'utf8', timeout: 20_000 });
  if (res.status !== 0) return undefined;
  for (const line of res.stdout.split('\n')) {
    const m = /^\+F:\d+:[^:]+:([0-9.]+)/.exec(line);
    if (m) return Number(m[1]);
  }
  return undefined;
}
