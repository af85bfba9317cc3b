"""Test-session settings: the planner's cache goes to a file of this session, not the
user's ~/.cache (its timings are measured once per layer and reused by later loads)."""
from __future__ import annotations

import os
import tempfile

_CACHE_DIR = tempfile.mkdtemp(prefix="sparseinfer-test-cache-")
os.environ.setdefault("SPARSEINFER_CACHE", os.path.join(_CACHE_DIR, "plan.tsv"))
