"""The C loader test (kernels/tests/test_loader.c) on every good, bad and fuzzed model file, and the
threads test (test_threads.c: CPU affinity lifted after context creation, one model shared by 4 threads),
built with AddressSanitizer, LeakSanitizer and UBSan by kernels/tests/run_sanitized.sh."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "kernels", "tests", "run_sanitized.sh")


@pytest.mark.usefixtures("c_tools")
def test_loader_under_sanitizers():
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    out = f"--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    assert r.returncode == 0, f"run_sanitized.sh exited {r.returncode}\n{out}"
    # the loader test's summary, then the threads/affinity test's
    sums = re.findall(r"^(\d+) passed, (\d+) failed$", r.stdout, re.M)
    assert len(sums) == 2, f"expected two 'N passed, M failed' lines (loader, threads)\n{out}"
    assert all(int(f) == 0 for _, f in sums) and int(sums[0][0]) >= 40 and int(sums[1][0]) >= 16, out
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, out


@pytest.mark.usefixtures("c_tools")
def test_threads_under_thread_sanitizer():
    """The threads test under ThreadSanitizer (kernels/tests/run_tsan.sh: clang-14 and LLVM's
    OpenMP, installed with apt-get if missing): the process's first loads from 4 threads at
    once (the CRC tables' one-time set-up), then one model shared by 4 threads with their own
    contexts, against the single-thread results."""
    if shutil.which("clang-14") is None and shutil.which("apt-get") is None:
        pytest.skip("clang-14 is not installed and apt-get is not available to install it")
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", os.path.join(ROOT, "kernels", "tests", "run_tsan.sh")], capture_output=True,
                       text=True, env=env, timeout=900)
    out = f"--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    assert r.returncode == 0, f"run_tsan.sh exited {r.returncode}\n{out}"
    m = re.search(r"^(\d+) passed, (\d+) failed$", r.stdout, re.M)
    assert m and int(m.group(2)) == 0 and int(m.group(1)) >= 20, out
    assert "ThreadSanitizer" not in r.stderr.replace("TSAN_OPTIONS", ""), out
