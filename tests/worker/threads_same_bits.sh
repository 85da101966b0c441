#!/usr/bin/env bash
# threads_same_bits: the same run at --threads 1, 2 and 3 (as many as there are cores) ends with
# byte-identical model and optimizer tensors: fp32 with the kernels shoal selects and with the
# Haswell set, and bf16 where the CPU and build have it (kernels/kgemm.c cuts each GEMM by its
# shape alone; the threads only take the blocks, each one single-threaded call). Batches big enough that
# the GEMMs are cut: G 16 x T 128 tokens.
# usage: threads_same_bits.sh SHOAL_WORKER
set -euo pipefail
worker=$1
max=$(nproc)
[ "$max" -ge 2 ] || { echo "SKIP: one core, no second thread count to compare"; exit 77; }
[ "$max" -le 3 ] || max=3
tmp=$(mktemp -d /tmp/shoal-threads-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
corpus=/usr/share/games/fortunes/fortunes
[ -f "$corpus" ] || { head -c 300000 /dev/urandom | base64 > "$tmp/corpus.txt"; corpus=$tmp/corpus.txt; }
run() { # $1 = label, $2 = threads, $3 = precision; the environment picks the kernels
    cat > "$tmp/$1.yaml" <<EOS
name: threads-test
model: {preset: tiny}
data: {files: [$corpus], seed: 3}
train: {steps: 3, global_batch: 16, seq_len: 128, lr: 3e-3, warmup_steps: 1, precision: $3}
checkpoint: {dir: $tmp/$1, every_steps: 3, keep: 1}
EOS
    "$worker" train "$tmp/$1.yaml" --threads "$2" > "$tmp/$1.log" 2>&1 ||
        { echo "FAIL: $1 did not train"; cat "$tmp/$1.log"; exit 1; }
    grep -q 'threads '"$2"';' "$tmp/$1.log" ||
        { echo "FAIL: $1's BLAS line does not say $2 threads"; grep BLAS "$tmp/$1.log"; exit 1; }
}
# bf16 (oneDNN) where this CPU and build have it: the blocks are oneDNN calls on one thread each
bf16=bf16
printf 'name: probe\nmodel: {preset: tiny}\ndata: {files: [%s]}\ntrain: {steps: 1, global_batch: 2, seq_len: 16, lr: 1e-3, precision: bf16}\ncheckpoint: {dir: %s/probe}\n' \
    "$corpus" "$tmp" > "$tmp/probe.yaml"
if ! "$worker" train "$tmp/probe.yaml" --quiet > "$tmp/probe.log" 2>&1; then
    grep -q 'bf16' "$tmp/probe.log" || { echo "FAIL: the bf16 probe failed"; cat "$tmp/probe.log"; exit 1; }
    echo "bf16: not here ($(grep -m1 bf16 "$tmp/probe.log" | sed 's/.*shoal-worker train: //')); fp32 only"
    bf16=
fi
for kernels in selected Haswell $bf16; do
    prec=fp32
    if [ "$kernels" = Haswell ]; then export OPENBLAS_CORETYPE=Haswell; else unset OPENBLAS_CORETYPE; fi
    [ "$kernels" = bf16 ] && prec=bf16
    for t in $(seq 1 "$max"); do run "$kernels-$t" "$t" "$prec"; done
    grep -h 'BLAS' "$tmp/$kernels-1.log" | sed 's/.*BLAS /BLAS /' | head -1
    for t in $(seq 2 "$max"); do
        for f in model.safetensors optimizer.safetensors; do
            cmp "$tmp/$kernels-1/step-00000003/$f" "$tmp/$kernels-$t/step-00000003/$f" ||
                { echo "FAIL: $f after 3 steps differs between 1 and $t threads ($kernels kernels)"; exit 1; }
        done
    done
    echo "$kernels kernels: 1 to $max threads end with the same model and optimizer bytes"
done
echo PASS
