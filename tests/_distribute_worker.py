"""Subprocess side of tests/test_distribute.py (not collected: the name starts with '_').

    python tests/_distribute_worker.py local OUT.npz     # reference, default, mirrored (2 logical CPUs)
    TF_CONFIG=... python tests/_distribute_worker.py worker OUT.npz   # one multi-worker task

Both modes fine-tune the same LeNet-5 (weights from a fixed NumPy seed, ~50% of each kernel
masked) on the same random MNIST-shaped data in the same global batches, and write the
resulting weights to OUT.npz (``<run>.w<i>`` arrays, ``<run>.losses``); the worker mode
writes only on the chief. ``local`` also writes ``reference``: the same masked training as
a plain single-device loop (tf.GradientTape on the whole global batch, the optimizer's update
rule in NumPy), independent of prune.distribute.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SEED = 1234
N_EXAMPLES = 100          # 100 = 3 x 32 + 4: every epoch ends with a short global batch
GLOBAL_BATCH = 32
EPOCHS = 2                # 8 steps
STEPS = 5                 # the steps= form (data repeated)
SGD = {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9}
ADAM = {"optimizer": "adam", "learning_rate": 1e-3}
ADAM_B = {"optimizer": "adam", "learning_rate": 2e-3}   # a later step's rate (restart)


def problem() -> tuple[list[np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Initial weights, masks (about half of each kernel zero), x and y: fixed by SEED."""
    from prune.models import lenet5
    rng = np.random.default_rng(SEED)
    model = lenet5()
    weights, masks = [], {}
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        k = ws[0]
        fan_in = int(np.prod(k.shape[:-1]))
        m = (rng.random(k.shape) >= 0.5).astype(np.float32)
        masks[layer.name] = m
        weights.append((rng.standard_normal(k.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32) * m)
        weights.append((rng.standard_normal(ws[1].shape) * 0.01).astype(np.float32))
    x = rng.standard_normal((N_EXAMPLES, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, N_EXAMPLES).astype(np.int32)
    return weights, masks, x, y


def reference(weights: list[np.ndarray], masks: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
              epochs: int, opt: dict) -> tuple[list[np.ndarray], list[float]]:
    """Masked training on one device, written out: for each global batch, the gradient of the
    mean loss, masked; the optimizer's update (Keras' SGD-with-momentum or Adam formula) in
    float32 NumPy; the masks re-applied."""
    import keras
    import tensorflow as tf
    from prune.models import lenet5
    model = lenet5()
    model.set_weights(weights)
    tvars = model.trainable_variables
    kernels = {id(layer.kernel): masks[layer.name] for layer in model.layers if layer.weights}
    wmask = [kernels.get(id(v)) for v in tvars]
    w = [np.array(v.numpy()) for v in tvars]
    state = [np.zeros_like(a) for a in w], [np.zeros_like(a) for a in w]
    lr, t, losses = np.float32(opt["learning_rate"]), 0, []
    for _ in range(epochs):
        for lo in range(0, len(x), GLOBAL_BATCH):
            xb, yb = x[lo:lo + GLOBAL_BATCH], y[lo:lo + GLOBAL_BATCH]
            for v, a in zip(tvars, w):
                v.assign(a)
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yb, model(xb, training=True)))
            grads = [g.numpy() * (m if m is not None else 1) for g, m in zip(tape.gradient(loss, tvars), wmask)]
            losses.append(float(loss))
            t += 1
            for i, g in enumerate(grads):
                if opt["optimizer"] == "sgd":
                    state[0][i] = np.float32(opt["momentum"]) * state[0][i] - lr * g
                    w[i] = w[i] + state[0][i]
                else:  # keras.optimizers.Adam defaults: beta 0.9, 0.999, epsilon 1e-7
                    b1, b2, eps = np.float32(0.9), np.float32(0.999), np.float32(1e-7)
                    state[0][i] = state[0][i] + (g - state[0][i]) * (1 - b1)
                    state[1][i] = state[1][i] + (g * g - state[1][i]) * (1 - b2)
                    alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                    w[i] = w[i] - state[0][i] * alpha / (np.sqrt(state[1][i]) + eps)
                if wmask[i] is not None:
                    w[i] = w[i] * wmask[i]
    for v, a in zip(tvars, w):
        v.assign(a)
    return model.get_weights(), losses


def run(strategy, weights, masks, x, y, opt: dict, **how) -> tuple[list[np.ndarray], list[float]]:
    from prune.distribute import MaskedTrainer
    from prune.models import lenet5
    trainer = MaskedTrainer(lenet5, masks, strategy=strategy, global_batch_size=GLOBAL_BATCH, seed=SEED,
                            log_every=4, **opt)
    trainer.set_weights(weights)
    trainer.fit((x, y), **how)
    return trainer.get_weights(), trainer.losses


def second_problem(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The masks of a later pruning step: each kernel's kept weights thinned by a further ~30%."""
    rng = np.random.default_rng(SEED + 1)
    return {n: m * (rng.random(m.shape) >= 0.3).astype(np.float32) for n, m in masks.items()}


def restarted(strategy, weights, masks, x, y) -> tuple[tuple[list[np.ndarray], list[float]], dict[str, str]]:
    """One trainer through two pruning steps: trained with ADAM on ``masks``, then restarted
    with the second step's masks and ADAM_B's rate, loaded with ``weights`` and trained again
    (what the pruner does under a strategy); plus the errors restart gives for masks of other
    layers and for a schedule in place of a float."""
    import keras

    from prune.distribute import MaskedTrainer
    from prune.models import lenet5
    trainer = MaskedTrainer(lenet5, masks, strategy=strategy, global_batch_size=GLOBAL_BATCH, seed=SEED,
                            log_every=0, **ADAM)
    trainer.set_weights(weights)
    trainer.fit((x, y), epochs=EPOCHS)
    errors = {}
    for what, args in {"layers": ({"conv1": masks["conv1"]}, 1e-3),
                       "schedule": (masks, keras.optimizers.schedules.CosineDecay(1e-3, 10))}.items():
        try:
            trainer.restart(*args)
            errors[what] = ""
        except ValueError as e:
            errors[what] = str(e)
    trainer.restart(second_problem(masks), ADAM_B["learning_rate"])
    trainer.set_weights(weights)
    trainer.fit((x, y), epochs=EPOCHS)
    return (trainer.get_weights(), trainer.losses), errors


def pack(results: dict) -> dict[str, np.ndarray]:
    out = {}
    for name, (weights, losses) in results.items():
        out.update({f"{name}.w{i}": w for i, w in enumerate(weights)})
        out[f"{name}.losses"] = np.asarray(losses, np.float64)
    return out


def main(argv: list[str]) -> int:
    mode, out = argv[1], argv[2]
    from prune.distribute import DistributeConfig, is_chief, make_strategy, setup_logical_cpus
    t0 = time.time()
    if mode == "local":
        # the logical devices first: nothing may initialise TensorFlow before this
        mirrored = make_strategy(DistributeConfig("mirrored", logical_cpus=2))
        default = make_strategy(DistributeConfig())
        weights, masks, x, y = problem()
        results = {
            "reference": reference(weights, masks, x, y, EPOCHS, SGD),
            "reference_adam": reference(weights, masks, x, y, EPOCHS, ADAM),
            "default": run(default, weights, masks, x, y, SGD, epochs=EPOCHS),
            "mirrored": run(mirrored, weights, masks, x, y, SGD, epochs=EPOCHS),
            "default_adam": run(default, weights, masks, x, y, ADAM, epochs=EPOCHS),
            "mirrored_adam": run(mirrored, weights, masks, x, y, ADAM, epochs=EPOCHS),
            "default_steps": run(default, weights, masks, x, y, SGD, steps=STEPS),
            "mirrored_steps": run(mirrored, weights, masks, x, y, SGD, steps=STEPS),
        }
        # a trainer restarted for a second step, against a new one made for it
        results["mirrored_restarted"], restart_errors = restarted(mirrored, weights, masks, x, y)
        results["mirrored_fresh_b"] = run(mirrored, weights, second_problem(masks), x, y, ADAM_B, epochs=EPOCHS)
        # TensorFlow is up now: asking for the same split is a no-op, another one an error
        assert len(setup_logical_cpus(2)) == 2
        try:
            setup_logical_cpus(3)
            late_error = ""
        except RuntimeError as e:
            late_error = str(e)
        extra = {"late_error": np.array(late_error),
                 **{f"restart_error.{k}": np.array(v) for k, v in restart_errors.items()},
                 **{f"mask_b.{n}": m for n, m in second_problem(masks).items()}}
    elif mode == "worker":
        strategy = make_strategy(DistributeConfig("multi_worker", timeout_seconds=120))
        weights, masks, x, y = problem()
        results = {"multi_worker": run(strategy, weights, masks, x, y, SGD, epochs=EPOCHS),
                   "multi_worker_adam": run(strategy, weights, masks, x, y, ADAM, epochs=EPOCHS)}
        extra = {}
        if not is_chief(strategy):
            print(f"worker done in {time.time() - t0:.1f} s (not chief: nothing written)", flush=True)
            return 0
    else:
        raise SystemExit(f"unknown mode {mode!r}: local or worker")
    np.savez(out, **pack(results), **extra, **{f"mask.{n}": m for n, m in masks.items()})
    print(f"{mode}: wrote {out} in {time.time() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
