"""`sparseinfer bench` (sparseinfer/bench.py): per batch size, runs and latency percentiles in
order; with --per-layer, one entry per layer with the algorithm the planner gave it at that
batch; bad arguments are usage errors. Timings themselves are not asserted (noisy machines):
only their consistency."""
from __future__ import annotations

import json
import os

import pytest

import sparseinfer
from sparseinfer.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "lenet5_pruned.npz")


def test_bench_json_per_layer(capsys):
    assert main(["bench", MODEL, "--batch", "1,3", "--time", "0.2", "--per-layer", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    layers = sparseinfer.load(MODEL).layers()
    assert r["model"] == MODEL and r["isa"] == sparseinfer.isa() and r["threads"] >= 1
    assert [b["batch"] for b in r["batches"]] == [1, 3]
    for b in r["batches"]:
        assert b["runs"] >= 10, b
        assert 0 < b["min_ms"] <= b["median_ms"] <= b["p90_ms"] <= b["p99_ms"], b
        assert b["images_per_s"] == pytest.approx(b["batch"] / (b["median_ms"] / 1e3))
        want = [(L["name"], (L["algo_batch1"] if b["batch"] == 1 else L["algo_batchn"]) or None) for L in layers]
        assert [(L["name"], L["algo"]) for L in b["layers"]] == want, f"batch {b['batch']}"
        assert all(L["median_ms"] >= 0 for L in b["layers"])
        weighted = [L for L, info in zip(b["layers"], layers) if info["weight_shape"]]
        assert all(L["median_ms"] > 0 for L in weighted), f"batch {b['batch']}: a weighted layer read 0 ms"


def test_bench_text(capsys):
    assert main(["bench", MODEL, "--time", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "median ms" in out and "images/s" in out and sparseinfer.isa() in out
    assert "per layer" not in out


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "batch sizes must be integers >= 1"),
    (["--batch", "1,x"], "comma-separated integers"),
])
def test_bench_bad_arguments(capsys, args, message):
    assert main(["bench", MODEL, *args]) == 2
    assert message in capsys.readouterr().err


def test_bench_bad_time():
    from sparseinfer.bench import benchmark

    with pytest.raises(ValueError, match="--time must be > 0"):
        benchmark(MODEL, [1], seconds=0)
