#!/usr/bin/env bash
# Runs a libFuzzer target (tests/fuzz/fuzz_TARGET.c) under AddressSanitizer + UBSan for SECONDS,
# starting from its seed corpus tests/fuzz/corpus/TARGET (read only: new inputs go to a scratch
# corpus under build-fuzz/corpus/TARGET, kept between runs). Builds build-fuzz with clang first
# when needed. A finding stops the run, leaves the crashing input in build-fuzz/findings/ and
# exits non-zero; add it to tests/fuzz/corpus/TARGET/ with the fix (the fuzz_replay_TARGET ctest
# then replays it in every normal build).
# Usage: ops/fuzz.sh TARGET|all SECONDS [extra libFuzzer flags...]
#        ops/fuzz.sh list
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SHOAL_FUZZ_BUILD:-$root/build-fuzz}
targets=$(cd "$root/tests/fuzz" && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//' | grep -Evx 'util|replay' || true)
usage() { echo "usage: ops/fuzz.sh TARGET|all SECONDS [libFuzzer flags]; targets:" $targets >&2; exit 2; }
[ "${1:-}" = list ] && { echo $targets; exit 0; }
[ $# -ge 2 ] || usage
target=$1 seconds=$2
shift 2
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || usage
if [ "$target" != all ] && ! grep -qx "$target" <<<"$targets"; then
    echo "ops/fuzz.sh: no target '$target'" >&2
    usage
fi
command -v clang >/dev/null || { echo "ops/fuzz.sh: needs clang (and libclang-rt-dev)" >&2; exit 1; }

if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DSHOAL_FUZZ=ON -DBUILD_TESTING=OFF -DSHOAL_WITH_CUDA=OFF >/dev/null
fi
jobs=${SHOAL_FUZZ_JOBS:-$(nproc)}
list=$targets
[ "$target" = all ] || list=$target
cmake --build "$build" -j"$jobs" --target $(for t in $list; do echo "fuzz_$t"; done)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in $list; do
    work="$build/corpus/$t"
    findings="$build/findings/$t"
    mkdir -p "$work" "$findings"
    echo "== fuzz_$t for ${seconds}s (seeds tests/fuzz/corpus/$t, scratch $work)"
    # -max_len: the largest seed, and at least 64 KiB; the dictionaryless default would be 4 KiB
    set +e
    "$build/bin/fuzz_$t" "$work" "$root/tests/fuzz/corpus/$t" -max_total_time="$seconds" \
        -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$findings/" "$@" 2>&1 | tee "$build/fuzz_$t.log" | grep -E \
        '^#[0-9]+[[:space:]]+(INITED|DONE)|ERROR|SUMMARY|invariant|stat::(number_of_executed_units|average_exec_per_sec|peak_rss)|Test unit written'
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "fuzz_$t: FINDING, exit $rc (log $build/fuzz_$t.log, input in $findings/)"
        status=1
    fi
done
exit $status
