/**
 * The pod bundle's stale guard (src/cli/pod-bundle.ts) over a fake checkout: a manifest
 * whose files all match is fresh; a changed size or mtime, a missing file, a missing or
 * malformed manifest each name the reason. The real bundle that `npm run build` makes
 * must be fresh, and a `tenc pod --help` through main.ts runs it; TENC_POD_BUNDLE=0 and
 * a stale file run dist/src (the latter with one warning record). Which code a real pod
 * ran is test/netns/pod-lean.test.ts.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleProblem, loadPodMain, podBundleEnabled } from '../../src/cli/pod-bundle.js';
import { ensureBuilt, root } from '../build.js';

let dir: string;

function fakeCheckout(): void {
  mkdirSync(join(dir, 'dist', 'bundle'), { recursive: true });
  mkdirSync(join(dir, 'dist', 'src'), { recursive: true });
  writeFileSync(join(dir, 'dist', 'bundle', 'pod.cjs'), 'exports.x = 1;\n');
  writeFileSync(join(dir, 'dist', 'src', 'a.js'), 'export const a = 1;\n');
  const files: Record<string, [number, number]> = {};
  for (const rel of ['dist/bundle/pod.cjs', 'dist/src/a.js']) {
    const s = statSync(join(dir, rel));
    files[rel] = [s.size, s.mtimeMs];
  }
  writeFileSync(join(dir, 'dist', 'bundle', 'pod.json'), JSON.stringify({ bundle: 'dist/bundle/pod.cjs', files }));
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tenc-bundle-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('pod bundle stale guard', () => {
  it('fresh, then each kind of staleness named', () => {
    fakeCheckout();
    expect(bundleProblem(dir)).toBeNull();
    // same size, newer mtime (a tsc-only rebuild rewrites every file)
    const later = new Date(Date.now() + 5000);
    utimesSync(join(dir, 'dist', 'src', 'a.js'), later, later);
    expect(bundleProblem(dir)).toMatch(/dist\/src\/a\.js changed since the bundle was built/);
    fakeCheckout();
    writeFileSync(join(dir, 'dist', 'bundle', 'pod.cjs'), 'exports.x = 22;\n'); // size differs
    expect(bundleProblem(dir)).toMatch(/dist\/bundle\/pod\.cjs changed/);
    fakeCheckout();
    rmSync(join(dir, 'dist', 'src', 'a.js'));
    expect(bundleProblem(dir)).toMatch(/dist\/src\/a\.js is gone/);
    fakeCheckout();
    writeFileSync(join(dir, 'dist', 'bundle', 'pod.json'), '{"bundle": 3}');
    expect(bundleProblem(dir)).toMatch(/not a pod bundle manifest/);
    rmSync(join(dir, 'dist', 'bundle', 'pod.json'));
    expect(bundleProblem(dir)).toMatch(/no pod bundle manifest .*ENOENT.*npm run build/);
  });

  it('TENC_POD_BUNDLE=0 turns it off; off loads dist/src without a word', async () => {
    expect(podBundleEnabled({})).toBe(true);
    expect(podBundleEnabled({ TENC_POD_BUNDLE: '1' })).toBe(true);
    expect(podBundleEnabled({ TENC_POD_BUNDLE: '0' })).toBe(false);
    const { podMain, entry } = await loadPodMain({ TENC_POD_BUNDLE: '0' }, dir);
    expect(entry).toBe('dist');
    expect(typeof podMain).toBe('function');
  });

  it('the build made a fresh bundle, and `tenc pod` runs from it; a stale file falls back with one warning', async () => {
    const main = ensureBuilt();
    expect(bundleProblem(root)).toBeNull();
    // --log-level checked before anything is touched: exit 2, usage on stderr, from whichever entry
    const run = (env: Record<string, string>) => spawnSync(process.execPath, [main, 'pod', '--config', '/nonexistent', '--log-level', 'loud'], { env: { ...process.env, ...env }, encoding: 'utf8' });
    const fresh = run({});
    expect(fresh.status).toBe(2);
    expect(fresh.stderr).toMatch(/--log-level: "loud" is not one of/);
    expect(fresh.stderr).not.toMatch(/pod bundle not used/);
    // a stale bundle: dist/src, with one warning record (pino's shape) naming the file
    fakeCheckout();
    const later = new Date(Date.now() + 5000);
    utimesSync(join(dir, 'dist', 'src', 'a.js'), later, later);
    const lines: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((t: string) => (lines.push(String(t)), true)) as typeof process.stderr.write;
    let entry: string;
    try {
      ({ entry } = await loadPodMain({}, dir));
    } finally {
      process.stderr.write = write;
    }
    expect(entry).toBe('dist');
    expect(lines).toHaveLength(1);
    const rec = JSON.parse(lines[0]) as Record<string, unknown>;
    expect(rec.level).toBe('warn');
    expect(rec.msg).toMatch(/^pod bundle not used: dist\/src\/a\.js changed since the bundle was built.*; running dist\/src$/);
  });

  it('the code cache: used in the pod\'s V8 mode, rejected by V8 outside it, none with TENC_POD_CODE_CACHE=0, stale for another source', async () => {
    ensureBuilt();
    const m = JSON.parse(readFileSync(join(root, 'dist', 'bundle', 'pod.json'), 'utf8'));
    expect(m.bundle).toBe('dist/bundle/pod.cjs');
    expect(m.cache.file).toBe('dist/bundle/pod.cache');
    expect(m.cache.sourceSha256).toBe(createHash('sha256').update(readFileSync(join(root, m.bundle))).digest('hex'));
    // a fresh node, as main.ts loads the pod: lean mode (unless switched off), then the bundle
    const state = (env: Record<string, string>, lean: boolean, at = root) => {
      const code = [
        `import { enterLeanMode, codeCacheState } from ${JSON.stringify(join(root, 'dist/src/control/lean.js'))};`,
        `import { loadPodMain } from ${JSON.stringify(join(root, 'dist/src/cli/pod-bundle.js'))};`,
        lean ? 'enterLeanMode();' : '',
        `const { podMain, entry } = await loadPodMain(process.env, ${JSON.stringify(at)});`,
        'console.log(entry, typeof podMain, codeCacheState());',
      ].join('\n');
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { env: { ...process.env, ...env }, encoding: 'utf8' });
      expect(r.stderr).toBe('');
      return r.stdout.trim();
    };
    expect(state({}, true)).toBe('bundle function used');
    expect(state({}, false)).toBe('bundle function rejected');
    expect(state({ TENC_POD_CODE_CACHE: '0' }, true)).toBe('bundle function none');
    // a cache that belongs to another source (same length: V8 itself would not notice)
    fakeCheckout();
    const bundle = join(dir, 'dist', 'bundle', 'pod.cjs');
    writeFileSync(bundle, 'exports.podMain = async () => 0;\n');
    writeFileSync(join(dir, 'dist', 'bundle', 'pod.cache'), 'x');
    const files: Record<string, [number, number]> = {};
    for (const rel of ['dist/bundle/pod.cjs', 'dist/src/a.js']) {
      const st = statSync(join(dir, rel));
      files[rel] = [st.size, st.mtimeMs];
    }
    const sha = createHash('sha256').update('exports.podMain = async () => 1;\n').digest('hex');
    writeFileSync(join(dir, 'dist', 'bundle', 'pod.json'), JSON.stringify({ bundle: 'dist/bundle/pod.cjs', files, cache: { file: 'dist/bundle/pod.cache', sourceSha256: sha } }));
    expect(state({}, true, dir)).toBe('bundle function stale');
    // a malformed cache entry makes the manifest unusable (dist/src runs)
    writeFileSync(join(dir, 'dist', 'bundle', 'pod.json'), JSON.stringify({ bundle: 'dist/bundle/pod.cjs', files, cache: { file: 7 } }));
    expect(bundleProblem(dir)).toMatch(/not a pod bundle manifest/);
  });
});
