#!/usr/bin/env bash
# gpu_module.sh (CUDA builds): the GPU trainer lives in libshoal_gpu.so beside shoal-worker and is
# loaded only when asked for. The binary does not link cuBLAS (the module does); --version loads
# the module and names its cuBLAS; a shoal-worker without the module beside it, or with a library
# that is not the module, says so clearly and still trains on the CPU; --device cpu trains; on a
# machine without a GPU, --device cuda:0 is refused with the reason.
# usage: gpu_module.sh SHOAL_WORKER LIBSHOAL_GPU
set -uo pipefail
worker=$1
module=$2
fail() { echo "FAIL: $*"; exit 1; }
tmp=$(mktemp -d /tmp/shoal-gpu-module-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# (ldd's lists whole first: grep -q ending the pipe early would fail it under pipefail)
libs_worker=$(ldd "$worker") || fail "ldd $worker failed"
libs_module=$(ldd "$module") || fail "ldd $module failed"
grep -q libcublas <<<"$libs_worker" &&
    fail "shoal-worker links cuBLAS itself: $(grep cublas <<<"$libs_worker")"
grep -q libcublas <<<"$libs_module" || fail "$module does not link cuBLAS"

out=$("$worker" --version) || fail "--version failed: $out"
line=$(grep '^GPU module' <<<"$out")
echo "$line"
[[ $line == "GPU module $(dirname "$(readlink -f "$worker")")/libshoal_gpu.so (cuBLAS "[0-9]* ]] ||
    fail "--version does not report the module beside the binary as loaded: '$line'"

# the binary alone: no module beside it
mkdir "$tmp/alone" "$tmp/other"
cp "$worker" "$tmp/alone/"
out=$("$tmp/alone/shoal-worker" --version) || fail "--version without the module failed: $out"
line=$(grep '^GPU module' <<<"$out")
echo "$line"
[[ $line == "GPU module: none loads: the GPU trainer module $tmp/alone/libshoal_gpu.so does not load ("*"): install it beside shoal-worker, or use --device cpu" ]] ||
    fail "no clear word on the missing module: '$line'"

# a library that is not the module
cp "$worker" "$tmp/other/"
libm=$(sed -n 's/.*libm\.so\.6 => \([^ ]*\) .*/\1/p' <<<"$libs_worker")
[ -f "$libm" ] || fail "no libm.so.6 in ldd's list to stand in for a foreign library"
cp "$libm" "$tmp/other/libshoal_gpu.so"
line=$("$tmp/other/shoal-worker" --version | grep '^GPU module')
echo "$line"
[[ $line == *"no shoal_gpu_module in it: not a shoal GPU module" ]] ||
    fail "a foreign library is not refused clearly: '$line'"

corpus=/usr/share/games/fortunes/fortunes
[ -f "$corpus" ] || { head -c 100000 /dev/urandom | base64 > "$tmp/corpus.txt"; corpus=$tmp/corpus.txt; }
cat > "$tmp/run.yaml" <<EOS
name: gpu-module
model: {preset: tiny}
data: {files: [$corpus], seed: 7}
train: {steps: 2, global_batch: 4, seq_len: 32, micro_batch: 4, lr: 3e-3, warmup_steps: 1}
checkpoint: {dir: $tmp/ck, every_steps: 10, keep: 1}
EOS
out=$("$tmp/alone/shoal-worker" train "$tmp/run.yaml" --device cpu --quiet 2>&1) ||
    fail "--device cpu without the module failed: $out"
grep -q '^device: cpu' <<<"$out" || fail "--device cpu did not say it runs on the CPU: $out"
grep -q '^summary: 2 steps' <<<"$out" || fail "--device cpu did not train 2 steps: $out"
echo "--device cpu without the module: trained 2 steps"

if [ ! -e /dev/nvidiactl ] && [ ! -e /proc/driver/nvidia ]; then
    rc=0
    out=$("$worker" train "$tmp/run.yaml" --device cuda:0 2>&1) || rc=$?
    [ $rc -ne 0 ] || fail "--device cuda:0 without a GPU trained: $out"
    grep -q "device 'cuda:0': no NVIDIA driver loaded" <<<"$out" ||
        fail "--device cuda:0 without a GPU: no clear reason: $out"
    echo "--device cuda:0 without a GPU: refused (exit $rc): $(tail -1 <<<"$out")"
fi
echo PASS
