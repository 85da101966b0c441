#!/usr/bin/env bash
# Builds shoal and runs the whole test suite: unit + integration tests in a normal build, then the
# unit tests again under AddressSanitizer + UBSan; then compiles (no tests run) a gcc Release
# build and a clang build, whose warnings differ. CI builds treat warnings as errors
# (SHOAL_WERROR=ON); a user's build does not. Installs missing Debian packages first.
# Usage: ops/test.sh            (from anywhere; builds in <repo>/build, build-asan, build-release
#                                and build-clang)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash ops/install-deps.sh
jobs=$(nproc)

# An outside reference of docs/MODEL.md beside the checkout is tested too (the *_outside tests);
# without one the value is empty, which also clears one cached by an earlier run.
oracle=$root/../shared/oracle/moe_ref.py
[ -f "$oracle" ] || oracle=
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHOAL_WERROR=ON -DSHOAL_ORACLE="$oracle" \
    >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs" -LE 'bench|gpu|slow')

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSHOAL_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j"$jobs" -L unit)

# Compile-only builds: gcc at -O3 (Release) warns where -O2 does not, and clang warns and links
# differently (target_clones). The CUDA twins are already compiled above; skip them here.
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DSHOAL_WERROR=ON -DSHOAL_WITH_CUDA=OFF \
    >/dev/null
cmake --build build-release -j"$jobs"
cmake -S . -B build-clang -DCMAKE_C_COMPILER=clang -DSHOAL_WERROR=ON -DSHOAL_WITH_CUDA=OFF \
    >/dev/null
cmake --build build-clang -j"$jobs"
