/**
 * Which code `tenc pod` runs: the pod bundle, or dist/src.
 *
 * `npm run build` runs tsc, then scripts/bundle-pod.mjs: esbuild bundles
 * dist/src/cli/pod-main.js and everything it imports (about 100 modules: tenc's and
 * pino, ip-address, noble's) into one ES module, dist/bundle/pod.mjs, and writes
 * dist/bundle/pod.json: the size and mtime of the bundle and of each file bundled.
 * Node then loads one file instead of resolving, reading and linking a hundred (the
 * start of a pod is what a CNI ADD waits for: README "density").
 *
 * Stale-bundle guard: a build that ran tsc alone (or an edit of dist/src) must never
 * run older bundled code. Each of tenc's files named in pod.json is stat'ed (the
 * libraries are not: the bundle carries its own copy of them, and a container image
 * reinstalls node_modules beside the dist/ it copied); any change of size or mtime,
 * a missing file or a missing or unreadable pod.json, and the pod runs dist/src, with
 * one warning record on stderr saying why. The native addon is not bundled: native.ts
 * looks for build/Release/tenc.node upwards from the bundle's directory as from its own.
 *
 * Switch: TENC_POD_BUNDLE=0 runs dist/src without a word (A/B runs).
 */
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { join } from 'node:path';
import type { PodEntry, PodIo } from './pod-main.js';

/** pod.json: path (relative to the checkout) -> [size, mtimeMs], the bundle's own entry included. */
export interface BundleManifest {
  bundle: string;
  files: Record<string, [number, number]>;
}

/** The checkout: dist/src/cli/ -> ../../.. */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Why the bundle at `root` must not run, or null when it may. */
export function bundleProblem(root: string = ROOT): string | null {
  const manifestPath = join(root, 'dist', 'bundle', 'pod.json');
  let m: BundleManifest;
  try {
    m = JSON.parse(readFileSync(manifestPath, 'utf8')) as BundleManifest;
  } catch (e) {
    return `no pod bundle manifest ${manifestPath} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): run \`npm run build\``;
  }
  if (typeof m !== 'object' || m === null || typeof m.bundle !== 'string' || typeof m.files !== 'object' || m.files === null || !(m.bundle in m.files)) {
    return `${manifestPath}: not a pod bundle manifest`;
  }
  for (const [rel, want] of Object.entries(m.files)) {
    let size: number;
    let mtimeMs: number;
    try {
      ({ size, mtimeMs } = statSync(join(root, rel)));
    } catch {
      return `${rel} is gone since the bundle was built`;
    }
    if (!Array.isArray(want) || size !== want[0] || mtimeMs !== want[1]) return `${rel} changed since the bundle was built (a build without scripts/bundle-pod.mjs?)`;
  }
  return null;
}

/** TENC_POD_BUNDLE=0 turns the bundle off. */
export function podBundleEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.TENC_POD_BUNDLE !== '0';
}

type PodMain = (args: string[], io?: PodIo, entry?: PodEntry) => Promise<number>;

/** The podMain to run and where it comes from; a stale or missing bundle is said once on stderr. */
export async function loadPodMain(env: NodeJS.ProcessEnv = process.env, root: string = ROOT): Promise<{ podMain: PodMain; entry: PodEntry }> {
  if (podBundleEnabled(env)) {
    const problem = bundleProblem(root);
    if (problem === null) {
      const m = (await import(pathToFileURL(join(root, 'dist', 'bundle', 'pod.mjs')).href)) as { podMain: PodMain };
      return { podMain: m.podMain, entry: 'bundle' };
    }
    // the pod's log format (pino JSON), so that readers of its stderr see one more record
    process.stderr.write(JSON.stringify({ level: 'warn', time: new Date().toISOString(), pid: process.pid, msg: `pod bundle not used: ${problem}; running dist/src` }) + '\n');
  }
  return { podMain: (await import('./pod-main.js')).podMain, entry: 'dist' };
}
