/**
 * Which code `tenc pod` runs: the pod bundle, or dist/src.
 *
 * `npm run build` runs tsc, then scripts/bundle-pod.mjs: esbuild bundles
 * dist/src/cli/pod-main.js and everything it imports (about 100 modules: tenc's and
 * pino, ip-address, noble's) into one CommonJS script, dist/bundle/pod.cjs, makes its
 * V8 code cache, dist/bundle/pod.cache (scripts/pod-cache.mjs), and writes
 * dist/bundle/pod.json: the size and mtime of the bundle and of each file bundled, and
 * the sha256 of the source the cache belongs to. Node then loads one file instead of
 * resolving, reading and linking a hundred, and with the cache compiles none of what the
 * cache holds (the start of a pod is what a CNI ADD waits for: README "density").
 *
 * The code cache: V8 checks a cache against its own version and flags, and the source
 * only by its length, so the cache is used only when the bundle's sha256 is the one in
 * pod.json (else the bundle compiles as without one). State in the `pod running`
 * record: codeCache used | rejected (by V8: another node or other V8 flags, e.g.
 * TENC_V8_LEAN=0) | stale (sha256) | none (not made, or TENC_POD_CODE_CACHE=0).
 *
 * Stale-bundle guard: a build that ran tsc alone (or an edit of dist/src) must never
 * run older bundled code. Each of tenc's files named in pod.json is stat'ed (the
 * libraries are not: the bundle carries its own copy of them, and a container image
 * reinstalls node_modules beside the dist/ it copied); any change of size or mtime,
 * a missing file or a missing or unreadable pod.json, and the pod runs dist/src, with
 * one warning record on stderr saying why. The native addon is not bundled: native.ts
 * looks for build/Release/tenc.node upwards from the bundle's directory as from its own.
 *
 * Switches: TENC_POD_BUNDLE=0 runs dist/src without a word (A/B runs);
 * TENC_POD_CODE_CACHE=0 compiles the bundle without its cache.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { Module, createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Script } from 'node:vm';
import { setCodeCacheState, type CodeCacheState } from '../control/lean.js';
import type { PodEntry, PodIo } from './pod-main.js';

/** pod.json: path (relative to the checkout) -> [size, mtimeMs], the bundle's own entry included. */
export interface BundleManifest {
  bundle: string;
  files: Record<string, [number, number]>;
  /** The code cache and the sha256 of the bundle it was made from (absent: none made). */
  cache?: { file: string; sourceSha256: string };
}

/** Compiles the CommonJS bundle (with a V8 code cache, if given); run() executes its top level and returns its exports. */
export function compileBundle(file: string, cachedData: Buffer | undefined, source = readFileSync(file, 'utf8')): { script: Script; run: (req: NodeJS.Require, dir: string) => Record<string, unknown> } {
  // the CommonJS wrapper node itself puts around a module: (exports, require, module, __filename, __dirname)
  const script = new Script((Module as unknown as { wrap: (s: string) => string }).wrap(source), { filename: file, cachedData });
  return {
    script,
    run: (req, dir) => {
      const fn = script.runInThisContext() as (e: object, r: NodeJS.Require, m: object, f: string, d: string) => void;
      const mod = { exports: {} as Record<string, unknown> };
      fn.call(mod.exports, mod.exports, req, mod, file, dir);
      return mod.exports;
    },
  };
}

/** TENC_POD_CODE_CACHE=0 compiles the bundle without its cache. */
export function codeCacheEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.TENC_POD_CODE_CACHE !== '0';
}

/** Loads the bundle of a fresh manifest, with its code cache when it belongs to this source. */
function loadBundle(root: string, m: BundleManifest, env: NodeJS.ProcessEnv): { podMain: PodMain; codeCache: CodeCacheState } {
  const file = join(root, m.bundle);
  const source = readFileSync(file, 'utf8');
  let cachedData: Buffer | undefined;
  let state: CodeCacheState = 'none';
  if (m.cache && codeCacheEnabled(env)) {
    if (createHash('sha256').update(source).digest('hex') === m.cache.sourceSha256) {
      try {
        cachedData = readFileSync(join(root, m.cache.file));
      } catch {
        cachedData = undefined; // gone: compiled as without one
      }
    } else state = 'stale';
  }
  const { script, run } = compileBundle(file, cachedData, source);
  if (cachedData) state = script.cachedDataRejected ? 'rejected' : 'used';
  const exports = run(createRequire(file), dirname(file));
  return { podMain: exports.podMain as PodMain, codeCache: state };
}

/** The checkout: dist/src/cli/ -> ../../.. */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Why the bundle at `root` must not run, or null when it may. */
export function bundleProblem(root: string = ROOT): string | null {
  return readManifest(root).problem;
}

function readManifest(root: string): { manifest: BundleManifest; problem: null } | { manifest: null; problem: string } {
  const fail = (problem: string) => ({ manifest: null, problem }) as const;
  const manifestPath = join(root, 'dist', 'bundle', 'pod.json');
  let m: BundleManifest;
  try {
    m = JSON.parse(readFileSync(manifestPath, 'utf8')) as BundleManifest;
  } catch (e) {
    return fail(`no pod bundle manifest ${manifestPath} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): run \`npm run build\``);
  }
  if (
    typeof m !== 'object' ||
    m === null ||
    typeof m.bundle !== 'string' ||
    typeof m.files !== 'object' ||
    m.files === null ||
    !(m.bundle in m.files) ||
    (m.cache !== undefined && (typeof m.cache?.file !== 'string' || typeof m.cache?.sourceSha256 !== 'string'))
  ) {
    return fail(`${manifestPath}: not a pod bundle manifest`);
  }
  for (const [rel, want] of Object.entries(m.files)) {
    let size: number;
    let mtimeMs: number;
    try {
      ({ size, mtimeMs } = statSync(join(root, rel)));
    } catch {
      return fail(`${rel} is gone since the bundle was built`);
    }
    if (!Array.isArray(want) || size !== want[0] || mtimeMs !== want[1]) return fail(`${rel} changed since the bundle was built (a build without scripts/bundle-pod.mjs?)`);
  }
  return { manifest: m, problem: null };
}

/** TENC_POD_BUNDLE=0 turns the bundle off. */
export function podBundleEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.TENC_POD_BUNDLE !== '0';
}

type PodMain = (args: string[], io?: PodIo, entry?: PodEntry) => Promise<number>;

/** The podMain to run and where it comes from; a stale or missing bundle is said once on stderr. */
export async function loadPodMain(env: NodeJS.ProcessEnv = process.env, root: string = ROOT): Promise<{ podMain: PodMain; entry: PodEntry }> {
  if (podBundleEnabled(env)) {
    const { manifest, problem } = readManifest(root);
    if (manifest !== null) {
      const { podMain, codeCache } = loadBundle(root, manifest, env);
      setCodeCacheState(codeCache);
      return { podMain, entry: 'bundle' };
    }
    // the pod's log format (pino JSON), so that readers of its stderr see one more record
    process.stderr.write(JSON.stringify({ level: 'warn', time: new Date().toISOString(), pid: process.pid, msg: `pod bundle not used: ${problem}; running dist/src` }) + '\n');
  }
  return { podMain: (await import('./pod-main.js')).podMain, entry: 'dist' };
}
