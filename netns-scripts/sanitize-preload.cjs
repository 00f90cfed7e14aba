// sanitize-preload.cjs (NODE_OPTIONS --require, set by netns-scripts/sanitize.sh):
// the ASan runtime belongs in node processes only. The `node` shim of sanitize.sh
// preloads it; here node takes it back out of its environment, so the tools it
// starts (ip, curl, tcpdump, ...) run uninstrumented (curl hangs and iproute2
// reports its own bugs under an ASan preload), and points process.execPath at the
// shim, so node children started by path (vitest workers, fork) get it again.
'use strict';
const rt = process.env.TENC_ASAN_RT;
if (rt && process.env.LD_PRELOAD) {
  const rest = process.env.LD_PRELOAD.split(':').filter((p) => p && p !== rt);
  if (rest.length) process.env.LD_PRELOAD = rest.join(':');
  else delete process.env.LD_PRELOAD;
}
if (process.env.TENC_NODE_SHIM) process.execPath = process.env.TENC_NODE_SHIM;
