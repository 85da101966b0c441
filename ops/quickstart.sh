#!/usr/bin/env bash
# quickstart.sh: the README quick start in one command: install the Debian packages, build into
# build/, then `shoalctl up`: a local coordinator and 2 workers train the embedded tiny-fortunes
# run end to end and the final model lands in ./shoal-out/tiny-fortunes/.
# Usage: bash ops/quickstart.sh [shoalctl up options, e.g. --workers 4 or a RUN.yaml]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/ops/install-deps.sh"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j"$(nproc)" --target shoalctl shoal-coordinator shoal-worker
exec "$root/build/bin/shoalctl" up "$@"
