"""The sparse kernels (kernels/csr/, kernels/fc/si_fc_csr.c and every registry entry) against a double
precision dense reference, optimised and under ASan + UBSan, by
kernels/tests/run_sparse_kernels.sh (C test: kernels/tests/test_sparse_kernels.c)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "kernels", "tests", "run_sparse_kernels.sh")


@pytest.mark.usefixtures("c_tools")
def test_sparse_kernels():
    env = dict(os.environ, PYTHON=sys.executable)
    t0 = time.monotonic()
    r = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    elapsed = time.monotonic() - t0
    out = f"--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    assert r.returncode == 0, f"run_sparse_kernels.sh exited {r.returncode}\n{out}"
    runs = re.findall(r"^(\d+) passed, (\d+) failed$", r.stdout, re.M)
    assert len(runs) == 2, f"expected two closing 'N passed, M failed' lines (optimised, sanitized)\n{out}"
    for passed, failed in runs:
        assert int(failed) == 0 and int(passed) >= 100, out
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, out
    # a guard against a runaway build or hang (the subprocess timeout is 300 s), not a speed check:
    # the script took 42-48 s on a quiet machine and 91-102 s beside a TensorFlow job
    assert elapsed < 240, f"took {elapsed:.1f} s"
