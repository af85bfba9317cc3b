#!/usr/bin/env python
"""Dense against sparse, per layer and end to end, measured in one run.

    python bench/compare.py [--quick] [--json PATH] [--plot PATH] [--models lenet5,vgg19]

For LeNet-5 (the shipped, trained weights) and VGG19 (generated weights: no package here
ships real ones), pruned by magnitude

  (a) to the per-layer profile Han et al. published (LeNet-5: conv1 66%, conv2 12%, fc1 8%,
      fc2 19% of weights kept; VGG: conv 22-58%, fc6/fc7 4%, fc8 23%), and
  (b) in a sweep of each layer's density from 100% to 1%,

it times every weighted layer alone (a one-layer model file fed a batch of its real input
shape) and the whole model, at batch 1 and 64: the dense path, the sparse path (the
runtime's own CSR kernels; MKL's sparse BLAS beside them as the reference), Winograd
F(4x4, 3x3) on the layer's weights as dense (3x3 stride-1 convolutions) and the runtime's own
per-layer choice ("auto"). The sweep gives, per convolution, the density below which the
sparse direct convolution beats Winograd on the dense weights. Times are medians over repeats of the C run call
alone (Model.time_runs: no Python in the timed loop), all in the same process and run.
Alongside: the speedup, real and dense-equivalent GFLOP/s, effective GB/s of fully
connected layers against this machine's read bandwidth (measured in the same run), weight
bytes, and peak memory of whole-model runs (measured in child processes). Every sparse
output is checked against the dense one: max |sparse - dense| <= 1e-4 * max |dense|.

Writes a table to stdout, one JSON record per (model, layer, batch, density) with
dense_ms, sparse_ms and speedup to --json, and a plot of speedup against density to --plot.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import sparseinfer  # noqa: E402
from sparseinfer import _core  # noqa: E402
from sparseinfer.format import conv_kernel_to_matrix, read_manifest, write_model  # noqa: E402

#: Han et al. 2015 ("Learning both weights and connections"), fraction of weights kept.
HAN_LENET5 = {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19}
#: Their VGG-16 profile (Table 4), by block; VGG19's extra fourth conv in blocks 3-5 takes
#: its block's mean. fc6/fc7/fc8 are VGG19's fc1/fc2/predictions.
HAN_VGG16_BLOCKS = {1: [0.58, 0.22], 2: [0.34, 0.36], 3: [0.53, 0.24, 0.42], 4: [0.32, 0.27, 0.34],
                    5: [0.35, 0.29, 0.36]}
VGG19_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))
SWEEP = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.04, 0.02, 0.01)
TOL = 1e-4


def han_vgg19() -> dict[str, float]:
    prof = {}
    for b, (_, n) in enumerate(VGG19_BLOCKS, start=1):
        keep = list(HAN_VGG16_BLOCKS[b])
        while len(keep) < n:
            keep.append(round(float(np.mean(HAN_VGG16_BLOCKS[b])), 3))
        for i in range(n):
            prof[f"block{b}_conv{i + 1}"] = keep[i]
    prof.update({"fc1": 0.04, "fc2": 0.04, "predictions": 0.23})
    return prof


# ---- models ---------------------------------------------------------------------------

def lenet5_layers() -> tuple[list[dict], dict]:
    path = os.path.join(ROOT, "models", "lenet5.npz")
    manifest = read_manifest(path)
    layers = []
    with np.load(path, allow_pickle=False) as z:
        for l in manifest["layers"]:
            l = dict(l)
            if "weight" in l:
                w = l.pop("weight")
                if w["format"] != "dense":
                    raise SystemExit(f"{path}: expected the dense shipped model")
                l["W"] = z[w["array"]]
                l["b"] = z[l.pop("bias")]
            layers.append(l)
    return layers, manifest["input"]


def vgg19_layers(seed: int = 19) -> tuple[list[dict], dict]:
    """VGG19 with He-scaled random weights (the shapes are what matter for speed)."""
    rng = np.random.default_rng(seed)
    layers: list[dict] = []
    cin = 3
    for b, (f, n) in enumerate(VGG19_BLOCKS, start=1):
        for i in range(1, n + 1):
            k = (rng.standard_normal((3, 3, cin, f), dtype=np.float32) * np.sqrt(2.0 / (9 * cin))).astype(np.float32)
            layers.append({"name": f"block{b}_conv{i}", "type": "conv2d", "kernel": [3, 3], "padding": "same",
                           "activation": "relu", "W": conv_kernel_to_matrix(k), "b": np.zeros(f, np.float32)})
            cin = f
        layers.append({"name": f"block{b}_pool", "type": "maxpool2d", "pool": [2, 2]})
    layers.append({"name": "flatten", "type": "flatten"})
    for name, (units, inputs, act) in {"fc1": (4096, 25088, "relu"), "fc2": (4096, 4096, "relu"),
                                      "predictions": (1000, 4096, "softmax")}.items():
        w = (rng.standard_normal((units, inputs), dtype=np.float32) * np.sqrt(2.0 / inputs)).astype(np.float32)
        layers.append({"name": name, "type": "dense", "activation": act, "W": w, "b": np.zeros(units, np.float32)})
    spec = {"shape": [224, 224, 3], "color": "bgr", "resize": {"mode": "shorter", "size": 256}, "crop": [224, 224],
            "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]}
    return layers, spec


def prune_magnitude(w: np.ndarray, keep: float) -> np.ndarray:
    """Keep the `keep` fraction of weights largest in magnitude (ties broken by position)."""
    if keep >= 1.0:
        return w
    n = w.size
    k = max(1, int(round(keep * n)))
    flat = np.abs(w).ravel()
    idx = np.argpartition(flat, n - k)[n - k:]
    out = np.zeros_like(w).ravel()
    out[idx] = w.ravel()[idx]
    return out.reshape(w.shape)


def input_shapes(layers: list[dict], shape: list[int]) -> list[tuple[int, int, int]]:
    """The input shape (h, w, c) of each layer."""
    h, w, c = shape
    out = []
    for l in layers:
        out.append((h, w, c))
        t = l["type"]
        if t == "conv2d" or t == "maxpool2d":
            kh, kw = l.get("kernel", l.get("pool"))
            sh, sw = l.get("strides", [1, 1] if t == "conv2d" else l.get("pool"))
            if l.get("padding", "valid") == "same":
                h, w = -(-h // sh), -(-w // sw)
            else:
                h, w = (h - kh) // sh + 1, (w - kw) // sw + 1
            if t == "conv2d":
                c = l["W"].shape[0]
        elif t == "flatten":
            h, w, c = 1, 1, h * w * c
        elif t == "dense":
            c = l["W"].shape[0]
    return out


# ---- measurement ----------------------------------------------------------------------

class Timer:
    def __init__(self, repeats: int, repeats_heavy: int):
        self.repeats, self.repeats_heavy = repeats, repeats_heavy

    def run(self, path: str, x: np.ndarray, exec: str, sparse: str = "auto", heavy: bool = False,
            pin: str | None = None):
        """pin: an entry name the planner must use where it applies (SPARSEINFER_ALGO)."""
        old = os.environ.pop("SPARSEINFER_ALGO", None)
        if pin:
            os.environ["SPARSEINFER_ALGO"] = pin
        try:
            m = sparseinfer.load(path, exec=exec, sparse=sparse)
        finally:
            os.environ.pop("SPARSEINFER_ALGO", None)
            if old is not None:
                os.environ["SPARSEINFER_ALGO"] = old
        reps = self.repeats_heavy if heavy else self.repeats
        times, out = m.time_runs(x, repeats=reps, warmup=1)
        return float(np.median(times)) * 1e3, out, m.layers()


def out_err(a: np.ndarray, ref: np.ndarray) -> float:
    scale = float(np.abs(ref).max()) or 1.0
    return float(np.abs(a - ref).max()) / scale


def one_layer_file(tmp: str, layer: dict, in_shape, keep: float) -> tuple[str, int]:
    l = dict(layer)
    l["W"] = prune_magnitude(layer["W"], keep)
    path = os.path.join(tmp, f"{layer['name']}_{keep:.3f}.npz")
    write_model(path, [l], {"shape": list(in_shape)}, name=layer["name"])
    return path, int(np.count_nonzero(l["W"]))


def layer_record(model: str, profile: str, layer: dict, in_shape, keep: float, batch: int, timer: Timer,
                 tmp: str, bw: float, with_mkl: bool, int8: bool = False) -> dict:
    path, nnz = one_layer_file(tmp, layer, in_shape, keep)
    rows, cols = layer["W"].shape
    rng = np.random.default_rng(batch)
    x = rng.random((batch, *in_shape), dtype=np.float32)
    if layer["type"] == "conv2d":
        oh, ow, _ = sparseinfer.load(path).layers()[0]["output_shape"]
        positions = batch * oh * ow
    else:
        positions = batch
    heavy = 2.0 * rows * cols * positions > 2e10
    dense_ms, dense_out, _ = timer.run(path, x, "dense", heavy=heavy)
    sparse_ms, sparse_out, info = timer.run(path, x, "sparse", "own", heavy=heavy)
    auto_ms, auto_out, auto_info = timer.run(path, x, "auto", heavy=heavy)
    rec: dict[str, Any] = {
        "model": model, "profile": profile, "layer": layer["name"], "type": layer["type"],
        "kind": "conv" if layer["type"] == "conv2d" else "fc", "batch": batch, "density": nnz / (rows * cols),
        "rows": rows, "cols": cols, "nnz": nnz, "positions": positions,
        "dense_ms": dense_ms, "sparse_ms": sparse_ms, "speedup": dense_ms / sparse_ms, "auto_ms": auto_ms,
        "auto_exec": auto_info[0]["exec_batch1" if batch == 1 else "exec_batchn"], "auto_why": auto_info[0]["why"],
        "auto_algo": auto_info[0]["algo_batch1" if batch == 1 else "algo_batchn"],
        # the planner's own timings of every candidate on this layer (ms; None: not timed)
        "planner_ms": {n: (t * 1e3 if t is not None else None)
                       for n, t in auto_info[0]["candidates_batch1" if batch == 1 else "candidates_batchn"].items()},
        "auto_vs_dense": dense_ms / auto_ms,
        "dense_gflops": 2e-6 * rows * cols * positions / dense_ms,
        "sparse_gflops_real": 2e-6 * nnz * positions / sparse_ms,
        "sparse_gflops_dense_equiv": 2e-6 * rows * cols * positions / sparse_ms,
        "dense_weight_bytes": 4 * rows * cols, "sparse_weight_bytes": info[0]["bytes"] - 4 * rows,
        "err_sparse": out_err(sparse_out, dense_out), "err_auto": out_err(auto_out, dense_out),
    }
    if layer["type"] == "dense" and batch == 1:
        rec["dense_gbs"] = rec["dense_weight_bytes"] / dense_ms * 1e-6
        rec["sparse_gbs"] = rec["sparse_weight_bytes"] / sparse_ms * 1e-6
        rec["dense_pct_of_bw"] = 100 * rec["dense_gbs"] / bw
        rec["sparse_pct_of_bw"] = 100 * rec["sparse_gbs"] / bw
    if layer["type"] == "conv2d" and tuple(layer.get("kernel", ())) == (3, 3) and tuple(layer.get("strides", (1, 1))) == (1, 1):
        # Winograd F(4x4, 3x3) on the dense weights (the layer's own, pruned or not, as dense)
        wino_ms, wino_out, winfo = timer.run(path, x, "dense", heavy=heavy, pin="conv_winograd")
        assert winfo[0]["algo_batch1" if batch == 1 else "algo_batchn"] == "conv_winograd", winfo[0]
        rec.update(wino_ms=wino_ms, err_wino=out_err(wino_out, dense_out), wino_vs_dense=dense_ms / wino_ms,
                   sparse_vs_wino=wino_ms / sparse_ms)
    if int8:
        rec["int8"] = int8_part(layer, keep, path, x, timer, heavy, tmp)
    if with_mkl:
        mkl_ms, mkl_out, _ = timer.run(path, x, "sparse", "mkl", heavy=heavy)
        rec["mkl_sparse_ms"] = mkl_ms
        rec["err_mkl"] = out_err(mkl_out, dense_out)
    os.unlink(path)
    return rec


#: The five ways --int8 compares, per layer, density and batch: (label, int8 file?, pins). Each
#: loads with the planner measuring among the pinned entries (SPARSEINFER_ALGO), so a label
#: stands for the fastest of its kind on this CPU; a sparse kind at 90% density and above (where
#: the planner times no sparse entry) is forced with exec="sparse" instead.
FP32_DENSE = "conv_gemm,conv_gemm_packed,fc_gemv,fc_sgemm,fc_gemm_packed"
FP32_SPARSE = ("conv_sparse_direct,conv_sparse_direct32,conv_sparse_tiled,conv_sparse_planar,conv_sparse_batch,"
               "fc_csrmv,fc_csrmv_gather,fc_csrmm")
VARIANTS = (("fp32 dense", False, FP32_DENSE),
            ("fp32 winograd", False, "conv_winograd"),
            ("fp32 sparse", False, FP32_SPARSE),
            ("int8 dense", True, "conv_igemm,conv_igemm_amx,conv_winograd_dq,fc_igemm,fc_igemm_amx"),
            ("int8 sparse", True, "conv_sparse_i8,fc_csrmv_i8,fc_csrmm_i8"),
            # the int8 GEMM without AMX (AVX-512 VNNI, or what the ISA cap leaves), where
            # "int8 dense" may run on AMX tiles: not a candidate for "fastest"
            ("int8 gemm no-amx", True, "conv_igemm,fc_igemm"))
NOT_RANKED = ("int8 gemm no-amx",)


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((got.astype(np.float64) - ref) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def int8_part(layer: dict, keep: float, path: str, x: np.ndarray, timer: Timer, heavy: bool, tmp: str) -> dict:
    """The layer in each of VARIANTS, timed by Model.profile_layers (the layer's own time: an
    int8 layer's float input is quantized outside it, as in an int8 network where the layer
    before writes uint8), the int8 file quantized on this very input (sparseinfer.quantize,
    min/max of what it sees is what a calibration on it gives). Returns per variant the median
    ms, the fastest, and the int8 outputs' SQNR against fp32 dense."""
    qpath = path[:-4] + "_int8.npz"
    sparseinfer.quantize(path, qpath, calibration=x, keep_fp32=None, progress=None)
    wino_ok = layer["type"] == "conv2d" and tuple(layer.get("kernel", ())) == (3, 3) and \
        tuple(layer.get("strides", (1, 1))) == (1, 1)
    reps = timer.repeats_heavy if heavy else timer.repeats
    res: dict[str, Any] = {"ms": {}, "algo": {}}
    outs = {}
    dense_layer = np.count_nonzero(prune_magnitude(layer["W"], keep)) >= 0.9 * layer["W"].size
    for label, q, pin in VARIANTS:
        if label == "fp32 winograd" and not wino_ok:
            continue
        exec_ = "sparse" if "sparse" in label and dense_layer else "auto"
        old = os.environ.pop("SPARSEINFER_ALGO", None)
        if pin:
            os.environ["SPARSEINFER_ALGO"] = pin
        try:
            m = sparseinfer.load(qpath if q else path, exec=exec_, sparse="own")
        finally:
            os.environ.pop("SPARSEINFER_ALGO", None)
            if old is not None:
                os.environ["SPARSEINFER_ALGO"] = old
        prof = m.profile_layers(x, repeats=reps, warmup=1)
        res["ms"][label] = float(np.median(prof[:, 0])) * 1e3
        res["algo"][label] = m.layers()[0]["algo_batch1" if len(x) == 1 else "algo_batchn"]
        outs[label] = m.predict(x)
        del m
    ref = outs["fp32 dense"]
    res["sqnr_db"] = {k: sqnr_db(ref, outs[k]) for k in ("int8 dense", "int8 sparse")}
    res["fastest"] = min((k for k in res["ms"] if k not in NOT_RANKED), key=res["ms"].get)
    res["int8_file_bytes"], res["fp32_file_bytes"] = os.path.getsize(qpath), os.path.getsize(path)
    os.unlink(qpath)
    return res


CHILD = r"""
import json, sys, time, numpy as np
sys.path.insert(0, sys.argv[1])
import sparseinfer
path, exec_, batch, repeats = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
t0 = time.perf_counter(); m = sparseinfer.load(path, exec=exec_); load_s = time.perf_counter() - t0
x = np.random.default_rng(1).random((batch, *m.input_shape), dtype=np.float32)
t, out = m.time_runs(x, repeats=repeats, warmup=1)
np.save(sys.argv[6], out)
# VmHWM, not ru_maxrss: the latter keeps the parent's high-water mark across fork + exec.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"ms": float(np.median(t)) * 1e3, "load_s": load_s, "peak_rss_mb": hwm / 1024,
                  "loaded_bytes": sum(l["memory_bytes"] for l in m.layers())}))
"""


def end_to_end(model: str, path: str, batch: int, repeats: int, tmp: str) -> dict:
    res = {}
    for exec_ in ("dense", "sparse", "auto"):
        out_path = os.path.join(tmp, f"e2e_{exec_}.npy")
        p = subprocess.run([sys.executable, "-c", CHILD, ROOT, path, exec_, str(batch), str(repeats), out_path],
                           capture_output=True, text=True, timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"end-to-end child failed ({model} {exec_} batch {batch}):\n{p.stderr}")
        res[exec_] = json.loads(p.stdout.strip().splitlines()[-1])
        res[exec_]["out"] = np.load(out_path)
    ref = res["dense"]["out"]
    rec = {"model": model, "profile": "han", "layer": "(end to end)", "type": "model", "kind": "model", "batch": batch,
           "dense_ms": res["dense"]["ms"], "sparse_ms": res["sparse"]["ms"], "auto_ms": res["auto"]["ms"],
           "speedup": res["dense"]["ms"] / res["sparse"]["ms"], "auto_vs_dense": res["dense"]["ms"] / res["auto"]["ms"],
           "err_sparse": out_err(res["sparse"]["out"], ref), "err_auto": out_err(res["auto"]["out"], ref)}
    for k in ("dense", "sparse", "auto"):
        rec[f"{k}_peak_rss_mb"] = res[k]["peak_rss_mb"]
        rec[f"{k}_loaded_bytes"] = res[k]["loaded_bytes"]
        rec[f"{k}_load_s"] = res[k]["load_s"]
    return rec


def break_even(sweep: list[dict], key: str = "speedup") -> float | None:
    """Density where sparse stops beating dense (log-linear interpolation of speedup = 1);
    key "sparse_vs_wino": where it stops beating Winograd on the dense weights."""
    pts = sorted((r["density"], r[key]) for r in sweep if key in r)
    if not pts:
        return None
    below = [p for p in pts if p[1] >= 1.0]
    if not below:
        return None
    best = None
    for (d0, s0), (d1, s1) in zip(pts, pts[1:]):
        if s0 >= 1.0 > s1:
            t = np.log(s0) / (np.log(s0) - np.log(s1))
            best = float(np.exp(np.log(d0) + t * (np.log(d1) - np.log(d0))))
    if best is None:
        best = pts[-1][0] if pts[-1][1] >= 1.0 else None
    return best


# ---- reporting ------------------------------------------------------------------------

def fmt_row(r: dict) -> str:
    dens = f"{100 * r['density']:.1f}%" if "density" in r else "-"
    gbs = ""
    if "dense_gbs" in r:
        gbs = f" {r['dense_gbs']:.1f}/{r['sparse_gbs']:.1f} GB/s ({r['dense_pct_of_bw']:.0f}% bw)"
    gfl = ""
    if "sparse_gflops_real" in r:
        gfl = f" {r['dense_gflops']:.0f} | {r['sparse_gflops_real']:.0f} ({r['sparse_gflops_dense_equiv']:.0f}eq)"
    mkl = f" {r['mkl_sparse_ms']:9.3f}" if "mkl_sparse_ms" in r else f" {'':>9}"
    wino = f" {r['wino_ms']:9.3f}" if "wino_ms" in r else f" {'':>9}"
    return (f"{r['model']:<7}{r['layer']:<15}{r['batch']:>4}{dens:>7}{r['dense_ms']:>10.3f}{r['sparse_ms']:>10.3f}"
            f"{mkl}{wino}{r['speedup']:>8.2f}x{r['auto_ms']:>10.3f}{r['auto_vs_dense']:>7.2f}x  "
            f"{r.get('auto_exec', ''):<7}{gfl}{gbs}")


HEADER = (f"{'model':<7}{'layer':<15}{'b':>4}{'dens':>7}{'dense ms':>10}{'sparse ms':>10}{'mkl ms':>10}{'wino ms':>10}"
          f"{'speedup':>9}"
          f"{'auto ms':>10}{'auto/d':>8}  {'auto':<7} GFLOP/s dense | sparse real (dense-eq); FC GB/s dense/sparse")


def _panel(ax, sweep: list[dict], b: int, key: str, ylabel: str, title: str) -> None:
    """One panel: key (a ratio) against density for every layer swept at batch b that has it."""
    layers = sorted({(r["model"], r["layer"], r["kind"]) for r in sweep if r["batch"] == b and key in r})
    for model, layer, kind in layers:
        pts = sorted((r["density"], r[key]) for r in sweep
                     if r["batch"] == b and r["model"] == model and r["layer"] == layer)
        ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], marker="o" if kind == "fc" else "s",
                linestyle="-" if kind == "fc" else "--", label=f"{model} {layer}")
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("density (% of weights kept)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def plot(records: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = [r for r in records if r["profile"] == "sweep"]
    batches = sorted({r["batch"] for r in sweep})
    wino = any("sparse_vs_wino" in r for r in sweep)
    fig, axes = plt.subplots(2 if wino else 1, len(batches), figsize=(7 * len(batches), 5.5 * (2 if wino else 1)),
                             squeeze=False)
    for i, b in enumerate(batches):
        _panel(axes[0][i], sweep, b, "speedup", "speedup of sparse over dense (x)",
               f"batch {b}: sparse (own CSR kernels) vs dense")
        if wino:
            _panel(axes[1][i], sweep, b, "sparse_vs_wino", "Winograd time / sparse time (x)",
                   f"batch {b}: sparse direct vs Winograd F(4x4,3x3) on the dense weights")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


WINNER_COLORS = {"fp32 dense": "tab:blue", "fp32 winograd": "tab:green", "fp32 sparse": "tab:orange",
                 "int8 dense": "tab:purple", "int8 sparse": "tab:red"}


def plot_int8(records: list[dict], path: str) -> None:
    """Per model and batch: which of the five variants is fastest for each layer (rows) and
    density (columns), the marker's size its lead over the runner-up."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rs = [r for r in records if r["profile"] == "sweep" and "int8" in r]
    keys = sorted({(r["model"], r["batch"]) for r in rs}, key=lambda k: (k[0] != "lenet5", k[0], k[1]))
    if not keys:
        return
    from matplotlib.ticker import FuncFormatter
    fig, axes = plt.subplots(1, len(keys), figsize=(max(10.0, 5.2 * len(keys)), 5.0), squeeze=False)
    for ax, (model, b) in zip(axes[0], keys):
        sel = [r for r in rs if r["model"] == model and r["batch"] == b]
        layers = list(dict.fromkeys(r["layer"] for r in sel))
        for r in sel:
            ms = sorted(v for k, v in r["int8"]["ms"].items() if k not in NOT_RANKED)
            lead = ms[1] / ms[0] if len(ms) > 1 else 1.0
            ax.scatter(100 * r["density"], layers.index(r["layer"]), s=40 + 120 * min(lead - 1, 2),
                       color=WINNER_COLORS[r["int8"]["fastest"]], edgecolors="black", linewidths=0.4)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
        ax.invert_xaxis()
        ax.set_yticks(range(len(layers)))
        ax.set_yticklabels(layers, fontsize=8)
        ax.set_xlabel("density (% of weights kept)")
        ax.set_title(f"{model}, batch {b}: fastest per layer", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], marker="o", linestyle="", color=c, markeredgecolor="black", label=k)
               for k, c in WINNER_COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=9)
    fig.suptitle(f"fastest of fp32 dense / Winograd / sparse and int8 dense / sparse; marker size: lead over the "
                 f"runner-up\n{sparseinfer.cpu()}, kernels {sparseinfer.isa()}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=110)


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    import importlib.metadata as md
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l.split(":", 1)[1] for l in f if l.startswith("flags")), "")
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni") if f in flags.split()]
    return {"cpu": cpu, "cpuid": sparseinfer.cpu(), "isa": sparseinfer.isa(), "cpu_simd_flags": simd,
            "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "mkl": md.version("mkl"), "sparseinfer": sparseinfer.__version__}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "compare.json"))
    p.add_argument("--plot", default=os.path.join(ROOT, "bench", "results", "compare_speedup.png"))
    p.add_argument("--models", default="lenet5,vgg19")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--repeats", type=int, default=7, help="repeats of light layers (median reported)")
    p.add_argument("--repeats-heavy", type=int, default=3, help="repeats of layers above 20 GFLOP per run")
    p.add_argument("--quick", action="store_true", help="fewer sweep points and repeats, no end-to-end batch 64")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--no-han", action="store_true", help="skip the Han-profile part (per layer and end to end)")
    p.add_argument("--no-mkl", action="store_true", help="skip MKL's sparse BLAS reference timings")
    p.add_argument("--isa", default=None, help="cap the kernels' ISA (portable, avx2, avx512) for every timing")
    p.add_argument("--int8", action="store_true",
                   help="also time each layer quantized to int8 (dense and sparse) beside fp32 dense, Winograd and "
                        "sparse, and plot which is fastest per layer and density (--int8-plot)")
    p.add_argument("--int8-plot", default=os.path.join(ROOT, "bench", "results", "compare_int8.png"))
    a = p.parse_args(argv)
    if a.isa:
        sparseinfer.set_isa(a.isa)
        os.environ["SPARSEINFER_ISA"] = a.isa  # the end-to-end child processes too
    models = [m for m in a.models.split(",") if m]
    batches = [int(b) for b in a.batches.split(",")]
    sweep_pts = (1.0, 0.5, 0.2, 0.1, 0.04, 0.01) if a.quick else SWEEP
    if a.quick:
        a.repeats, a.repeats_heavy = 3, 1
    timer = Timer(a.repeats, a.repeats_heavy)
    t_start = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t_start:6.0f}s] {msg}", file=sys.stderr, flush=True)

    mach = machine()
    log(f"CPU {mach['cpuid']}, kernels ISA {mach['isa']} (cpu flags: {' '.join(mach['cpu_simd_flags'])})")
    log("measuring read bandwidth (1 GiB streamed, both cores)")
    bw0 = _core.read_bandwidth(1 << 30, 7)
    log(f"read bandwidth {bw0:.1f} GB/s")
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="si-compare-") as tmp:
        for model in models:
            layers, spec = lenet5_layers() if model == "lenet5" else vgg19_layers()
            shapes = input_shapes(layers, spec["shape"])
            profile = HAN_LENET5 if model == "lenet5" else han_vgg19()
            weighted = [(l, s) for l, s in zip(layers, shapes) if "W" in l]
            # (a) the Han profile, layer by layer and end to end
            for b in ([] if a.no_han else batches):
                for l, s in weighted:
                    log(f"{model} han {l['name']} batch {b}")
                    records.append(layer_record(model, "han", l, s, profile[l["name"]], b, timer, tmp, bw0,
                                                with_mkl=not a.no_mkl, int8=a.int8))
            pruned = [dict(l, W=prune_magnitude(l["W"], profile[l["name"]])) if "W" in l else l for l in layers]
            path = os.path.join(tmp, f"{model}_han.npz")
            write_model(path, pruned, spec, name=f"{model}_han")
            for b in ([] if a.no_han else batches):
                if a.quick and b > 1 and model == "vgg19":
                    continue
                log(f"{model} han end to end batch {b} (child processes: dense, sparse, auto)")
                rec = end_to_end(model, path, b, a.repeats_heavy if model == "vgg19" else a.repeats, tmp)
                rec["file_bytes"] = os.path.getsize(path)
                records.append(rec)
            os.unlink(path)
            # (b) the density sweep
            if a.no_sweep:
                continue
            sweep_layers = weighted if model == "lenet5" else [
                (l, s) for l, s in weighted if l["name"] in ("block1_conv2", "block2_conv2", "block3_conv2",
                                                              "block4_conv2", "block5_conv2", "fc1", "fc2",
                                                              "predictions")]
            for b in batches:
                for l, s in sweep_layers:
                    for keep in sweep_pts:
                        log(f"{model} sweep {l['name']} batch {b} density {keep:.0%}")
                        records.append(layer_record(model, "sweep", l, s, keep, b, timer, tmp, bw0,
                                                    with_mkl=not a.no_mkl and b == 1, int8=a.int8))
    bw1 = _core.read_bandwidth(1 << 30, 7)

    # break-even density per layer and per kind
    breakeven: dict[str, Any] = {}
    for key in sorted({(r["model"], r["layer"], r["batch"]) for r in records if r["profile"] == "sweep"}):
        rs = [r for r in records if r["profile"] == "sweep" and (r["model"], r["layer"], r["batch"]) == key]
        breakeven[f"{key[0]} {key[1]} batch {key[2]}"] = {"kind": rs[0]["kind"], "batch": key[2],
                                                           "break_even_density": break_even(rs),
                                                           "vs_winograd_density": break_even(rs, "sparse_vs_wino")}

    bad = [r for r in records if r.get("err_sparse", 0) > TOL or r.get("err_auto", 0) > TOL or r.get("err_mkl", 0) > TOL
           or r.get("err_wino", 0) > TOL]
    print(f"CPU: {mach['cpuid']}; kernels ISA: {mach['isa']}; SIMD flags: {' '.join(mach['cpu_simd_flags'])}")
    print(f"read bandwidth: {bw0:.1f} GB/s at start, {bw1:.1f} GB/s at end (1 GiB streamed by {os.cpu_count()} cores)")
    for title, sel in (("Han et al. profile, per layer and end to end", "han"), ("density sweep", "sweep")):
        rs = [r for r in records if r["profile"] == sel]
        if not rs:
            continue
        print(f"\n{title}\n{HEADER}\n" + "-" * len(HEADER))
        for r in rs:
            print(fmt_row(r))
    i8 = [r for r in records if "int8" in r]
    if i8:
        labels = [v[0] for v in VARIANTS]
        print(f"\nint8 against fp32, per layer (ms by Model.profile_layers; SQNR of int8 against fp32 dense)\n"
              f"{'model':<7}{'profile':<7}{'layer':<15}{'b':>4}{'dens':>7}" + "".join(f"{l:>15}" for l in labels)
              + f"  {'fastest':<14}{'SQNR dB d/s':>12}")
        for r in i8:
            t = r["int8"]["ms"]
            print(f"{r['model']:<7}{r['profile']:<7}{r['layer']:<15}{r['batch']:>4}{100 * r['density']:>6.1f}%"
                  + "".join(f"{t[l]:>15.3f}" if l in t else f"{'-':>15}" for l in labels)
                  + f"  {r['int8']['fastest']:<14}{r['int8']['sqnr_db']['int8 dense']:>6.1f}/"
                  f"{r['int8']['sqnr_db']['int8 sparse']:.1f}")
        wins: dict[str, int] = {}
        for r in i8:
            if r["profile"] == "sweep":
                k = f"{r['model']} {r['kind']} batch {r['batch']}: {r['int8']['fastest']}"
                wins[k] = wins.get(k, 0) + 1
        print("\nfastest, counted over the sweep's layers and densities:")
        for k in sorted(wins):
            print(f"  {k:<48} {wins[k]}")
    e2e = [r for r in records if r["kind"] == "model"]
    if e2e:
        print("\nend to end (Han profile): peak RSS MB dense / sparse / auto; weights loaded MB")
        for r in e2e:
            print(f"  {r['model']} batch {r['batch']}: dense {r['dense_ms']:.2f} ms, sparse {r['sparse_ms']:.2f} ms "
                  f"({r['speedup']:.2f}x), auto {r['auto_ms']:.2f} ms ({r['auto_vs_dense']:.2f}x); peak RSS "
                  f"{r['dense_peak_rss_mb']:.0f} / {r['sparse_peak_rss_mb']:.0f} / {r['auto_peak_rss_mb']:.0f} MB; "
                  f"weights {r['dense_loaded_bytes'] / 1e6:.1f} / {r['sparse_loaded_bytes'] / 1e6:.1f} / "
                  f"{r['auto_loaded_bytes'] / 1e6:.1f} MB; file {r['file_bytes'] / 1e6:.1f} MB")
    if breakeven:
        print("\nbreak-even density (sparse faster below it), from the sweep: against dense im2col GEMM; "
              "against Winograd on the dense weights (3x3 convolutions)")
        pct = lambda d: ("%.1f%%" % (100 * d)) if d is not None else "never faster"  # noqa: E731
        for k, v in breakeven.items():
            w = f"   vs Winograd {pct(v['vs_winograd_density'])}" if v["kind"] == "conv" else ""
            print(f"  {k:<34} {pct(v['break_even_density'])}{w}")
    print(f"\noutputs: {len(records) - len(bad)} of {len(records)} records within {TOL} of dense"
          + ("" if not bad else f"; OUT OF TOLERANCE: {[(r['model'], r['layer'], r['batch']) for r in bad]}"))

    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"machine": mach, "read_bandwidth_gbs": [bw0, bw1], "tolerance": TOL,
                   "records": records, "break_even": breakeven,
                   "command": " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:]))}, f, indent=1)
    print(f"wrote {a.json}")
    if any(r["profile"] == "sweep" for r in records):
        plot(records, a.plot)
        print(f"wrote {a.plot}")
    if a.int8 and any(r["profile"] == "sweep" and "int8" in r for r in records):
        plot_int8(records, a.int8_plot)
        print(f"wrote {a.int8_plot}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
