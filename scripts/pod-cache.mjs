// Makes the pod bundle's V8 code cache: node scripts/pod-cache.mjs BUNDLE CACHE.
// Enters the pod's V8 lean mode first, as `tenc pod` does before it loads the bundle
// (V8 refuses a cache made under other flags), compiles and runs the bundle's top level
// the way src/cli/pod-bundle.ts loads it, and writes what V8 compiled by then.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { enterLeanMode } from '../dist/src/control/lean.js';
import { compileBundle } from '../dist/src/cli/pod-bundle.js';

const [bundle, cache] = process.argv.slice(2);
if (!bundle || !cache) {
  console.error('usage: node scripts/pod-cache.mjs BUNDLE CACHE');
  process.exit(2);
}
enterLeanMode();
const { script, run } = compileBundle(bundle, undefined);
run(createRequire(bundle), dirname(bundle));
writeFileSync(cache, script.createCachedData(), { mode: 0o644 });
