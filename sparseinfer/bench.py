"""``sparseinfer bench``: latency and throughput of a model file on this machine, per batch
size, and optionally per layer with the algorithm each layer ran (like
``deepsparse.benchmark`` or ONNX Runtime's perf test).

Each batch size gets a warm-up (at least 3 runs and 0.5 s: the first runs fault in scratch
memory and warm the caches), then runs until ``seconds`` have passed (at least 10 runs).
Every run is timed alone inside the C loop (``Model.time_runs``: no Python between runs), so
the figures are the runtime's. Batches above 64 samples are timed through ``predict``.
Inputs are fixed uniform random values in [0, 1): the runtime's speed does not depend on the
values. Medians and percentiles are over the runs; throughput is batch / median.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from . import _core

WARMUP_RUNS, WARMUP_SECONDS, MIN_RUNS = 3, 0.5, 10


def _cores() -> int:
    """The cores this process may use (the library's default thread count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _time_batch(m: Any, x: np.ndarray, seconds: float, progress: Callable[[float], None] | None) -> np.ndarray:
    """Per-run seconds of x's batch for about ``seconds`` after the warm-up."""
    n = len(x)
    if n <= 64:
        def run(k: int) -> np.ndarray:
            return m.time_runs(x, repeats=k, warmup=0)[0]
    else:
        def run(k: int) -> np.ndarray:
            out = np.empty(k)
            for i in range(k):
                t0 = time.perf_counter()
                m.predict(x)
                out[i] = time.perf_counter() - t0
            return out
    t0, warm = time.perf_counter(), []
    while len(warm) < WARMUP_RUNS or time.perf_counter() - t0 < WARMUP_SECONDS:
        warm.extend(run(1))
    per_run = float(np.median(warm))
    times: list[float] = []
    t0 = time.perf_counter()
    while len(times) < MIN_RUNS or time.perf_counter() - t0 < seconds:
        # chunks of about 0.25 s, so progress shows and the budget is kept
        k = max(1, min(1000, int(0.25 / max(per_run, 1e-7))))
        times.extend(run(k))
        if progress:
            progress(min(1.0, (time.perf_counter() - t0) / seconds))
    return np.asarray(times)


def benchmark(path: str, batches: Sequence[int] = (1,), seconds: float = 5.0, threads: int | None = None,
              per_layer: bool = False, progress: Callable[[str], None] | None = None,
              max_batch: int | None = None) -> dict[str, Any]:
    """Times the model file at each batch size. Returns a dict (the ``--json`` output):
    machine, model, load and plan cost, and per batch: runs, median / p90 / p99 / min ms,
    images/s, and with ``per_layer`` each layer's median ms and algorithm."""
    from . import load

    if not batches or any(b < 1 for b in batches):
        raise ValueError(f"batch sizes must be >= 1, got {list(batches)}")
    if not seconds > 0:
        raise ValueError(f"--time must be > 0 s, got {seconds}")
    t0 = time.perf_counter()
    m = load(path, threads=threads, max_batch=max_batch)
    load_s = time.perf_counter() - t0
    layers = m.layers()
    plan = m.plan_stats()
    out: dict[str, Any] = {
        "model": str(path), "name": m.name, "input_shape": list(m.input_shape),
        "cpu": _core.cpu(), "isa": _core.isa(), "threads": m.threads or _cores(), "version": _core.version(),
        "load_seconds": load_s, "plan": plan, "seconds_per_batch": seconds, "batches": [],
    }
    rng = np.random.default_rng(0)
    for b in batches:
        x = rng.random((b, *m.input_shape), dtype=np.float32)
        say = (lambda f, b=b: progress(f"batch {b}: {100 * f:3.0f}%")) if progress else None
        t = _time_batch(m, x, seconds, say)
        med = float(np.median(t))
        rec: dict[str, Any] = {
            "batch": b, "runs": int(len(t)), "median_ms": 1e3 * med, "p90_ms": 1e3 * float(np.percentile(t, 90)),
            "p99_ms": 1e3 * float(np.percentile(t, 99)), "min_ms": 1e3 * float(t.min()),
            "images_per_s": b / med,
        }
        if per_layer and b <= 64:
            if progress:
                progress(f"batch {b}: per layer")
            reps = max(MIN_RUNS, min(200, int(min(seconds, 2.0) / max(med, 1e-7))))
            lt = np.median(m.profile_layers(x, repeats=reps, warmup=2), axis=0)
            rec["layers"] = [{"name": L["name"], "type": L["type"],
                              "algo": (L["algo_batch1"] if b == 1 else L["algo_batchn"]) or None,
                              "median_ms": 1e3 * float(s)} for L, s in zip(layers, lt)]
            rec["layers_sum_ms"] = 1e3 * float(lt.sum())
        out["batches"].append(rec)
    return out


def format_report(r: dict[str, Any]) -> str:
    """The text ``sparseinfer bench`` prints."""
    lines = [f"{r['model']} ({r['name'] or 'unnamed'}, input {tuple(r['input_shape'])}) on {r['cpu']}, "
             f"ISA {r['isa']}, {r['threads']} threads, sparseinfer {r['version']}",
             f"load {r['load_seconds']:.2f} s (plan: {r['plan']['measured']} layer regimes timed in "
             f"{r['plan']['seconds']:.2f} s, {r['plan']['cached']} from the cache)",
             "",
             f"{'batch':>6}{'runs':>8}{'median ms':>12}{'p90 ms':>10}{'p99 ms':>10}{'min ms':>10}{'images/s':>12}"]
    for b in r["batches"]:
        lines.append(f"{b['batch']:>6}{b['runs']:>8}{b['median_ms']:>12.4g}{b['p90_ms']:>10.4g}{b['p99_ms']:>10.4g}"
                     f"{b['min_ms']:>10.4g}{b['images_per_s']:>12,.1f}")
    for b in r["batches"]:
        if "layers" not in b:
            continue
        lines += ["", f"per layer, batch {b['batch']} (medians; a pool fused into its convolution reads 0):",
                  f"{'layer':<16}{'type':<11}{'algorithm':<22}{'ms':>10}{'share':>8}"]
        total = b["layers_sum_ms"] or 1.0
        for L in b["layers"]:
            lines.append(f"{L['name']:<16}{L['type']:<11}{L['algo'] or '-':<22}{L['median_ms']:>10.4f}"
                         f"{L['median_ms'] / total:>8.1%}")
        lines.append(f"{'sum':<49}{b['layers_sum_ms']:>10.4f}")
    return "\n".join(lines)


def progress_printer(stream=None) -> Callable[[str], None]:
    """One status line, rewritten in place on a terminal (default: stderr), else nothing
    (logs stay clean)."""
    stream = stream or sys.stderr
    if not stream.isatty():
        return lambda msg: None
    return lambda msg: print(f"\r{msg:<40}", end="", file=stream, flush=True)
