/**
 * The libFuzzer harnesses of fuzz/ (clang-14, ASan + UBSan), as a smoke run: each is
 * built from the addon's own C files and replays its seed corpus (fuzz/seeds.py) and
 * every saved regression input (fuzz/regress/NAME/) once, through `fuzz/run.sh 0`.
 * A crash, a sanitizer report or a failed invariant fails the test; a deliberately
 * broken harness (a corrupted TSO segment) must fail on the same seeds, so the
 * checks do run. The long runs are `npm run fuzz` (fuzz/run.sh [SECONDS]).
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const HARNESSES = ['replaywin', 'allowedips', 'offload', 'gro', 'nat', 'rx', 'dnsio'];
/* The harnesses carry their own sanitizers: the addon's sanitizer settings of
 * netns-scripts/sanitize.sh (log files that fail its run) are not theirs. */
const env = { ...process.env };
for (const k of ['ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LD_PRELOAD']) delete env[k];

describe('fuzz harnesses (smoke: seeds and regressions)', () => {
  it('every harness builds and replays its seeds and regression inputs without a finding', () => {
    const r = spawnSync('bash', [join(ROOT, 'fuzz/run.sh'), '0'], { cwd: ROOT, encoding: 'utf8', timeout: 240_000, env });
    const out = `${r.stdout}\n${r.stderr}`;
    expect(r.status, out).toBe(0);
    for (const name of HARNESSES) {
      const row = r.stdout.split('\n').find((l) => l.startsWith(`${name} `));
      expect(row, `no result row for ${name}:\n${out}`).toBeDefined();
      const cols = row!.trim().split(/\s+/);
      // harness secs execs exec/s edges features corpus result
      expect(cols[7], row).toBe('ok');
      expect(Number(cols[2]), `${name} ran no input`).toBeGreaterThan(0);
      expect(Number(cols[4]), `${name} covered no edge`).toBeGreaterThan(20);
    }
  }, 300_000);

  it('a harness with a corrupted segment fails on the seeds (the invariants are checked)', () => {
    const b = spawnSync('bash', [join(ROOT, 'fuzz/build.sh'), 'offload'], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...env, FZ_EXTRA: '-DFZ_SELFTEST_BREAK', FZ_SUFFIX: '-broken' },
    });
    expect(b.status, b.stderr).toBe(0);
    const seeds = mkdtempSync(join(tmpdir(), 'tenc-fuzz-seeds-'));
    try {
      const s = spawnSync('python3', [join(ROOT, 'fuzz/seeds.py'), seeds], { encoding: 'utf8' });
      expect(s.status, s.stderr).toBe(0);
      expect(readdirSync(join(seeds, 'offload')).length).toBeGreaterThan(3);
      const r = spawnSync(join(ROOT, 'fuzz/out/bin/offload-broken'), ['-runs=0', `-artifact_prefix=${seeds}/`, join(seeds, 'offload')], {
        encoding: 'utf8',
        env,
      });
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/invariant failed/);
    } finally {
      rmSync(seeds, { recursive: true, force: true });
    }
  }, 120_000);
});
