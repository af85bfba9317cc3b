"""The C loader test (kernels/tests/test_loader.c) on every good, bad and fuzzed model file,
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


@pytest.mark.skipif(shutil.which("cc") is None or shutil.which("bash") is None, reason="needs cc and bash")
def test_loader_under_sanitizers():
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    out = f"--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    assert r.returncode == 0, f"run_sanitized.sh exited {r.returncode}\n{out}"
    m = re.search(r"^(\d+) passed, (\d+) failed$", r.stdout, re.M)
    assert m, f"no closing 'N passed, M failed' line\n{out}"
    assert int(m.group(2)) == 0 and int(m.group(1)) >= 40, out
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, out
