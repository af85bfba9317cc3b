"""The int8 kernels (issue 12) against their references, bit for bit on every ISA variant the
CPU has, optimised and under ASan + UBSan: kernels/tests/run_igemm.sh (ops/si_igemm.c: VNNI,
AVX-VNNI, AVX2 vpmaddwd, portable) and kernels/tests/run_int8_ops.sh (csr/si_csr_i8.c and the
uint8 activation ops of ops/si_ops_u8.c); kernels/tests/run_igemm_amx.sh: the AMX GEMM where the
CPU and the OS have AMX (elsewhere it checks the kernel says it is unavailable)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("cc") is None or shutil.which("bash") is None, reason="needs cc and bash")
@pytest.mark.parametrize("script", ["run_igemm.sh", "run_igemm_amx.sh", "run_int8_ops.sh"])
def test_int8_kernels(script):
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", os.path.join(ROOT, "kernels", "tests", script)], capture_output=True, text=True,
                       env=env, timeout=600)
    out = f"--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}"
    assert r.returncode == 0, f"{script} exited {r.returncode}\n{out}"
    runs = re.findall(r"^(\d+) passed, (\d+) failed", r.stdout, re.M)
    assert len(runs) == 2, f"expected two 'N passed, M failed' lines (optimised, sanitized)\n{out}"
    least = 1 if script == "run_igemm_amx.sh" else 100  # without AMX: only the "unavailable" checks
    for passed, failed in runs:
        assert int(failed) == 0 and int(passed) >= least, out
