"""CI smoke of the libFuzzer targets (kernels/tests/fuzz/): kernels/tests/fuzz.sh builds them
with clang-14 under ASan and UBSan and runs each for 5 seconds on its seed corpus. Any crash,
leak, timeout or OOM fails the test. Skipped only when clang-14 and its libFuzzer runtime
are missing and cannot be installed."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "kernels", "tests", "fuzz.sh")
TARGETS = ("loader", "json", "npz")


def _clang_fuzzer() -> str | None:
    """None if clang-14 with libFuzzer and LLVM's OpenMP is usable (installing it with
    apt-get if missing, as fuzz.sh would), else why not."""
    def present() -> bool:
        return (shutil.which("clang-14") is not None
                and bool(glob.glob("/usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a"))
                and os.path.exists("/usr/lib/llvm-14/lib/libomp.so"))
    if present():
        return None
    if shutil.which("apt-get") is None:
        return "clang-14 with libFuzzer is not installed and apt-get is not available"
    r = subprocess.run(["apt-get", "install", "-y", "-q", "clang-14", "libclang-rt-14-dev", "libomp-14-dev"],
                       capture_output=True, text=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if r.returncode != 0 or not present():
        return f"clang-14 with libFuzzer cannot be installed (apt-get exited {r.returncode}: {r.stderr.strip()[-200:]})"
    return None


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_fuzz_targets_smoke():
    why = _clang_fuzzer()
    if why:
        pytest.skip(why)
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", SCRIPT, "5"], capture_output=True, text=True, env=env, timeout=300)
    out = f"--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    assert r.returncode == 0, f"fuzz.sh exited {r.returncode}\n{out}"
    for t in TARGETS:
        m = re.search(rf"^{t}\s+(\d+)\s+\S+\s+(\d+)\s+(\d+)\s+\d+\s+none$", r.stdout, re.M)
        assert m, f"no clean summary line for target {t}\n{out}"
        execs, cov = int(m.group(1)), int(m.group(2))
        assert execs > 1000 and cov > 100, f"target {t}: {execs} executions, cov {cov}: did it run?\n{out}"
