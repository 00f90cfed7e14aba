/**
 * The tests that run the real `tenc` command need dist/. `npm test` builds it first;
 * when a single test file runs on its own, ensureBuilt() builds it only if it is
 * missing or older than a source file (tsc rewrites every output, so the bin's mtime
 * is the build time), and the pod bundle (scripts/bundle-pod.mjs, as `npm run build`
 * does) after tsc or when it is missing.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('..', import.meta.url));
export const tencMain = join(root, 'dist', 'src', 'cli', 'main.js');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** Returns the path of the built `tenc` bin; throws naming the file when the build did not produce it. */
export function ensureBuilt(): string {
  if (!existsSync(tencMain) || newestMtime(join(root, 'src')) > statSync(tencMain).mtimeMs) {
    // type errors elsewhere do not stop tsc from emitting; `npm test` reports them
    spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'ignore' });
    spawnSync(process.execPath, ['scripts/bundle-pod.mjs'], { cwd: root, stdio: 'ignore' });
  } else if (!existsSync(join(root, 'dist', 'bundle', 'pod.json'))) {
    spawnSync(process.execPath, ['scripts/bundle-pod.mjs'], { cwd: root, stdio: 'ignore' });
  }
  if (!existsSync(tencMain)) throw new Error(`build did not produce ${tencMain}: run npm run build`);
  return tencMain;
}
