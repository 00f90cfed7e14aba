#!/usr/bin/env bash
# build.sh: builds the libFuzzer harnesses of fuzz/ with clang-14
# (-fsanitize=fuzzer,address,undefined) into fuzz/out/bin/. Each links the addon's
# own C files from native/ (listed per harness below), never copies of them.
#   fuzz/build.sh [NAME...]   (default: all)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
n=$root/native
out=$here/out/bin
mkdir -p "$out"
cc=${CC_FUZZ:-clang-14}
command -v "$cc" >/dev/null || { echo "fuzz/build.sh: $cc not found (Debian: clang-14 libfuzzer-14-dev libclang-rt-14-dev)" >&2; exit 1; }
nodeinc=${TENC_NODE_INCLUDE:-$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")/include/node}
[ -e "$nodeinc/node_api.h" ] || nodeinc=/usr/include/node
[ -e "$nodeinc/node_api.h" ] || { echo "fuzz/build.sh: node_api.h not found (set TENC_NODE_INCLUDE)" >&2; exit 1; }
cflags=(-g -O1 -std=gnu11 -D_GNU_SOURCE -DNAPI_VERSION=8 -fno-omit-frame-pointer
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Wall -Wextra -Wno-unused-parameter -Werror
  -I"$n" -I"$nodeinc")
# aead.c finds OpenSSL's ChaCha20/Poly1305 cores with dlsym, as in node (which
# exports them): link Debian's static libcrypto and export them from the harness
# binary, so the receive harness runs the same direct backend as the addon.
crypto=(-Wl,--export-dynamic -Wl,-u,ChaCha20_ctr32 -Wl,-u,Poly1305_ctx_size -Wl,-u,Poly1305_Init
  -Wl,-u,Poly1305_Update -Wl,-u,Poly1305_Final /usr/lib/x86_64-linux-gnu/libcrypto.a -ldl -lpthread)

# the engine's files (native/engine_internal.h lists them), all of them: each stage
# calls the next across files
engine="$n/engine_loop.c $n/engine_tx.c $n/engine_rx.c $n/engine_hsgate.c $n/engine_peers.c $n/engine_events.c"
declare -A src=(
  [replaywin]=""
  [allowedips]="$n/allowedips.c"
  [offload]="$n/offload.c $n/csum.c"
  [gro]="$n/offload.c $n/csum.c"
  [nat]="$n/nat.c $n/csum.c"
  [dnsio]="$n/testing/napi_fake.c $n/dnsio.c /usr/lib/x86_64-linux-gnu/libuv.so.1"
  [rx]="$n/testing/napi_stub.c $engine $n/aead.c $n/allowedips.c $n/nat.c $n/offload.c $n/csum.c"
)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(replaywin allowedips offload gro nat rx dnsio)
jobs=$(nproc 2>/dev/null || echo 2)
pids=()
for name in "${names[@]}"; do
  [ -n "${src[$name]+x}" ] || { echo "fuzz/build.sh: no harness $name" >&2; exit 1; }
  extra=()
  [ "$name" = rx ] && extra=("${crypto[@]}")
  # FZ_EXTRA/FZ_SUFFIX: extra flags and a name suffix (the unit test builds a
  # deliberately broken harness with -DFZ_SELFTEST_BREAK that must fail)
  # shellcheck disable=SC2086
  "$cc" "${cflags[@]}" ${FZ_EXTRA:-} -o "$out/$name${FZ_SUFFIX:-}" "$here/$name.c" ${src[$name]} "${extra[@]}" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}" || exit 1; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || exit 1; done
for name in "${names[@]}"; do echo "fuzz/build.sh: built $out/$name${FZ_SUFFIX:-}"; done
