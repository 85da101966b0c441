#!/bin/bash
# tests/gpu/run.sh: the one prepared check for a GPU machine. Configures and builds shoal with
# CUDA, prints nvidia-smi, runs the gpu-labelled tests, then times each kernel CPU vs GPU.
# Usage (repository root or anywhere): tests/gpu/run.sh [build-dir]   (default build-gpu)
# Exit status: 0 all passed, 1 a test failed, 2 no usable GPU (a skip would hide everything).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
B=${1:-build-gpu}
J=$(nproc 2>/dev/null || echo 4)

echo "== nvidia-smi"
if ! nvidia-smi; then
    echo "run.sh: nvidia-smi failed: no GPU or no driver here" >&2
    exit 2
fi

echo "== configure ($B, CUDA on, Release)"
if ! cmake -S . -B "$B" -DSHOAL_WITH_CUDA=ON -DCMAKE_BUILD_TYPE=Release >"$B.configure.log" 2>&1; then
    tail -30 "$B.configure.log"
    echo "run.sh: configure failed (missing packages? see ops/install-deps.sh)" >&2
    exit 1
fi
grep -E "shoal: CUDA" "$B.configure.log"

echo "== build (-j$J)"
# Everything if possible; if some unrelated part does not build, still build the GPU parity test.
if ! cmake --build "$B" -j"$J" >"$B.build.log" 2>&1; then
    grep -E "error" "$B.build.log" | head -20
    echo "run.sh: full build failed; building the GPU parity tests alone" >&2
    cmake --build "$B" -j"$J" --target test_gpu_parity test_gpu_parity_moe || exit 1
fi

echo "== ctest -L gpu"
rc=0
(cd "$B" && ctest -L gpu --output-on-failure --timeout 300) || rc=1

echo "== parity + timings (CPU single thread vs GPU, ms per call)"
for t in test_gpu_parity test_gpu_parity_moe; do
    "$B/bin/$t" --bench
    prc=$?
    if [ $prc -eq 77 ]; then
        echo "run.sh: $t skipped although nvidia-smi works: CUDA runtime/driver mismatch?" >&2
        exit 2
    fi
    [ $prc -ne 0 ] && rc=1
done
echo "== run.sh: $([ $rc -eq 0 ] && echo PASS || echo FAIL)"
exit $rc
