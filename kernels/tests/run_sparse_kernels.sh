#!/usr/bin/env bash
# Builds the library's sources (kernels/**/si_*.c) with test_sparse_kernels.c twice and runs
# it: optimised (-O2, the full set of cases) and under AddressSanitizer + UBSan (the quick
# set). Each run checks every ISA variant the CPU has against the reference kernels.
#
#   bash kernels/tests/run_sparse_kernels.sh      (from anywhere; uses `python` or $PYTHON)
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

WORK="$(mktemp -d "${TMPDIR:-/tmp}/si-sparse.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# Only the sparse sources are -Werror here: the others belong to other tests.
"$CC" -std=c11 -O2 -fopenmp -Wall -Wextra -Werror -I"$KERNELS" -I"$MKL_INC" -fsyntax-only \
    "$KERNELS/csr/si_csr_kernels.c" "$KERNELS/csr/si_mkl_csr.c" "$KERNELS/fc/si_fc_csr.c" \
    "$HERE/test_sparse_kernels.c"

# The sanitized build goes on in the background while the optimised one builds and runs
# (the whole script has to stay well under a minute).
echo "== build (ASan + UBSan, in the background)"
( si_objects "${SI_ASAN_FLAGS[@]}"
  "$CC" "${SI_ASAN_FLAGS[@]}" "${SI_OBJS[@]}" "$HERE/test_sparse_kernels.c" "${SI_LIBS[@]}" -o "$WORK/test_sparse_asan" ) &
ASAN_BUILD=$!
trap 'wait "$ASAN_BUILD" 2>/dev/null || true; rm -rf "$WORK"' EXIT  # let it finish before removing $WORK

echo "== build (-O2)"
si_objects "${SI_OPT_FLAGS[@]}"
"$CC" "${SI_OPT_FLAGS[@]}" "${SI_OBJS[@]}" "$HERE/test_sparse_kernels.c" "${SI_LIBS[@]}" -o "$WORK/test_sparse"
echo "== run (-O2)"
"$WORK/test_sparse"

wait "$ASAN_BUILD" || { echo "ASan + UBSan build failed"; exit 1; }
echo "== run (ASan + UBSan, quick cases)"
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
"$WORK/test_sparse_asan" quick
