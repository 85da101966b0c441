#!/bin/bash
# blas_select_version.sh: the BLAS kernel selection in a real shoal-worker. Under a forced generic
# set (SHOAL_BLAS_TEST_CORENAME=Prescott: act as if OpenBLAS had fallen back; OPENBLAS_CORETYPE and
# the guard unset) `shoal-worker --version` must re-execute itself once and report the kernels the
# CPU's flags call for as the ones OpenBLAS loaded; keep, a set OPENBLAS_CORETYPE (even empty) must
# not re-execute; the re-executed process keeps its arguments.
# usage: blas_select_version.sh SHOAL_WORKER. Exit 0 pass, 1 fail, 77 skip.
set -u
W=$1
fail() { echo "FAIL: $*"; exit 1; }
run() { env -u OPENBLAS_CORETYPE -u SHOAL_BLAS_SELECTED -u SHOAL_BLAS_CORETYPE \
            -u SHOAL_BLAS_TEST_CORENAME "$@"; }

out=$(run SHOAL_BLAS_TEST_CORENAME=Prescott "$W" --version) || fail "--version failed: $out"
echo "$out"
line=$(grep '^BLAS ' <<<"$out")
[[ $line == "BLAS OpenBLAS "* ]] || { echo "SKIP: the BLAS library is not OpenBLAS: '$line'"; exit 77; }
flags=$(grep -m1 '^flags' /proc/cpuinfo)
want=
case " $flags " in
*" avx512f "*" avx512_bf16 "* | *" avx512_bf16 "*" avx512f "*) want=Cooperlake ;;
*" avx512f "*) want=SkylakeX ;;
*" avx2 "*) grep -q -m1 GenuineIntel /proc/cpuinfo && want=Haswell || want=Zen ;;
esac
[[ -n $want ]] || { echo "SKIP: this CPU has no AVX2, there is nothing to select"; exit 77; }
kernels=$(sed -n 's/.*, kernels \([^,]*\),.*/\1/p' <<<"$line")
[[ $line == *"selection: selected at start: OPENBLAS_CORETYPE=$want, as OpenBLAS chose Prescott"* ]] ||
    fail "expected a re-exec asking for $want: $line"
[[ $kernels == "$want" ]] || fail "OpenBLAS runs '$kernels', the selection asked for $want"

# keep: no re-exec, whatever OpenBLAS chose
out=$(run SHOAL_BLAS_TEST_CORENAME=Prescott SHOAL_BLAS_CORETYPE=keep "$W" --version)
[[ $out == *"selection: kept Prescott: SHOAL_BLAS_CORETYPE=keep"* ]] || fail "keep: $out"

# the user's (or the machine's) OPENBLAS_CORETYPE stands, even a generic one, even empty
out=$(run SHOAL_BLAS_TEST_CORENAME=Prescott OPENBLAS_CORETYPE=Prescott "$W" --version)
[[ $out == *"kernels Prescott,"*"kept: OPENBLAS_CORETYPE='Prescott' was set"* ]] ||
    fail "a set OPENBLAS_CORETYPE was overridden: $out"
out=$(run SHOAL_BLAS_TEST_CORENAME=Prescott OPENBLAS_CORETYPE= "$W" --version)
[[ $out == *"kept: OPENBLAS_CORETYPE='' was set"* ]] || fail "an empty OPENBLAS_CORETYPE: $out"

# the re-executed process gets the same arguments (an unknown command is still refused by name)
err=$(run SHOAL_BLAS_TEST_CORENAME=Prescott "$W" no-such-command-42 2>&1)
rc=$?
[[ $rc == 2 && $err == *"unknown command 'no-such-command-42'"* ]] ||
    fail "arguments after the re-exec: rc $rc, $err"
echo PASS
