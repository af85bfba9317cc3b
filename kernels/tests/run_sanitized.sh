#!/usr/bin/env bash
# Builds the library (kernels/si_*.c and its subfolders) with the loader test and the
# threads/affinity test under AddressSanitizer (with LeakSanitizer) and UBSan, writes the
# test cases with make_cases.py and runs both on them. The closing line is the threads
# test's "N passed, M failed"; the loader test's comes before it (set -e: either failing
# fails the script).
#
#   bash kernels/tests/run_sanitized.sh        (from anywhere; uses `python` or $PYTHON)
#
# MKL comes from the PyPI wheels (mkl, mkl-include), found through importlib.metadata as
# setup.py finds them. Exit status: the test's (non-zero on any failure).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KERNELS="$(dirname "$HERE")"
PYTHON="${PYTHON:-python}"
CC="${CC:-cc}"

# shellcheck source=kernels/tests/mkl_env.sh
source "$HERE/mkl_env.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/si-sanitized.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "== build (ASan + UBSan)"
FLAGS=("${SI_ASAN_FLAGS[@]}" -Wall -Wextra -Werror)
si_objects "${FLAGS[@]}" # the library once (mkl_env.sh's cache), for both tests
"$CC" "${FLAGS[@]}" "${SI_OBJS[@]}" "$HERE/test_loader.c" "${SI_LIBS[@]}" -o "$WORK/test_loader"
"$CC" "${FLAGS[@]}" "${SI_OBJS[@]}" "$HERE/test_threads.c" "${SI_LIBS[@]}" -lpthread -o "$WORK/test_threads"

echo "== cases"
"$PYTHON" "$HERE/make_cases.py" "$WORK/cases"

echo "== run"
# LeakSanitizer reports nothing inside MKL here (MKL 2026.2 from PyPI), so there are no
# suppressions; if a future MKL leaks at exit, suppress only its own frames
# (leak:libmkl_*, leak:libiomp5) in a file given by LSAN_OPTIONS=suppressions=..., never ours.
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
"$WORK/test_loader" "$WORK/cases"
# CPU affinity lifted after the contexts were made, and one model shared by 4 threads.
"$WORK/test_threads" "$WORK/cases"
