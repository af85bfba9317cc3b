#!/usr/bin/env python
"""Whole-model timing of model files side by side in one process (issue 12's int8 targets).

    SPARSEINFER_ISA=avx2 SPARSEINFER_DISABLE=vnni python bench/int8_e2e.py \\
        fp32=vgg19.npz int8=vgg19_int8.npz int8_rr=vgg19_int8_rr.npz [--batch 1] [--repeats 15]

Each file is loaded once (planned as usual, cache off), warmed up, then all are run in turns
in the same loop, the order rotating every repeat, so the ratios compare the same moments of a
loaded machine. Prints per file the median and interquartile range of wall time, the ratio of
medians to the first file, the entries chosen for the int8 layers, and the CPU, ISA and the
runtime's int8 dot product (``sparseinfer.int8_isa()``). The input is standard normal.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sparseinfer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", metavar="LABEL=PATH")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    named = [m.split("=", 1) for m in a.models]
    print(f"# {sparseinfer.cpu()}; ISA {sparseinfer.isa()}, int8 dot product {sparseinfer.int8_isa()}; "
          f"batch {a.batch}; {a.threads or 'default'} threads; medians of {a.repeats}", flush=True)
    models = {}
    for label, path in named:
        t0 = time.perf_counter()
        models[label] = sparseinfer.load(path, cache="", threads=a.threads)
        algos = [f"{l['name']}:{l['algo_batch1'] if a.batch == 1 else l['algo_batchn']}"
                 for l in models[label].layers() if l["dtype"] == "int8"]
        print(f"{label}: loaded and planned in {time.perf_counter() - t0:.1f} s; int8 layers run by "
              f"{' '.join(algos) or '-'}", flush=True)
    x = np.random.default_rng(0).standard_normal((a.batch, *models[named[0][0]].input_shape)).astype(np.float32)
    for m in models.values():
        m.predict(x)
    times = {label: [] for label in models}
    labels = list(models)
    for r in range(a.repeats):
        for s in range(len(labels)):
            label = labels[(s + r) % len(labels)]
            t0 = time.perf_counter()
            models[label].predict(x)
            times[label].append(time.perf_counter() - t0)
    base = float(np.median(times[labels[0]]))
    res = {"cpu": sparseinfer.cpu(), "isa": sparseinfer.isa(), "int8_isa": sparseinfer.int8_isa(),
           "batch": a.batch, "threads": a.threads, "repeats": a.repeats, "models": {}}
    for label in labels:
        t = np.array(times[label]) * 1e3
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        print(f"{label:<12} {med:9.2f} ms  (IQR {q3 - q1:6.2f})  {med / (base * 1e3):5.2f}x {labels[0]}")
        res["models"][label] = {"path": dict(named)[label], "median_ms": med, "iqr_ms": q3 - q1,
                                "ratio_to_first": med / (base * 1e3)}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
