#!/usr/bin/env bash
# Builds the library's sources (kernels/**/si_*.c) with test_igemm_amx.c twice and runs it:
# optimised (-O2, the full set of cases) and under AddressSanitizer + UBSan (the quick set).
# Each run checks the AMX int8 GEMM (ops/si_igemm_amx.c) bit for bit against si_igemm_ref,
# or, on a machine without AMX (or whose OS refuses the tile state), that the kernel says
# it is unavailable. AddressSanitizer does not see the tile loads (asm statements): the
# test's guarded cases (rows of A ending before PROT_NONE pages) catch their overreads.
#
#   bash kernels/tests/run_igemm_amx.sh      (from anywhere; uses `python` or $PYTHON)
#
# MKL comes from the PyPI wheels (mkl, mkl-include), found as in run_sanitized.sh.
# Exit status: non-zero if either run fails.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KERNELS="$(dirname "$HERE")"
PYTHON="${PYTHON:-python}"
CC="${CC:-cc}"

# shellcheck source=kernels/tests/mkl_env.sh
source "$HERE/mkl_env.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/si-igemm-amx.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Only the AMX GEMM and its test are -Werror here: the others belong to other tests.
"$CC" -std=c11 -O2 -fopenmp -Wall -Wextra -Werror -I"$KERNELS" -I"$MKL_INC" -fsyntax-only \
    "$KERNELS/ops/si_igemm_amx.c" "$HERE/test_igemm_amx.c"

# The sanitized build goes on in the background while the optimised one builds and runs.
echo "== build (ASan + UBSan, in the background)"
( si_objects "${SI_ASAN_FLAGS[@]}"
  "$CC" "${SI_ASAN_FLAGS[@]}" "${SI_OBJS[@]}" "$HERE/test_igemm_amx.c" "${SI_LIBS[@]}" -o "$WORK/test_igemm_amx_asan" ) &
ASAN_BUILD=$!
trap 'wait "$ASAN_BUILD" 2>/dev/null || true; rm -rf "$WORK"' EXIT  # let it finish before removing $WORK

echo "== build (-O2)"
si_objects "${SI_OPT_FLAGS[@]}"
"$CC" "${SI_OPT_FLAGS[@]}" "${SI_OBJS[@]}" "$HERE/test_igemm_amx.c" "${SI_LIBS[@]}" -o "$WORK/test_igemm_amx"
echo "== run (-O2)"
"$WORK/test_igemm_amx"

wait "$ASAN_BUILD" || { echo "ASan + UBSan build failed"; exit 1; }
echo "== run (ASan + UBSan, quick cases)"
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
"$WORK/test_igemm_amx_asan" quick
