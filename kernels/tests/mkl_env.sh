# Sourced by the build-and-run scripts of kernels/tests and bench: sets MKL_INC and MKL_LIB
# to the directories of mkl.h and libmkl_rt.so.3 from the PyPI wheels (mkl-include, mkl),
# found through importlib.metadata as setup.py finds them. Uses $PYTHON (default python).
PYTHON="${PYTHON:-python}"

si_dist_dir() { # dist file: directory of that file of an installed distribution
    "$PYTHON" - "$1" "$2" <<'PY'
import importlib.metadata as md, os, sys
dist, name = sys.argv[1:]
for f in md.files(dist) or []:
    if os.path.basename(str(f)) == name:
        print(os.path.dirname(os.path.realpath(str(f.locate()))))
        break
else:
    sys.exit(f"{name} not found in the {dist} distribution (pip install {dist})")
PY
}

MKL_INC="$(si_dist_dir mkl-include mkl.h)"
MKL_LIB="$(si_dist_dir mkl libmkl_rt.so.3)"

# The flags and libraries the test scripts build with: one list each, so that si_objects'
# cache serves every script that builds with them. KERNELS: the kernels/ folder (the scripts
# set it; else this file's parent folder).
KERNELS="${KERNELS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
SI_OPT_FLAGS=(-std=c11 -O2 -g -fopenmp -I"$KERNELS" -I"$MKL_INC")
SI_ASAN_FLAGS=(-std=c11 -O1 -g -fopenmp -fsanitize=address,undefined -fno-sanitize-recover=undefined
               -fno-omit-frame-pointer -I"$KERNELS" -I"$MKL_INC")
SI_LIBS=(-L"$MKL_LIB" -l:libmkl_rt.so.3 -Wl,-rpath,"$MKL_LIB" -lm -lz)

# The library's sources compiled once per set of flags and shared by the test scripts
# (run_igemm.sh, run_igemm_amx.sh, run_int8_ops.sh, run_sparse_kernels.sh and run_gemv.sh build
# with SI_OPT_FLAGS or SI_ASAN_FLAGS), each file on its own and as many at once as there are cores.
#   si_objects FLAGS...   (needs KERNELS and CC) sets SI_OBJS to the objects of every
#                         kernels/**/si_*.c, the tests excepted; returns 1 if there are none or
#                         one does not compile
# The cache ($SI_OBJ_CACHE, default $TMPDIR/sparseinfer-objs) is keyed by the flags, the
# compiler's version and the contents of every .c and .h under kernels/ (tests excepted), so an
# edit anywhere builds afresh; a build goes to a private directory renamed into place when
# complete, so a concurrent or interrupted one never leaves half a set.
si_objects() {
    local key dir tmp src rel obj fail=0 jobs sources=() pids=()
    mapfile -t sources < <(find "$KERNELS" -path "$KERNELS/tests" -prune -o -name 'si_*.c' -print | sort)
    [ "${#sources[@]}" -gt 0 ] || { echo "si_objects: no kernels/**/si_*.c sources under $KERNELS" >&2; return 1; }
    key="$({ printf '%s\n' "$@"; "$CC" --version 2>&1 | head -1
             find "$KERNELS" -path "$KERNELS/tests" -prune -o \( -name '*.c' -o -name '*.h' \) -print | sort |
                 while read -r f; do printf '%s\n' "$f"; cat "$f"; done; } | sha1sum | cut -c1-20)" || return 1
    dir="${SI_OBJ_CACHE:-${TMPDIR:-/tmp}/sparseinfer-objs}/$key"
    if [ ! -f "$dir/complete" ]; then
        mkdir -p "$(dirname "$dir")" || return 1
        tmp="$(mktemp -d "$dir.part.XXXXXX")" || return 1
        jobs="$(nproc 2>/dev/null || echo 2)"
        for src in "${sources[@]}"; do
            rel="${src#"$KERNELS"/}"
            obj="$tmp/${rel//\//_}"
            "$CC" "$@" -c "$src" -o "${obj%.c}.o" &
            pids+=($!)
            if [ "${#pids[@]}" -ge "$jobs" ]; then wait "${pids[0]}" || fail=1; pids=("${pids[@]:1}"); fi
        done
        for p in "${pids[@]}"; do wait "$p" || fail=1; done
        if [ "$fail" -ne 0 ]; then rm -rf "$tmp"; echo "si_objects: compiling the library with $* failed" >&2; return 1; fi
        touch "$tmp/complete"
        mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp" # another build got there first: same objects
    fi
    SI_OBJS=("$dir"/*.o)
}
