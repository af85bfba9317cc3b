"""The dense batch-1 gemv (kernels/fc/si_fc_gemv.c) and the read-bandwidth probe
(kernels/util/si_bandwidth.c) against a double-precision reference: kernels/tests/test_gemv.c on
odd shapes, 1 and 2 threads, every SIMD variant the CPU has, built optimised and under
AddressSanitizer + UBSan by kernels/tests/run_gemv.sh."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "kernels", "tests", "run_gemv.sh")


@pytest.mark.usefixtures("c_tools")
def test_gemv_against_reference():
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    out = f"--- stdout\n{r.stdout[-20000:]}\n--- stderr\n{r.stderr[-20000:]}"
    assert r.returncode == 0, f"run_gemv.sh exited {r.returncode}\n{out}"
    lines = r.stdout.rstrip("\n").splitlines()
    m = re.fullmatch(r"(\d+) passed, (\d+) failed", lines[-1] if lines else "")
    assert m, f"no closing 'N passed, M failed' line\n{out}"
    assert int(m.group(2)) == 0 and int(m.group(1)) >= 200, out
    assert "FAIL" not in r.stdout, out
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, out
