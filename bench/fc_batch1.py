#!/usr/bin/env python
"""VGG19's fc6 and fc7 at 4% density, batch 1: the bandwidth-bound dense path against the
sparse one, with the machine's read bandwidth measured in the same run.

    python bench/fc_batch1.py [--pairs 20] [--density 0.04] [--json PATH]

Each of `--pairs` rounds times dense, then sparse, then a 1 GiB streaming read (median of a
few calls each), so the three see the same machine state; the ratios are taken round by
round and their median reported (this VM's speed drifts by tens of percent within minutes).
Weights: He-scaled random, pruned by magnitude. Outputs are checked against each other.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import sparseinfer  # noqa: E402
from sparseinfer import _core  # noqa: E402
from sparseinfer.format import write_model  # noqa: E402

LAYERS = {"fc6": (4096, 25088), "fc7": (4096, 4096)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--density", type=float, default=0.04)
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "fc_batch1.json"))
    a = p.parse_args(argv)
    rng = np.random.default_rng(6)
    out = {"density": a.density, "pairs": a.pairs, "cpu": sparseinfer.cpu(), "isa": sparseinfer.isa(), "layers": {}}
    print(f"CPU {out['cpu']}, kernels ISA {out['isa']}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (rows, cols) in LAYERS.items():
            w = (rng.standard_normal((rows, cols), dtype=np.float32) * np.sqrt(2.0 / cols)).astype(np.float32)
            k = int(round(a.density * w.size))
            thr = np.partition(np.abs(w).ravel(), w.size - k)[w.size - k]
            w[np.abs(w) < thr] = 0
            path = os.path.join(tmp, f"{name}.npz")
            write_model(path, [{"name": name, "type": "dense", "W": w, "b": None}], {"shape": [1, 1, cols]})
            dense = sparseinfer.load(path, exec="dense")
            sparse = sparseinfer.load(path)  # the runtime's own choice
            assert sparse.layers()[0]["exec_batch1"] == "sparse", sparse.layers()[0]["why"]
            res_pick = sparse.layers()[0]["algo_batch1"]
            x = rng.random((1, 1, 1, cols), dtype=np.float32)
            rounds = []
            for i in range(a.pairs):
                td, yd = dense.time_runs(x, repeats=3, warmup=1)
                ts, ys = sparse.time_runs(x, repeats=5, warmup=1)
                bw = _core.read_bandwidth(1 << 30, 3)
                err = float(np.abs(ys - yd).max() / np.abs(yd).max())
                rounds.append({"dense_ms": float(np.median(td)) * 1e3, "sparse_ms": float(np.median(ts)) * 1e3,
                               "read_gbs": bw, "err": err})
                print(f"{name} round {i + 1}/{a.pairs}: dense {rounds[-1]['dense_ms']:.3f} ms, sparse "
                      f"{rounds[-1]['sparse_ms']:.3f} ms, read {bw:.1f} GB/s", file=sys.stderr, flush=True)
            dense_gbs = [4 * rows * cols / r["dense_ms"] * 1e-6 for r in rounds]
            res = {
                "rows": rows, "cols": cols, "nnz": int(np.count_nonzero(w)), "sparse_algo": res_pick,
                "dense_ms": float(np.median([r["dense_ms"] for r in rounds])),
                "sparse_ms": float(np.median([r["sparse_ms"] for r in rounds])),
                "speedup": float(np.median([r["dense_ms"] / r["sparse_ms"] for r in rounds])),
                "speedup_p25_p75": [float(v) for v in np.percentile([r["dense_ms"] / r["sparse_ms"] for r in rounds],
                                                                     [25, 75])],
                "read_gbs": float(np.median([r["read_gbs"] for r in rounds])),
                "dense_gbs": float(np.median(dense_gbs)),
                "dense_pct_of_read": float(np.median([100 * g / r["read_gbs"] for g, r in zip(dense_gbs, rounds)])),
                "sparse_gbs": float(np.median([(6 * np.count_nonzero(w) + 4 * rows) / r["sparse_ms"] * 1e-6
                                                for r in rounds])),
                "max_err": max(r["err"] for r in rounds), "rounds": rounds}
            out["layers"][name] = res
            print(f"[{out['cpu']}, {out['isa']}] {name} {rows}x{cols} at {a.density:.0%}, batch 1: dense {res['dense_ms']:.3f} ms "
                  f"({res['dense_gbs']:.1f} GB/s = {res['dense_pct_of_read']:.0f}% of the read bandwidth "
                  f"{res['read_gbs']:.1f} GB/s), sparse {res['sparse_ms']:.3f} ms ({res['sparse_gbs']:.1f} GB/s): "
                  f"{res['speedup']:.1f}x (quartiles {res['speedup_p25_p75'][0]:.1f}-{res['speedup_p25_p75'][1]:.1f}x); "
                  f"max |sparse - dense| / max |dense| = {res['max_err']:.1e}")
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {a.json}")
    return 0 if all(r["max_err"] <= 1e-4 for r in out["layers"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
