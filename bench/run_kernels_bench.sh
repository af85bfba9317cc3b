#!/usr/bin/env bash
# Builds bench/kernels_bench.c with every kernels/ source (kernels/**/si_*.c, not the tests;
# -O3 -fopenmp, MKL from the PyPI wheels mkl and mkl-include) and runs it on 2 threads.
#
#   bash bench/run_kernels_bench.sh [fc|fc1|fc64|conv|conv1|convb|small|all] [quick]
#   bash bench/run_kernels_bench.sh quick     (= small quick: LeNet fc1 and conv2 at batch 1, seconds)
#
# Output goes to stdout and to bench/results/kernels_<what>[_quick].txt, or to $KERNELS_BENCH_OUT
# if set. Warnings are errors in kernels_bench.c; the library's own files only warn (their
# tests hold them).
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

# Every library source (kernels/si_*.c and its subfolders), not the tests.
mapfile -t SOURCES < <(find "$KERNELS" -path "$KERNELS/tests" -prune -o -name 'si_*.c' -print | sort)
[ "${#SOURCES[@]}" -gt 0 ] || { echo "no kernels/**/si_*.c sources found under $KERNELS"; exit 1; }

CFLAGS=(-std=c11 -O3 -fopenmp -Wall -Wextra -I"$KERNELS" -I"$MKL_INC")
objs=()
for src in "${SOURCES[@]}" "$HERE/kernels_bench.c"; do
    werror=()
    [ "$(basename "$src")" = kernels_bench.c ] && werror=(-Werror)
    obj="$WORK/$(basename "$src" .c).o"
    "$CC" "${CFLAGS[@]}" "${werror[@]}" -c "$src" -o "$obj"
    objs+=("$obj")
done
"$CC" -fopenmp "${objs[@]}" -L"$MKL_LIB" -l:libmkl_rt.so.3 -Wl,-rpath,"$MKL_LIB" -lm -lz -o "$WORK/kernels_bench"

OUT="${KERNELS_BENCH_OUT:-$HERE/results/kernels_${WHAT}${QUICK:+_$QUICK}.txt}"
mkdir -p "$(dirname "$OUT")"
set +e
{
    echo "# bash bench/run_kernels_bench.sh $WHAT $QUICK   ($(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
    OMP_NUM_THREADS=2 OMP_PROC_BIND=close "$WORK/kernels_bench" "$WHAT" $QUICK
} | tee "$OUT"
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
