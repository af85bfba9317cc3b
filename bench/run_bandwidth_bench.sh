#!/usr/bin/env bash
# Builds bench/bandwidth_bench.c with every kernels/ source (-O3, OpenMP, MKL from the PyPI wheels
# mkl and mkl-include, found as setup.py finds them) and runs it; the output goes to the
# terminal and to bench/results/bandwidth.txt.
#
#   bash bench/run_bandwidth_bench.sh            (about 1-2 minutes on 2 cores)
#   bash bench/run_bandwidth_bench.sh --quick    (fewer repeats; writes bench/results/bandwidth-quick.txt)
#
# Run it on an otherwise idle machine. Exit status: the benchmark's (1 if a check failed).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
KERNELS="$ROOT/kernels"
PYTHON="${PYTHON:-python}"
CC="${CC:-cc}"

# shellcheck source=kernels/tests/mkl_env.sh
source "$KERNELS/tests/mkl_env.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/si-bw.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# The library's sources as setup.py compiles them (-O3 -fopenmp); warnings are errors in the
# files this benchmark is about, only warnings in the others (their own tests hold them).
CFLAGS=(-std=c11 -O3 -fopenmp -Wall -Wextra -I"$KERNELS" -I"$MKL_INC")
LIBS=(-L"$MKL_LIB" -l:libmkl_rt.so.3 -Wl,-rpath,"$MKL_LIB" -lm -lz)
build_full() {
    local objs=() src werror obj
    for src in $(find "$KERNELS" -path "$KERNELS/tests" -prune -o -name 'si_*.c' -print) "$HERE/bandwidth_bench.c"; do
        werror=()
        case "$(basename "$src")" in si_fc_gemv.c|si_bandwidth.c|bandwidth_bench.c) werror=(-Werror) ;; esac
        obj="$WORK/$(basename "$src" .c).o"
        "$CC" "${CFLAGS[@]}" "${werror[@]}" -c "$src" -o "$obj" || return 1
        objs+=("$obj")
    done
    "$CC" -fopenmp "${objs[@]}" "${LIBS[@]}" -o "$WORK/bandwidth_bench"
}
build_full
BUILD="whole library (kernels/)"

OUT="$HERE/results/bandwidth.txt"
[ "${1:-}" = "--quick" ] && OUT="$HERE/results/bandwidth-quick.txt"
# With OMP_WAIT_POLICY set (e.g. passive: libgomp's idle threads sleep at once instead of
# spinning), the output goes to bandwidth-wait-<policy>.txt beside the default run's.
[ -n "${OMP_WAIT_POLICY:-}" ] && OUT="${OUT%.txt}-wait-$(echo "$OMP_WAIT_POLICY" | tr 'A-Z' 'a-z').txt"
mkdir -p "$HERE/results"
{
    echo "# bash bench/run_bandwidth_bench.sh $*"
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $("$CC" --version | head -1)"
    echo "# build: $BUILD"
    echo "# OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-(unset)} GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-(unset)} OMP_NUM_THREADS=${OMP_NUM_THREADS:-(unset)}"
    echo "# git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
} > "$WORK/head.txt"
set +e
"$WORK/bandwidth_bench" "$@" | tee "$WORK/out.txt"
rc=${PIPESTATUS[0]}
set -e
cat "$WORK/head.txt" "$WORK/out.txt" > "$OUT"
echo "(written to ${OUT#$ROOT/})"
exit "$rc"
