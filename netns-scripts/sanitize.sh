#!/usr/bin/env bash
# sanitize.sh: builds the addon with AddressSanitizer and UndefinedBehaviorSanitizer
# (gcc, binding.gyp's tenc_sanitize variable) into build-sanitize/ (build/Release,
# which the normal tests use, is not touched) and runs the suites that drive the C
# data plane with it: the engine, attack, fuzz and DNS netns suites and the unit
# tests. node itself is not instrumented, so the ASan runtime is preloaded
# (LD_PRELOAD) and leak detection is off (node's own heap is not ours to judge);
# UBSan is built -fno-sanitize-recover, so a first report aborts the process.
# Every report is also written to a log file: any log file fails the run, even if
# the test that triggered it passed (e.g. a child `tenc pod` died and was restarted).
#
#   netns-scripts/sanitize.sh build        # only build build-sanitize/Release/tenc.node
#   netns-scripts/sanitize.sh [FILES...]   # build, then run FILES (default: the list below)
#
# Run under the netns lock: flock /run/tenc-netns.lock npm run test:sanitize
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/build-sanitize
san=${TENC_SANITIZE:-address,undefined}

asan_rt=$(gcc -print-file-name=libasan.so)
[ -e "$asan_rt" ] || { echo "sanitize.sh: gcc's libasan.so not found ($asan_rt): install gcc/libasan" >&2; exit 1; }
asan_rt=$(readlink -f "$asan_rt")

# node-gyp: the one npm runs `install` with (npm_config_node_gyp), else npm's bundled copy.
gyp=${npm_config_node_gyp:-$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")/node_modules/node-gyp/bin/node-gyp.js}
[ -e "$gyp" ] || { echo "sanitize.sh: node-gyp not found ($gyp)" >&2; exit 1; }
nodedir=${npm_config_nodedir:-$(npm config get nodedir 2>/dev/null || true)}
gyp_args=(rebuild "--tenc_sanitize=$san")
[ -n "$nodedir" ] && [ "$nodedir" != undefined ] && gyp_args+=("--nodedir=$nodedir")

mkdir -p "$out"
cp "$root/binding.gyp" "$out/binding.gyp"
ln -sfn "$root/native" "$out/native"
(cd "$out" && node "$gyp" "${gyp_args[@]}" >"$out/gyp.log" 2>&1) || { tail -30 "$out/gyp.log" >&2; echo "sanitize.sh: build failed ($out/gyp.log)" >&2; exit 1; }
addon=$out/build/Release/tenc.node
grep -q fsanitize "$out/build/tenc.target.mk" || { echo "sanitize.sh: $addon was built without -fsanitize" >&2; exit 1; }
echo "sanitize.sh: built $addon ($san)"
[ "${1:-}" = build ] && exit 0

files=("$@")
[ ${#files[@]} -eq 0 ] && files=(test/unit test/netns/engine.test.ts test/netns/engine-switches.test.ts \
  test/netns/attacks.test.ts test/netns/fuzz.test.ts test/netns/dns.test.ts)

logs=$(mktemp -d /tmp/tenc-sanitize.XXXXXX)
chmod 755 "$logs" # children that drop privileges still write their report
# The ASan runtime goes into node processes only (not ip, curl, tcpdump...): a
# `node` shim first in PATH preloads it, sanitize-preload.cjs removes it from the
# environment node passes on and makes process.execPath the shim.
real_node=$(readlink -f "$(command -v node)")
mkdir -p "$out/bin"
cat >"$out/bin/node" <<SHIM
#!/bin/sh
LD_PRELOAD="$asan_rt\${LD_PRELOAD:+:\$LD_PRELOAD}" exec "$real_node" "\$@"
SHIM
chmod 755 "$out/bin/node"
export PATH=$out/bin:$PATH
export TENC_ASAN_RT=$asan_rt TENC_NODE_SHIM=$out/bin/node
export NODE_OPTIONS="--require $root/netns-scripts/sanitize-preload.cjs${NODE_OPTIONS:+ $NODE_OPTIONS}"
export TENC_ADDON=$addon
# quarantine 16 MiB (default 256): freed memory held back for use-after-free
# detection counts in RSS, and fuzz.test.ts bounds the pod's RSS growth (64 MiB).
export ASAN_OPTIONS=detect_leaks=0:quarantine_size_mb=16:halt_on_error=1:abort_on_error=1:detect_odr_violation=0:suppressions=$root/netns-scripts/asan-suppressions.txt:log_path=$logs/asan
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan
cd "$root"
npm run build >/dev/null
set +e
start=$(date +%s)
npx vitest run "${files[@]}"
rc=$?
set -e
echo "sanitize.sh: tests took $(( $(date +%s) - start )) s, exit $rc"
reports=$(find "$logs" -type f | sort)
if [ -n "$reports" ]; then
  for f in $reports; do echo "=== $f"; cat "$f"; done
  echo "sanitize.sh: FAIL: $(echo "$reports" | wc -l) sanitizer report(s) in $logs" >&2
  exit 1
fi
rmdir "$logs"
[ $rc -eq 0 ] || { echo "sanitize.sh: FAIL: tests exit $rc" >&2; exit $rc; }
echo "sanitize.sh: OK: no sanitizer report"
