#!/usr/bin/env node
/** The `tenc` executable (package.json "bin": dist/src/cli/main.js). */
import { enterLeanMode } from '../control/lean.js';

const argv = process.argv.slice(2);
// `tenc pod`: V8 lean (no TurboFan, no young-generation growth) before the rest
// loads, until the pod gets busy (src/control/lean.ts). Every launcher of a pod runs
// this file (the agent, bench/lib/tunnels.ts, netns-scripts, `tenc` itself).
// TENC_V8_LEAN=0 keeps V8's defaults (A/B runs).
if (argv[0] === 'pod' && process.env.TENC_V8_LEAN !== '0') enterLeanMode();
let code: number;
if (argv[0] === 'pod') {
  // `tenc pod`: its own entry, from the pod bundle when it is there and fresh (cli/pod-bundle.ts; TENC_POD_BUNDLE=0: dist/src)
  const { podMain, entry } = await (await import('./pod-bundle.js')).loadPodMain();
  code = await podMain(argv.slice(1), undefined, entry);
} else if (argv[0] === 'cni' && argv.length === 1) {
  // `tenc cni` (the CNI plugin, run by the container runtime): only the plugin's code loads
  code = await (await import('../cni/main.js')).cniMain();
} else {
  code = await (await import('./cli.js')).runCli(argv);
}
// `tenc pod` has torn everything down by now: leave even if a library left a handle open.
// Other commands end naturally so piped stdout is flushed first.
if (argv[0] === 'pod') process.exit(code);
process.exitCode = code;
