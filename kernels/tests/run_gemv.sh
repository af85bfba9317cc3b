#!/usr/bin/env bash
# Builds kernels/tests/test_gemv.c with the library's kernels twice, optimised (-O3, as
# setup.py builds them) and under AddressSanitizer + UBSan (-O1), and runs both: the
# optimised build on every shape with 1 and 2 threads, the sanitized one with the largest
# shapes at 1 thread only (--quick).
#
#   bash kernels/tests/run_gemv.sh        (from anywhere; uses `python` or $PYTHON)
#
# MKL comes from the PyPI wheels (mkl, mkl-include), found as setup.py finds them. The test
# links the whole library (kernels/si_*.c and its subfolders, not the tests). Warnings are
# errors in fc/si_fc_gemv.c, util/si_bandwidth.c and the test.
#
# Last line: "N passed, M failed" over both runs. Exit status non-zero on any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KERNELS="$(dirname "$HERE")"
PYTHON="${PYTHON:-python}"
CC="${CC:-cc}"

# shellcheck source=kernels/tests/mkl_env.sh
source "$HERE/mkl_env.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/si-gemv.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Warnings are errors in the GEMV kernel, the bandwidth probe and the test (the other sources
# belong to other tests), checked by compiling them alone at -O3 (some warnings need the optimiser).
for src in "$KERNELS/fc/si_fc_gemv.c" "$KERNELS/util/si_bandwidth.c" "$HERE/test_gemv.c"; do
    "$CC" -std=c11 -O3 -fopenmp -Wall -Wextra -Werror -I"$KERNELS" -I"$MKL_INC" -c "$src" -o "$WORK/check.o"
done

build() { # name flags...: builds $WORK/name from the whole library (si_objects: mkl_env.sh's cache) and the test
    local name="$1"; shift
    si_objects "$@"
    "$CC" "$@" "${SI_OBJS[@]}" "$HERE/test_gemv.c" "${SI_LIBS[@]}" -o "$WORK/$name"
    echo "== $name: whole library (${#SI_OBJS[@]} sources under kernels/)"
}

build test_gemv -std=c11 -O3 -fopenmp -I"$KERNELS" -I"$MKL_INC"
build test_gemv_asan "${SI_ASAN_FLAGS[@]}" # the other scripts' sanitized objects

total_p=0; total_f=0; rc=0
run() { # name args...
    local name="$1"; shift
    echo "== run $name $*"
    set +e
    "$WORK/$name" "$@" | tee "$WORK/$name.out"
    local st=${PIPESTATUS[0]}
    set -e
    [ "$st" = 0 ] || rc=1
    local line
    line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/$name.out" | tail -1 || true)"
    if [ -z "$line" ]; then echo "$name: no closing line (exit status $st)"; total_f=$((total_f + 1)); rc=1; return; fi
    total_p=$((total_p + ${line%% passed*}))
    local f="${line#*passed, }"; total_f=$((total_f + ${f%% failed}))
}

run test_gemv
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
run test_gemv_asan --quick

echo "== total (optimised + sanitized)"
echo "$total_p passed, $total_f failed"
[ "$total_f" = 0 ] || rc=1
exit $rc
