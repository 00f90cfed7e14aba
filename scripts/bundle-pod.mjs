// The pod bundle (src/cli/pod-bundle.ts): dist/src/cli/pod-main.js and everything it
// imports in one ES module, dist/bundle/pod.mjs, and dist/bundle/pod.json, the size and
// mtime of the bundle and of each file in it (the stale-bundle guard). Run by
// `npm run build` after tsc. The native addon stays outside (--external:*.node).
import { build } from 'esbuild';
import { statSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'src', 'cli', 'pod-main.js');
const outDir = join(root, 'dist', 'bundle');
const out = join(outDir, 'pod.mjs');
mkdirSync(outDir, { recursive: true });

const result = await build({
  entryPoints: [entry],
  outfile: out,
  bundle: true,
  platform: 'node',
  format: 'esm',
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
  // CommonJS libraries (pino) call require(): give the ES module one
  banner: { js: 'import { createRequire as __tencRequire } from "node:module"; const require = __tencRequire(import.meta.url);' },
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
writeFileSync(join(outDir, 'pod.json'), JSON.stringify({ bundle: relative(root, out), files }) + '\n');
console.log(`${relative(root, out)}: ${Object.keys(result.metafile.inputs).length} modules, ${statSync(out).size} bytes`);
