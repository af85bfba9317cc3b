"""Test-session settings: the planner's cache goes to a file of this session, not the
user's ~/.cache (its timings are measured once per layer and reused by later loads)."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_CACHE_DIR = tempfile.mkdtemp(prefix="sparseinfer-test-cache-")
os.environ.setdefault("SPARSEINFER_CACHE", os.path.join(_CACHE_DIR, "plan.tsv"))


@pytest.fixture
def c_tools():
    """The tests that build C programs (the kernels' own tests, sanitizers, the C API example)
    need cc and bash. The README's set-up has a C compiler (the package's extension is C), so a
    missing one fails these tests with its name rather than skipping them unseen."""
    missing = [t for t in ("cc", "bash") if shutil.which(t) is None]
    assert not missing, f"{' and '.join(missing)} not found on PATH: the C tests need them (README: a C compiler)"


# SPARSEINFER_TEST_MEMORY=1: each test's peak resident memory (VmHWM, reset before the test
# through /proc/self/clear_refs) in the terminal summary, largest first; keeps the default
# run's peak in view (the suite's budget is 4 GB).
if os.environ.get("SPARSEINFER_TEST_MEMORY"):
    import pytest

    _PEAKS: dict[str, int] = {}

    def _vm_hwm_kb() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        yield
        _PEAKS[item.nodeid] = _vm_hwm_kb()

    def pytest_terminal_summary(terminalreporter):
        terminalreporter.section("peak resident memory per test (VmHWM)")
        for nodeid, kb in sorted(_PEAKS.items(), key=lambda kv: -kv[1])[:15]:
            terminalreporter.write_line(f"{kb / 1048576:7.2f} GB  {nodeid}")
