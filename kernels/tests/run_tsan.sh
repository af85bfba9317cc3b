#!/usr/bin/env bash
# Builds the library with the threads test (test_threads.c) under ThreadSanitizer, using
# Debian's clang-14 and LLVM's OpenMP runtime, and runs its shared-model part: one model,
# 4 threads each with its own context, batches 1-3, outputs against the single-thread run.
#
#   bash kernels/tests/run_tsan.sh          (installs clang-14, libomp-14-dev if missing)
#
# Each worker runs its kernels on one thread (--kernel-threads 1): the OpenMP runtime and
# MKL are not built with ThreadSanitizer, so TSan cannot see their synchronisation and would
# report their internals; with one kernel thread no OpenMP team is formed (every parallel
# region of the library has if (nt > 1)) and MKL runs sequentially, so what TSan checks is
# the library's own sharing between the caller's threads. Suppressions: tsan.supp (MKL only).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KERNELS="$(dirname "$HERE")"
PYTHON="${PYTHON:-python}"

if ! command -v clang-14 >/dev/null || [ ! -e /usr/lib/llvm-14/lib/libomp.so ]; then
    echo "== installing clang-14 libomp-14-dev (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang-14 libclang-rt-14-dev libomp-14-dev >/dev/null
fi

# shellcheck source=kernels/tests/mkl_env.sh
source "$HERE/mkl_env.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/si-tsan.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

mapfile -t SOURCES < <(find "$KERNELS" -path "$KERNELS/tests" -prune -o -name 'si_*.c' -print | sort)

echo "== build (TSan, clang-14)"
clang-14 -std=c11 -O1 -g -fopenmp=libomp -fsanitize=thread -fno-omit-frame-pointer -Wall -Wextra -Werror \
    -Wno-unused-command-line-argument -I"$KERNELS" -I"$MKL_INC" -I/usr/lib/llvm-14/include \
    "${SOURCES[@]}" "$HERE/test_threads.c" \
    -L/usr/lib/llvm-14/lib -Wl,-rpath,/usr/lib/llvm-14/lib \
    -L"$MKL_LIB" -l:libmkl_rt.so.3 -Wl,-rpath,"$MKL_LIB" -lm -lz -lpthread -o "$WORK/test_threads"

echo "== cases"
"$PYTHON" "$HERE/make_cases.py" "$WORK/cases" >/dev/null

echo "== run"
export SPARSEINFER_MKL_THREADING=intel  # MKL's threading layer on LLVM's OpenMP (libomp), as this build links
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$HERE/tsan.supp"
"$WORK/test_threads" "$WORK/cases" --no-affinity --kernel-threads 1
