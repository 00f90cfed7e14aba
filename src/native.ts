/**
 * The only importer of the native addon (build/Release/tenc.node, built by node-gyp
 * during `npm ci`). Other modules import the typed wrappers from here.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** Walk up from this file (src/ or dist/src/) to the package root holding build/. */
function findAddon(): string {
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
