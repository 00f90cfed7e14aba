/**
 * The Internet checksum of native/csum.c (RFC 1071) in every variant: the C harness
 * test/unit/csum-harness.c, compiled here with the system's `cc`, forces each variant
 * in turn (scalar, and on x86-64 avx2 and avx512 when this CPU has them) and the
 * inline tenc_csum_add, and compares them with a naive RFC 1071 sum (§1, §4.1) over
 * random lengths 0..9000 at every alignment 0..63, every length 0..1100, random and
 * all-0xff data, and buffers that end at an unmapped page. Also built as on a
 * non-x86 target (no SIMD), and under ASan/UBSan;
 * a deliberately wrong sum must be caught. The segmentation path that uses these
 * sums is covered by engine-seal.test.ts.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const SOURCES = [join(ROOT, 'test/unit/csum-harness.c'), join(ROOT, 'native/csum.c')];
/* binding.gyp's flags, warnings as errors. */
const CFLAGS = ['-O2', '-std=gnu11', '-Wall', '-Wextra', '-Werror', `-I${join(ROOT, 'native')}`];

interface Count {
  cases: number;
  failures: number;
}
interface Report {
  impl: string;
  variants: (Count & { name: string; usable: boolean })[];
  inline: Count;
}

let dir = '';
const built = new Map<string, string>();

function build(name: string, flags: string[]): string {
  const done = built.get(name);
  if (done) return done;
  const out = join(dir, name);
  const r = spawnSync('cc', [...CFLAGS, ...flags, ...SOURCES, '-o', out], { encoding: 'utf8' });
  if (r.error) throw new Error(`cannot run cc (a C compiler is needed for this test): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`cc ${name} failed:\n${r.stderr}`);
  built.set(name, out);
  return out;
}

function run(bin: string, args: string[] = [], env: Record<string, string> = {}): { json: unknown; status: number | null; stderr: string } {
  const r = spawnSync(bin, args, { encoding: 'utf8', env: { ...process.env, TENC_CSUM: '', ...env }, timeout: 60_000 });
  if (r.error) throw r.error;
  const line = r.stdout.trim();
  return { json: line ? JSON.parse(line) : null, status: r.status, stderr: r.stderr };
}

function pass(bin: string, env: Record<string, string> = {}): Report {
  const r = run(bin, [], env);
  expect(r.stderr, 'mismatches reported by the harness').toBe('');
  expect(r.status).toBe(0);
  return r.json as Report;
}

/** The variants this CPU must run, from the kernel's view of its flags. */
function expectedVariants(): string[] {
  if (process.arch !== 'x64') return ['scalar'];
  const flags = new Set(
    (/^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').trim().split(/\s+/),
  );
  const v = ['scalar'];
  if (flags.has('avx2')) v.push('avx2');
  if (flags.has('avx512f') && flags.has('avx512bw')) v.push('avx512');
  return v;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-csum-'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('Internet checksum variants (native/csum.c)', () => {
  it('every variant this CPU runs matches RFC 1071, and the dispatcher picks the fastest', () => {
    const r = pass(build('native', []));
    const want = expectedVariants();
    expect(r.variants.filter((v) => v.usable).map((v) => v.name)).toEqual(want);
    for (const v of r.variants.filter((x) => x.usable)) {
      expect(v.cases, v.name).toBeGreaterThan(20_000);
      expect(v.failures, v.name).toBe(0);
    }
    expect(r.inline.cases).toBeGreaterThan(20_000);
    expect(r.inline.failures).toBe(0);
    expect(r.impl).toBe(want[want.length - 1]);
  });

  it('TENC_CSUM forces a variant; an unknown or unusable name falls back to the best', () => {
    const bin = build('native', []);
    const want = expectedVariants();
    for (const name of want) expect(pass(bin, { TENC_CSUM: name }).impl).toBe(name);
    expect(pass(bin, { TENC_CSUM: 'sse9' }).impl).toBe(want[want.length - 1]);
  });

  it('a build without SIMD (as on other architectures) is correct and uses scalar', () => {
    const r = pass(build('portable', ['-DTENC_CSUM_PORTABLE']));
    expect(r.variants.map((v) => v.name)).toEqual(['scalar']);
    expect(r.variants[0]!.failures).toBe(0);
    expect(r.variants[0]!.cases).toBeGreaterThan(20_000);
    expect(r.inline.failures).toBe(0);
    expect(r.impl).toBe('scalar');
  });

  it('no out-of-bounds read or undefined behaviour under ASan and UBSan', () => {
    const r = pass(build('asan', ['-O1', '-g', '-fsanitize=address,undefined', '-fno-sanitize-recover=all']));
    expect(r.variants.filter((v) => v.usable).map((v) => v.name)).toEqual(expectedVariants());
    expect(r.variants.every((v) => v.failures === 0)).toBe(true);
  });

  it('the harness catches a wrong sum (an odd last byte dropped)', () => {
    const r = run(build('native', []), ['broken']);
    const b = (r.json as { broken: Count }).broken;
    expect(b.cases).toBeGreaterThan(20_000);
    expect(b.failures).toBeGreaterThan(1000);
    expect(r.stderr).toMatch(/^broken: len \d+/m);
  });
});
