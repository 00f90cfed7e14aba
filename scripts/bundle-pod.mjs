// The pod bundle (src/cli/pod-bundle.ts): dist/src/cli/pod-main.js and everything it
// imports in one CommonJS script, dist/bundle/pod.cjs, its V8 code cache,
// dist/bundle/pod.cache (scripts/pod-cache.mjs), and dist/bundle/pod.json: the size and
// mtime of the bundle and of each file in it (the stale-bundle guard) and the sha256 of
// the source the cache was made from. Run by `npm run build` after tsc. The native addon
// stays outside (--external:*.node).
//
// CommonJS, not an ES module: node 20 compiles a script with a code cache (vm.Script
// cachedData), an ES module never. The sources are ES modules: the script is strict
// ("use strict", as a module is) and import.meta.url is the bundle's own file URL.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'src', 'cli', 'pod-main.js');
const outDir = join(root, 'dist', 'bundle');
const out = join(outDir, 'pod.cjs');
const cache = join(outDir, 'pod.cache');
mkdirSync(outDir, { recursive: true });
rmSync(join(outDir, 'pod.mjs'), { force: true }); // the ES module bundle of earlier builds
rmSync(cache, { force: true });

const result = await build({
  entryPoints: [entry],
  outfile: out,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['*.node'],
  // No comments, and only ASCII left: node keeps a module's source text on the V8
  // heap, as two bytes a character when one character is not Latin-1 (an em dash
  // in a library's comment made the unminified 0.87 MB bundle 1.7 MB there).
  // Identifiers are kept, so stack traces name the functions.
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  charset: 'ascii',
  banner: { js: '"use strict";var __tencUrl=require("node:url").pathToFileURL(__filename).href;' },
  define: { 'import.meta.url': '__tencUrl' },
  metafile: true,
  logLevel: 'warning',
});

const files = {};
const note = (abs) => {
  const s = statSync(abs);
  files[relative(root, abs)] = [s.size, s.mtimeMs];
};
// tenc's own compiled files only: a tsc-only build or an edited dist/src must not run older
// bundled code. The libraries are not guarded: the bundle carries its own copy of them, and
// an image reinstalls node_modules (new mtimes) beside the dist/ it copied from the build.
for (const input of Object.keys(result.metafile.inputs)) {
  const abs = resolve(process.cwd(), input);
  if (relative(join(root, 'dist'), abs).startsWith('..')) continue;
  note(abs);
}
note(out);
const sourceSha256 = createHash('sha256').update(readFileSync(out)).digest('hex');
// The code cache: made by a node in the pod's own V8 mode (a cache made under other V8
// flags is refused at load). Best effort: without it (no addon built yet, say) the pod
// compiles the bundle as before.
const made = spawnSync(process.execPath, [join(root, 'scripts', 'pod-cache.mjs'), out, cache], { encoding: 'utf8' });
const cached = made.status === 0 && statSync(cache, { throwIfNoEntry: false }) !== undefined;
if (!cached) console.warn(`pod code cache not made (the pod compiles its bundle at start): ${(made.stderr || made.error?.message || '').trim().split('\n').slice(-3).join(' ')}`);
writeFileSync(
  join(outDir, 'pod.json'),
  JSON.stringify({ bundle: relative(root, out), files, ...(cached ? { cache: { file: relative(root, cache), sourceSha256 } } : {}) }) + '\n',
);
console.log(`${relative(root, out)}: ${Object.keys(result.metafile.inputs).length} modules, ${statSync(out).size} bytes${cached ? `; code cache ${statSync(cache).size} bytes` : ''}`);
