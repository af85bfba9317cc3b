"""The pruner's fine-tuning under MirroredStrategy on two logical CPUs (a subprocess: the
devices must be set before TensorFlow starts): the run completes, the threshold holds in the
written file, and the file runs in the C runtime as in TensorFlow. (prune.distribute's own
tests check that the distributed update equals the one-device update.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("zarr")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json, sys
from prune.pruner import PruneConfig, prune
cfg = PruneConfig("models/lenet5.npz", sys.argv[1], {"groups": [{"layers": ["fc1"], "q": {"values": [1.0]},
                  "tolerance": 0.05, "epochs": 1, "max_epochs": 1}], "final_epochs": 0},
                  dataset={"train_limit": 512, "val_limit": 300}, batch_size=64, plots=False,
                  evaluate_test=False, distribute={"strategy": "mirrored", "logical_cpus": 2})
r = prune(cfg, verbose=True)
print("RESULT " + json.dumps({"history": r["history"], "evaluation": r["evaluation"], "sigma": r["sigma"]}))
"""


def test_prune_under_mirrored_strategy(tmp_path):
    out = tmp_path / "p.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, f"pruning under MirroredStrategy failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    assert "MirroredStrategy" in p.stdout + p.stderr, "the strategy was not reported"
    r = json.loads(next(l for l in p.stdout.splitlines() if l.startswith("RESULT "))[7:])
    assert [h["accepted"] for h in r["history"]] == [True]
    from prune.keras_io import load_weights
    _, w_in = load_weights(os.path.join(ROOT, "models", "lenet5.npz"))
    _, w_out = load_weights(out)
    orig, new = w_in["fc1"][0], w_out["fc1"][0]
    if new.shape == orig.shape:
        below = np.abs(orig) < 1.0 * r["sigma"]["fc1"]
        assert (new[below] == 0).all(), "fc1: a weight below the threshold survived fine-tuning"
        assert not np.array_equal(new[~below], orig[~below]), "fc1: fine-tuning changed nothing"
    ev = r["evaluation"]
    assert ev["tf_val"] == ev["runtime_val"] and ev["tf_val"] > 0.9, ev
