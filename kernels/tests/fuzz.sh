#!/usr/bin/env bash
# Builds the libFuzzer targets of kernels/tests/fuzz/ with Debian's clang-14 under ASan and
# UBSan (the library compiled with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION: no CRC-32
# check) and runs each for SECONDS, one after another, on a copy of its seed corpus:
#
#   bash kernels/tests/fuzz.sh [SECONDS [TARGET...]]    (SECONDS default 10; TARGET: loader json npz)
#
# Targets: loader (the whole load from a buffer, then a run when the model is small), json
# (the manifest parser alone), npz (the ZIP/.npy reader alone). Seeds: fuzz/corpus/<target>/
# (fuzz/make_seeds.py writes them), dictionary: fuzz/sparseinfer.dict. The committed seeds
# are never written: each run grows a copy in a temporary directory. Per target it prints the
# executions, libFuzzer's final coverage (cov: edges, ft: features) and what it found; a
# crash, leak, timeout or OOM leaves its input in a kept directory (printed) and makes the
# exit status non-zero. One process, one thread: no -jobs or -workers.
#
# Environment: PYTHON (for mkl_env.sh; default python), SI_FUZZ_FLAGS (extra libFuzzer
# flags for every target), SI_FUZZ_KEEP=1 (keep the build and grown corpora; path printed).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KERNELS="$(dirname "$HERE")"
FUZZ="$HERE/fuzz"
PYTHON="${PYTHON:-python}"
SECS="${1:-10}"
shift || true
TARGETS=("$@")
[ "${#TARGETS[@]}" -gt 0 ] || TARGETS=(loader json npz)
[[ "$SECS" =~ ^[0-9]+$ ]] && [ "$SECS" -gt 0 ] || { echo "usage: fuzz.sh [SECONDS [TARGET...]]" >&2; exit 2; }

if ! command -v clang-14 >/dev/null || ! compgen -G "/usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null ||
    [ ! -e /usr/lib/llvm-14/lib/libomp.so ]; then
    echo "== installing clang-14 libclang-rt-14-dev libomp-14-dev (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang-14 libclang-rt-14-dev libomp-14-dev >/dev/null
fi

# shellcheck source=kernels/tests/mkl_env.sh
source "$HERE/mkl_env.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/si-fuzz.XXXXXX")"
if [ "${SI_FUZZ_KEEP:-0}" = 1 ]; then echo "== work directory (kept): $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi

CFLAGS=(-std=c11 -O1 -gline-tables-only -fno-omit-frame-pointer -fopenmp=libomp -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
        -fno-sanitize-recover=undefined -Wall -Wextra -Werror -Wno-unused-command-line-argument
        -I"$KERNELS" -I"$MKL_INC" -I/usr/lib/llvm-14/include)

echo "== build (clang-14, libFuzzer + ASan + UBSan)"
# the library's objects as the other test scripts build theirs (mkl_env.sh's si_objects: as
# many files at once as there are cores, cached by flags, compiler and sources)
CC=clang-14 si_objects "${CFLAGS[@]}" -fsanitize=fuzzer-no-link,address,undefined || exit 1
OBJS=("${SI_OBJS[@]}")
for t in "${TARGETS[@]}"; do
    [ -f "$FUZZ/fuzz_$t.c" ] || { echo "no target '$t' (kernels/tests/fuzz/fuzz_$t.c)"; exit 2; }
    clang-14 "${CFLAGS[@]}" -fsanitize=fuzzer,address,undefined "$FUZZ/fuzz_$t.c" "${OBJS[@]}" \
        -L/usr/lib/llvm-14/lib -Wl,-rpath,/usr/lib/llvm-14/lib \
        -L"$MKL_LIB" -l:libmkl_rt.so.3 -Wl,-rpath,"$MKL_LIB" -lm -lz -lpthread -o "$WORK/fuzz_$t"
done

# One thread everywhere (the targets also call si_set_num_threads(1)); MKL's threading layer
# on LLVM's OpenMP as in run_tsan.sh; no plan cache; no algorithm pinned from the shell.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 SPARSEINFER_MKL_THREADING=intel SPARSEINFER_CACHE=""
unset SPARSEINFER_ALGO SPARSEINFER_PLAN
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=0:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

status=0
printf '%-8s %10s %8s %8s %8s %8s  %s\n' target execs exec/s cov ft corpus found
for t in "${TARGETS[@]}"; do
    mkdir -p "$WORK/corpus/$t" "$WORK/artifacts/$t"
    [ -d "$FUZZ/corpus/$t" ] && cp -r "$FUZZ/corpus/$t/." "$WORK/corpus/$t/"
    log="$WORK/$t.log"
    rc=0
    # shellcheck disable=SC2086
    "$WORK/fuzz_$t" -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 \
        -dict="$FUZZ/sparseinfer.dict" -artifact_prefix="$WORK/artifacts/$t/" ${SI_FUZZ_FLAGS:-} \
        "$WORK/corpus/$t" >"$log" 2>&1 || rc=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    last="$(grep -E '^#[0-9]+' "$log" | tail -1 || true)"
    cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")"
    ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")"
    corp="$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")"
    mapfile -t found < <(find "$WORK/artifacts/$t" -type f -printf '%f\n' | sort)
    what="${found[*]:-none}"
    if [ "$rc" -ne 0 ] || [ "${#found[@]}" -gt 0 ]; then
        status=1
        keep="$(mktemp -d "${TMPDIR:-/tmp}/si-fuzz-found.XXXXXX")"
        cp -r "$WORK/artifacts/$t/." "$keep/" 2>/dev/null || true
        cp "$log" "$keep/"
        what="exit $rc: ${what} (kept in $keep)"
    fi
    printf '%-8s %10s %8s %8s %8s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$what"
    if [ "$rc" -ne 0 ]; then grep -E 'ERROR|SUMMARY|runtime error|==[0-9]+==|^    #[0-9] ' "$log" | head -30 || true; fi
done
exit "$status"
