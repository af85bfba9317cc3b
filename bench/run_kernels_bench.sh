#!/usr/bin/env bash
# Builds bench/kernels_bench.c with the kernels (-O3 -fopenmp) and runs it on 2 threads.
#
#   bash bench/run_kernels_bench.sh [fc|fc1|fc64|conv|conv1|convb|all] [quick]
#
# Output goes to stdout and to bench/results/kernels_<what>.txt.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
KERNELS="$ROOT/kernels"
PYTHON="${PYTHON:-python}"
CC="${CC:-cc}"
WHAT="${1:-all}"
QUICK="${2:-}"

# shellcheck source=kernels/tests/mkl_env.sh
source "$KERNELS/tests/mkl_env.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/si-kbench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$CC" -std=c11 -O3 -fopenmp -I"$KERNELS" -I"$MKL_INC" "$KERNELS"/si_*.c "$HERE/kernels_bench.c" \
    -L"$MKL_LIB" -l:libmkl_rt.so.3 -Wl,-rpath,"$MKL_LIB" -lm -o "$WORK/kernels_bench"

mkdir -p "$HERE/results"
OUT="$HERE/results/kernels_${WHAT}${QUICK:+_$QUICK}.txt"
{
    echo "# bash bench/run_kernels_bench.sh $WHAT $QUICK   ($(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
    OMP_NUM_THREADS=2 OMP_PROC_BIND=close "$WORK/kernels_bench" "$WHAT" $QUICK
} | tee "$OUT"
