#!/usr/bin/env bash
# run.sh: builds the libFuzzer harnesses (build.sh) and runs each for a bounded time.
#   fuzz/run.sh [SECONDS] [NAME...]   default 60 s each, all harnesses
#   fuzz/run.sh 0 [NAME...]           smoke: each harness over its seeds and
#                                     fuzz/regress/NAME only (no mutation)
# Corpora grow in fuzz/out/corpus/NAME (kept out of git), seeded from seeds.py;
# crashes go to fuzz/out/crash/NAME/ and fail the run: copy each into
# fuzz/regress/NAME/ with its fix, where the smoke run (and npm test) replays it.
# One line per harness: executions, exec/s, coverage (edges), features, corpus.
set -euo pipefail
# the harnesses bring their own sanitizers; an addon sanitizer run's settings are not theirs
unset ASAN_OPTIONS UBSAN_OPTIONS LD_PRELOAD
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-60}
shift || true
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(replaywin allowedips offload gro nat rx dnsio)
"$here/build.sh" "${names[@]}" >/dev/null
out=$here/out
seeds=$(mktemp -d /tmp/tenc-seeds.XXXXXX)
trap 'rm -rf "$seeds"' EXIT
python3 "$here/seeds.py" "$seeds"
fail=0
printf '%-11s %6s %11s %9s %6s %7s %7s %s\n' harness secs execs exec/s edges features corpus result
for name in "${names[@]}"; do
  corpus=$out/corpus/$name
  crash=$out/crash/$name
  mkdir -p "$corpus" "$crash"
  dirs=()
  [ -d "$seeds/$name" ] && dirs+=("$seeds/$name")
  [ -d "$here/regress/$name" ] && dirs+=("$here/regress/$name")
  mkdir -p "$out/logs"
  log=$out/logs/$name.$secs.log
  set +e
  if [ "$secs" = 0 ]; then
    # every seed and regression input once; a crash exits non-zero
    "$here/out/bin/$name" -runs=0 -print_final_stats=1 -artifact_prefix="$crash/" "${dirs[@]}" >"$log" 2>&1
  else
    # -rss_limit_mb: the rx harness holds four engines (their counters and NAT tables)
    "$here/out/bin/$name" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 -timeout=10 \
      -artifact_prefix="$crash/" "$corpus" "${dirs[@]}" >"$log" 2>&1
  fi
  rc=$?
  set -e
  stat() { grep -ao "$1: *[0-9]*" "$log" | tail -1 | grep -o '[0-9]*$' || echo 0; }
  line=$(grep -aE '(DONE|INITED) +cov' "$log" | tail -1)
  cov=$(echo "$line" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || echo 0)
  ft=$(echo "$line" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || echo 0)
  corp=$(echo "$line" | grep -o 'corp: [0-9]*' | grep -o '[0-9]*' || echo 0)
  res=ok
  if [ $rc -ne 0 ]; then res="FAIL (exit $rc, see $log)"; fail=1; fi
  printf '%-11s %6s %11s %9s %6s %7s %7s %s\n' "$name" "$secs" "$(stat stat::number_of_executed_units)" \
    "$(stat stat::average_exec_per_sec)" "${cov:-0}" "${ft:-0}" "${corp:-0}" "$res"
done
exit $fail
