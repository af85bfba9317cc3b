"""The pruner under tf.distribute strategies, each run in subprocesses (devices and clusters
must be set before TensorFlow starts):

* MirroredStrategy on two logical CPUs: the run completes, the threshold holds in the
  written file, and the file runs in the C runtime as in TensorFlow;
* two `MultiWorkerMirroredStrategy` workers on localhost, each running the same pruning
  run: only the chief writes, and its model file equals, within float tolerance, the file
  of the same run on one device through the same training loop (MirroredStrategy with one
  device). prune.distribute's own tests check single fine-tuning steps the same way."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.tf_util import free_ports

pytest.importorskip("tensorflow")
pytest.importorskip("zarr")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json, sys
from prune.pruner import PruneConfig, prune
cfg = PruneConfig("models/lenet5.npz", sys.argv[1], {"groups": [
                  {"layers": ["fc1"], "q": {"values": [0.5, 1.0]}, "tolerance": 0.05, "epochs": 1, "max_epochs": 1},
                  {"layers": ["conv2"], "q": {"values": [0.5]}, "tolerance": 0.05, "epochs": 1, "max_epochs": 1}],
                  "final_epochs": 1},
                  dataset={"train_limit": 512, "val_limit": 300}, batch_size=64, plots=False,
                  evaluate_test=False, distribute=json.loads(sys.argv[2]))
r = prune(cfg, verbose=True)
print("RESULT " + json.dumps({k: r.get(k) for k in ("history", "evaluation", "sigma", "chief")}))
"""


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _result(stdout: str) -> dict:
    return json.loads(next(l for l in stdout.splitlines() if l.startswith("RESULT "))[7:])


def test_prune_under_mirrored_strategy(tmp_path):
    out = tmp_path / "p.npz"
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(out), '{"strategy": "mirrored", "logical_cpus": 2}'],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"pruning under MirroredStrategy failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    assert "MirroredStrategy" in p.stdout + p.stderr, "the strategy was not reported"
    r = _result(p.stdout)
    # fc1's two steps: the second restarts the first one's trainer (MaskedTrainer.restart)
    assert [h["accepted"] for h in r["history"]] == [True, True, True]
    from prune.keras_io import load_weights
    _, w_in = load_weights(os.path.join(ROOT, "models", "lenet5.npz"))
    _, w_out = load_weights(out)
    orig, new = w_in["fc1"][0], w_out["fc1"][0]
    if new.shape == orig.shape:
        # the first step's cut (|w| < 0.5 sigma of the original weights) holds through the second
        below = np.abs(orig) < 0.5 * r["sigma"]["fc1"]
        assert (new[below] == 0).all(), "fc1: a weight below the first threshold survived fine-tuning"
        assert not np.array_equal(new[~below], orig[~below]), "fc1: fine-tuning changed nothing"
        # and the file holds the second step's mask (|w| < 1.0 sigma of the fine-tuned weights)
        dens = r["history"][1]["density"]["fc1"]
        assert np.count_nonzero(new) == round(dens * new.size), (np.count_nonzero(new), dens * new.size)
        assert 0.25 < dens < 0.40, f"fc1: density {dens:.3f} after q 1.0 (2 Phi(-1) = 32%)"
    ev = r["evaluation"]
    assert ev["tf_val"] == ev["runtime_val"] and ev["tf_val"] > 0.9, ev


def test_prune_two_workers_equals_one_device(tmp_path):
    one = tmp_path / "one.npz"
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(one), '{"strategy": "mirrored"}'],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"one-device run failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    out = tmp_path / "mw.npz"
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), '{"strategy": "multi_worker", "timeout_seconds": 120}'],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})))
             for i in range(2)]
    outs, deadline = [], time.time() + 600
    try:
        for q in procs:
            outs.append(q.communicate(timeout=max(1.0, deadline - time.time())))
    finally:
        for q in procs:
            if q.poll() is None:
                q.kill()
                q.wait()
    shown = "\n".join(f"--- worker {i} (exit {q.returncode})\n{o[0][-2000:]}\n{o[1][-2000:]}"
                      for i, (q, o) in enumerate(zip(procs, outs)))
    assert all(q.returncode == 0 for q in procs) and out.exists(), shown
    chief, other = _result(outs[0][0]), _result(outs[1][0])
    assert chief["chief"] is None and other["chief"] is False, shown  # worker 1 did not export
    assert "the chief worker exports" in outs[1][0], shown
    ref = _result(p.stdout)
    assert [h["accepted"] for h in chief["history"]] == [h["accepted"] for h in ref["history"]], shown
    assert [h["density"] for h in chief["history"]] == [h["density"] for h in ref["history"]], shown
    from prune.keras_io import load_weights
    _, w1 = load_weights(one)
    _, w2 = load_weights(out)
    assert sorted(w1) == sorted(w2)
    for name in w1:
        for j, what in enumerate(("kernel", "bias")):
            a, b = w1[name][j], w2[name][j]
            if a is None:
                continue
            diff = np.abs(a - b)
            i = np.unravel_index(int(diff.argmax()), diff.shape)
            print(f"{name} {what}: max |one device - two workers| {diff.max():.2e}")
            # Adam on float32, 3 steps x 1 epoch + 1 final epoch of 8 batches: rounding only
            assert diff.max() <= 2e-5 + 1e-4 * np.abs(a).max(), f"{name} {what}: {a[i]} vs {b[i]} at {i}"
            assert ((a == 0) == (b == 0)).all(), f"{name} {what}: different zeros"
