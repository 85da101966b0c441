#!/usr/bin/env bash
# Installs the Debian packages shoal builds and tests with. Idempotent: installs only what is
# missing, so a second run is a no-op. Run as root (or with sudo available).
set -euo pipefail

packages=(
    build-essential clang libclang-rt-dev cmake pkg-config
    libzmq3-dev libsodium-dev
    libprotobuf-c-dev protobuf-c-compiler
    librocksdb-dev
    libyaml-dev
    libopenblas-dev libdnnl-dev
    libjansson-dev
    libssl-dev libcmocka-dev
    libsystemd-dev systemd
    fortunes
    python3-torch python3-numpy
    libmicrohttpd-dev prometheus slurm-wlm munge libcairo2-dev
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages present"
    exit 0
fi

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
