"""Builds the Cython extension sparseinfer._core and the shared library libsparseinfer.so
from the same kernels/ sources, both linked against MKL from PyPI with an rpath.

MKL's PyPI wheels ship versioned libraries only (libmkl_rt.so.3), so we link with
-l:libmkl_rt.so.3. They are found through importlib.metadata, which works both in pip's
isolated build environment and in a plain one. At run time MKL is the `mkl` dependency in
the target environment: sys.prefix/lib, or $ORIGIN-relative for a relocated install.
"""
from __future__ import annotations

import glob
import importlib.metadata as md
import os
import shutil
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
# Every kernels/ source but its tests (kernels/tests/), in a stable order.
KERNEL_SOURCES = sorted(p for p in glob.glob(os.path.join("kernels", "**", "si_*.c"), recursive=True)
                        if os.sep + "tests" + os.sep not in p)
# OpenMP: the runtime's own kernels and MKL (told to use its GNU threading layer at first
# use, see si_runtime.c) share one libgomp thread pool.
CFLAGS = ["-std=c11", "-O3", "-fPIC", "-fvisibility=hidden", "-fopenmp", "-Wall", "-Wextra", "-DSI_BUILDING_LIBRARY"]


def _dist_file_dir(dist: str, filename: str) -> str:
    try:
        files = md.files(dist) or []
    except md.PackageNotFoundError:
        files = []
    for f in files:
        if os.path.basename(str(f)) == filename:
            return os.path.dirname(os.path.abspath(str(f.locate())))
    for base in (sys.prefix, os.environ.get("MKLROOT", "")):
        for sub in ("include", "lib"):
            cand = os.path.join(base, sub, filename)
            if base and os.path.exists(cand):
                return os.path.dirname(cand)
    raise RuntimeError(f"sparseinfer build: cannot find {filename} (install {dist} from PyPI)")


MKL_INCLUDE = _dist_file_dir("mkl-include", "mkl.h")


def _check_zlib() -> None:
    """The loader inflates deflated members (compact model files) with zlib: fail here, with
    the fix, rather than in the middle of a compile."""
    dirs = [os.path.join(sys.prefix, "include"), "/usr/include", "/usr/local/include"]
    dirs += [d for d in os.environ.get("CPATH", "").split(os.pathsep) if d]
    if not any(os.path.exists(os.path.join(d, "zlib.h")) for d in dirs):
        raise RuntimeError("sparseinfer build: zlib.h not found (install zlib's headers: apt-get install zlib1g-dev, "
                           "dnf install zlib-devel, or conda install zlib)")


_check_zlib()
MKL_LIB = _dist_file_dir("mkl", "libmkl_rt.so.3")
RUNTIME_MKL_LIB = os.path.join(sys.prefix, "lib")


def _link_args(depth: int) -> list[str]:
    """rpaths: the target environment's lib, $ORIGIN-relative (depth levels up from the
    object to prefix/lib), and the build-time MKL for an in-tree build."""
    rel = "$ORIGIN/" + "/".join([".."] * depth)
    paths = [RUNTIME_MKL_LIB, rel]
    if "pip-build-env" not in MKL_LIB:  # pip's isolated build env is gone by run time
        paths.append(MKL_LIB)
    args = [f"-L{MKL_LIB}", "-l:libmkl_rt.so.3", "-fopenmp", "-lm", "-lz"]
    seen = []
    for p in paths:
        if p not in seen:
            seen.append(p)
            args.append(f"-Wl,-rpath,{p}")
    return args + ["-Wl,--enable-new-dtags"]


class BuildWithLibrary(build_ext):
    """Also builds lib/libsparseinfer.so and installs include/sparseinfer.h beside the
    extension, so a C program can link the runtime without Python."""

    def run(self) -> None:
        super().run()
        pkg_dir = os.path.dirname(self.get_ext_fullpath("sparseinfer._core"))
        lib_dir = os.path.join(pkg_dir, "lib")
        inc_dir = os.path.join(pkg_dir, "include")
        os.makedirs(lib_dir, exist_ok=True)
        os.makedirs(inc_dir, exist_ok=True)
        shutil.copy(os.path.join("kernels", "sparseinfer.h"), inc_dir)
        objects = self.compiler.compile(KERNEL_SOURCES, output_dir=os.path.join(self.build_temp, "libsparseinfer"),
                                        include_dirs=["kernels", MKL_INCLUDE], extra_postargs=CFLAGS)
        # site-packages/sparseinfer/lib -> prefix/lib is four levels up.
        self.compiler.link_shared_object(objects, "libsparseinfer.so", output_dir=lib_dir,
                                         extra_postargs=_link_args(4) + ["-Wl,-soname,libsparseinfer.so"])
        self._extra_outputs = [os.path.join(lib_dir, "libsparseinfer.so"), os.path.join(inc_dir, "sparseinfer.h")]

    def get_outputs(self) -> list[str]:
        return super().get_outputs() + list(getattr(self, "_extra_outputs", []))


def _extensions() -> list[Extension]:
    from Cython.Build import cythonize

    ext = Extension(
        "sparseinfer._core",
        sources=["sparseinfer/_core.pyx"] + KERNEL_SOURCES,
        include_dirs=["kernels", MKL_INCLUDE],
        extra_compile_args=[f for f in CFLAGS if f not in ("-Wextra", "-std=c11")] + ["-std=c11"],
        extra_link_args=_link_args(3),  # site-packages/sparseinfer -> prefix/lib
    )
    return cythonize([ext], compiler_directives={"language_level": "3"})


def _version() -> str:
    """The version lives in one place, kernels/sparseinfer.h (SI_VERSION_MAJOR / _MINOR),
    which the C library reports (si_version) and the package's metadata takes from here."""
    import re

    with open(os.path.join(HERE, "kernels", "sparseinfer.h")) as f:
        text = f.read()
    parts = [re.search(rf"#define SI_VERSION_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR")]
    if not all(parts):
        raise RuntimeError("kernels/sparseinfer.h: SI_VERSION_MAJOR / SI_VERSION_MINOR not found")
    return ".".join(m.group(1) for m in parts)


setup(version=_version(), ext_modules=_extensions(), cmdclass={"build_ext": BuildWithLibrary})
