#!/usr/bin/env python
"""Accuracy of int8 models (issue 12), measured by the C runtime.

    python bench/int8_accuracy.py [--json bench/results/int8_accuracy.json] [--no-vgg19]
                                  [--reduce-range off,on,pairs] [--lenet-methods percentile]

LeNet-5 (the shipped models/lenet5.npz and models/lenet5_pruned.npz): quantized with 1,000
random MNIST training images by each calibration method (min/max, percentile, MSE), with the
last layer kept in float32 (the default) and, for the default method, quantized too; test
error on all 10,000 MNIST test images, agreement with the fp32 model image by image, the
logits' signal-to-quantization-noise ratio (SQNR) against fp32, and the file sizes.

VGG19 with generated weights (the tests' generator: tests/tf_util.randomize_keras on
prune.models.vgg19, seed 19, in a child process with TensorFlow), calibrated on 32 inputs:
the int8 logits against the fp32 logits on 16 other inputs (SQNR, top-1 agreement, overlap
of the top-5 sets), and the file sizes.

--reduce-range: the quantizer's reduce_range modes to run, comma-separated (off, the default
here so that runs compare: [-127, 127]; on: [-64, 64]; pairs: [-127, 127], pair-safe; auto;
both: off,on), each model once per mode. --lenet-methods: a comma-separated
subset of the calibration methods (the last layer kept in float32; all of them by default, and
percentile with the last layer quantized too).

Logits: the models end in a softmax; a copy of each file with a linear last layer (the
manifest edited, the weights untouched) gives the values before it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import sparseinfer  # noqa: E402
from sparseinfer.format import read_manifest  # noqa: E402


def linear_copy(path: str, out: str) -> str:
    """The model file with its last layer's activation (and any softmax layer) made linear."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    man = read_manifest(path)
    while man["layers"][-1]["type"] == "softmax":
        man["layers"].pop()
    man["layers"][-1]["activation"] = "linear"
    raw = json.dumps(man).encode()
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(raw, np.uint8), allow_pickle=False)
    members["model.json.npy"] = buf.getvalue()
    with zipfile.ZipFile(out, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    return out


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = float(np.sum((got - ref) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref ** 2)) / noise)


def compare_logits(fp32_path: str, int8_path: str, x: np.ndarray, tmp: str) -> dict:
    a = sparseinfer.load(linear_copy(fp32_path, os.path.join(tmp, "a.npz"))).predict(x)
    b = sparseinfer.load(linear_copy(int8_path, os.path.join(tmp, "b.npz"))).predict(x)
    top5a, top5b = np.argsort(-a, 1)[:, :5], np.argsort(-b, 1)[:, :5]
    overlap = np.mean([len(set(p) & set(q)) / 5 for p, q in zip(top5a, top5b)])
    return {"sqnr_db": sqnr_db(a, b), "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "top5_overlap": float(overlap), "fp32_top1_in_int8_top5": float(np.mean([p[0] in q for p, q in zip(top5a, top5b)]))}


def lenet(tmp: str, log, reduce: list[str], methods: list[str] | None = None) -> list[dict]:
    from sparseinfer.datasets import load_mnist
    from sparseinfer.evaluation import evaluate_mnist
    from sparseinfer.preprocess import normalize

    x_train, _, x_test, _ = load_mnist()
    idx = np.sort(np.random.default_rng(0).choice(len(x_train), 1000, replace=False))
    out = []
    for name in ("lenet5", "lenet5_pruned"):
        src = os.path.join(ROOT, "models", name + ".npz")
        spec = read_manifest(src)["input"]
        x = normalize(x_train[idx][..., None], spec)
        xt = normalize(x_test[..., None], spec)
        e32 = evaluate_mnist(sparseinfer.load(src))
        combos = [("minmax", "last"), ("percentile", "last"), ("mse", "last"), ("percentile", None)]
        if methods:
            combos = [(m, "last") for m in methods]
        for (method, keep), rr in ((c, rr) for rr in reduce for c in combos):
            dst = os.path.join(tmp, f"{name}_{method}_{keep}_{rr}.npz")
            t0 = time.perf_counter()
            rep = sparseinfer.quantize(src, dst, calibration=x, method=method, keep_fp32=keep, reduce_range=rr,
                                       progress=None)
            qs = time.perf_counter() - t0
            e8 = evaluate_mnist(sparseinfer.load(dst))
            r = {"model": name, "method": method, "kept_fp32": rep["kept_fp32"], "quantize_s": qs,
                 "weight_range": rep["weight_range"],
                 "fp32_error_pct": 100 * (1 - e32["accuracy"]), "int8_error_pct": 100 * (1 - e8["accuracy"]),
                 "agreement": float((e32["predictions"] == e8["predictions"]).mean()),
                 "fp32_bytes": os.path.getsize(src), "int8_bytes": os.path.getsize(dst),
                 **compare_logits(src, dst, xt, tmp)}
            r["reduce_range"] = rr
            log(f"{name:<14}{method:<11}{rr:<6}w +-{r['weight_range']:<4}kept {','.join(r['kept_fp32']) or '-':<5} error {r['fp32_error_pct']:.2f}% -> "
                f"{r['int8_error_pct']:.2f}%  agree {100 * r['agreement']:.2f}%  logits SQNR {r['sqnr_db']:.1f} dB  "
                f"file {r['fp32_bytes']:,} -> {r['int8_bytes']:,} B ({r['fp32_bytes'] / r['int8_bytes']:.2f}x)")
            out.append(r)
    return out


VGG19_CHILD = """
import sys
import sparseinfer
from prune.models import vgg19
from tests.tf_util import randomize_keras
model = vgg19()
randomize_keras(model, seed=19, logit_scale=0.05)
sparseinfer.export_keras(model, sys.argv[1])
"""


def vgg19(tmp: str, log, cache: str, reduce: str = "off") -> dict:
    path = os.path.join(cache, "vgg19_generated.npz")
    if not os.path.exists(path):
        log("generating VGG19 with the tests' generator (TensorFlow, child process)")
        r = subprocess.run([sys.executable, "-c", VGG19_CHILD, path], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(r.stderr)
    means = np.array([103.939, 116.779, 123.68], np.float32)
    rng = np.random.default_rng(2024)
    xc = rng.random((32, 224, 224, 3), dtype=np.float32) * 255.0 - means
    xe = rng.random((16, 224, 224, 3), dtype=np.float32) * 255.0 - means
    dst = os.path.join(tmp, f"vgg19_int8_{reduce}.npz")
    t0 = time.perf_counter()
    rep = sparseinfer.quantize(path, dst, calibration=xc, reduce_range=reduce, progress=None)
    r = {"calibration_inputs": 32, "eval_inputs": 16, "quantize_s": time.perf_counter() - t0,
         "weight_range": rep["weight_range"], "reduce_range": reduce,
         "kept_fp32": rep["kept_fp32"], "fp32_bytes": os.path.getsize(path), "int8_bytes": os.path.getsize(dst),
         **compare_logits(path, dst, xe, tmp)}
    log(f"VGG19 generated, reduce_range {reduce} (weights +-{r['weight_range']}): logits SQNR {r['sqnr_db']:.1f} dB, top-1 agreement {100 * r['top1_agreement']:.0f}%, "
        f"top-5 overlap {100 * r['top5_overlap']:.0f}%, fp32 top-1 in int8 top-5 {100 * r['fp32_top1_in_int8_top5']:.0f}%; "
        f"file {r['fp32_bytes'] / 1e6:.1f} -> {r['int8_bytes'] / 1e6:.1f} MB; quantize {r['quantize_s']:.1f} s")
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "int8_accuracy.json"))
    p.add_argument("--no-vgg19", action="store_true")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "sparseinfer-int8-accuracy"),
                   help="where the generated VGG19 is kept between runs")
    p.add_argument("--reduce-range", default="off", help="comma-separated: off, on, pairs, auto (both: off,on)")
    p.add_argument("--lenet-methods", default=None, help="comma-separated calibration methods (default: all)")
    a = p.parse_args()
    reduce = ["off", "on"] if a.reduce_range == "both" else a.reduce_range.split(",")
    bad = [m for m in reduce if m not in ("off", "on", "pairs", "auto")]
    if bad:
        p.error(f"--reduce-range: unknown mode(s) {bad}")
    os.makedirs(a.cache, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    log(f"CPU {sparseinfer.cpu()}, kernels {sparseinfer.isa()}")
    res = {"cpu": sparseinfer.cpu(), "isa": sparseinfer.isa()}
    with tempfile.TemporaryDirectory(prefix="si-int8-acc-") as tmp:
        res["lenet5"] = lenet(tmp, log, reduce, a.lenet_methods.split(",") if a.lenet_methods else None)
        if not a.no_vgg19:
            runs = [vgg19(tmp, log, a.cache, rr) for rr in reduce]
            res["vgg19"] = runs[0] if len(runs) == 1 else runs
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
    log(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
