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
