"""Gradual pruning to per-layer targets set by a sensitivity scan, then weight sharing (issue 15).

    python -m prune.gradual prune/configs/lenet5_gradual.json [--compression 20,30,40] [--fresh]

The run, for one model (a chain of Conv2D / Dense layers, MNIST):

1. **Sensitivity scan.** Each prunable layer alone is pruned at ``|w| < q * sigma`` (``sigma``:
   the std of its trained dense weights, as in prune.pruner) for ``q`` on a grid, without
   retraining, and the validation accuracy is measured: a curve per layer (plotted).
2. **Per-layer targets.** For a target compression ``C`` (all weights / non-zeros), one
   tolerated accuracy drop ``tau`` is found by bisection: each layer takes the largest ``q``
   whose scan drop stays within ``tau``, and ``tau`` is the smallest that removes enough
   weights. Layers whose accuracy does not care (fc1) get high ``q``; sensitive ones (conv1)
   low. Each layer's target is the density its ``q`` left in the scan.
3. **Gradual pruning** (Zhu & Gupta 2017's cubic schedule): over ``prune_epochs`` every layer's
   density goes from 1 to its target, ``d(t) = d_T + (1 - d_T)(1 - t)^3``, with the masks
   updated every ``frequency`` batches while training goes on; the threshold of each update
   is the ``q * sigma`` that leaves the scheduled density (``q`` is reported), and masks only
   lose entries.
4. **Fine-tuning** of the sparse net, masks held: Adam with a cosine decay, the best
   validation epoch kept.
5. Dead neurons are removed and the model file written (CSR).
6. Optionally, **weight sharing** (Deep Compression): per layer, k-means on the non-zero weights
   (linear initialisation over [min, max], ``bits`` bits: ``2**bits - 1`` centroids, code 0
   being the pruned zero), then the centroids are fine-tuned (the gradient of a centroid is
   the sum of its weights' gradients) with the assignments fixed; a second file holds the
   shared weights (at most ``2**bits - 1`` distinct non-zero values per layer), ready for
   ``sparseinfer compress``.

Every decision uses the validation split (the last ``val_size`` training images); the test
set is evaluated on the written files, by the C runtime, for the report only. With several
target compressions (``--compression``), each is run from the dense model, and the one
shipped (``ship``) is the largest whose validation error is within ``ship_tolerance`` of the
dense model's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np

from sparseinfer.compact import kmeans_1d  # Deep Compression's k-means, the one `sparseinfer compress` runs

from . import optimizers

__all__ = ["GradualConfig", "sensitivity_scan", "allocate", "run_one", "share_weights", "main"]


class GradualConfig:
    KEYS = {"comment": None, "model": None, "out": None, "shared_out": None, "report_dir": None,
            "val_size": 5000, "batch_size": 128, "seed": 0, "shift": 2,
            "compressions": [30.0], "ship_tolerance": 0.0015,
            "scan": {"q_step": 0.1, "q_max": 5.0},
            "prune_epochs": 10, "frequency": 50, "learning_rate": 5e-4,
            "finetune_epochs": 10, "finetune_learning_rate": 5e-4,
            "dead_neurons": True,
            "codebook": {"bits": 4, "epochs": 4, "learning_rate": 1e-4, "iterations": 50}}

    def __init__(self, **kw: Any):
        unknown = sorted(set(kw) - set(self.KEYS))
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown} (allowed: {sorted(self.KEYS)})")
        for k, v in self.KEYS.items():
            setattr(self, k, kw.get(k, v))
        for k in ("model", "out"):
            if not isinstance(getattr(self, k), str) or not getattr(self, k):
                raise ValueError(f"{k} must be a path")
        if not self.out.endswith(".npz"):
            raise ValueError(f"out must end in .npz, got {self.out!r}")
        self.report_dir = self.report_dir or self.out[:-4]
        cs = self.compressions
        if not isinstance(cs, list) or not cs or any(isinstance(c, bool) or not isinstance(c, (int, float))
                                                     or not c > 1 for c in cs):
            raise ValueError(f"compressions must be a non-empty list of numbers > 1, got {cs!r}")
        self.compressions = sorted(float(c) for c in cs)
        for k in ("prune_epochs", "finetune_epochs", "frequency", "batch_size", "val_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "finetune_epochs" else 1):
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        self.scan = {**self.KEYS["scan"], **(self.scan or {})}
        if self.codebook is not None:
            self.codebook = {**self.KEYS["codebook"], **self.codebook}
            if not 1 <= int(self.codebook["bits"]) <= 8:
                raise ValueError(f"codebook bits must be 1..8, got {self.codebook['bits']!r}")

    @classmethod
    def from_file(cls, path: str) -> "GradualConfig":
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))

    def to_config(self) -> dict:
        return {k: getattr(self, k) for k in self.KEYS}


# ---------------------------------------------------------------- data


def load_mnist_split(model_path: str, val_size: int) -> dict:
    from sparseinfer.datasets import load_mnist
    from sparseinfer.preprocess import normalize
    manifest = json.loads(np.load(model_path, allow_pickle=False)["model.json"].tobytes().decode("utf-8"))
    spec = manifest["input"]
    x_train, y_train, x_test, y_test = load_mnist(None)
    prep = lambda x: normalize(x[..., None], spec)  # noqa: E731
    return {"x_train": prep(x_train[:-val_size]), "y_train": y_train[:-val_size].astype(np.int32),
            "x_val": prep(x_train[-val_size:]), "y_val": y_train[-val_size:].astype(np.int32),
            "x_test": prep(x_test), "y_test": y_test.astype(np.int32), "manifest": manifest}


def accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch: int = 2500) -> float:
    pred = np.concatenate([np.argmax(np.asarray(model(x[i:i + batch], training=False)), axis=1)
                           for i in range(0, len(x), batch)])
    return float(np.mean(pred == y))


# ---------------------------------------------------------------- scan and allocation


def sensitivity_scan(model: Any, names: Sequence[str], data: Mapping[str, np.ndarray],
                     q_step: float = 0.1, q_max: float = 5.0, verbose: bool = True) -> dict:
    """Per layer: ``{"q": [...], "density": [...], "val": [...]}``, one layer pruned at a time
    at ``|w| < q * sigma``, no retraining; plus the dense baseline."""
    base = accuracy(model, data["x_val"], data["y_val"])
    qs = np.round(np.arange(0.0, q_max + 1e-9, q_step), 6)
    out: dict[str, Any] = {"baseline_val": base, "layers": {}}
    for n in names:
        k = model.get_layer(n).kernel
        w = np.array(k.numpy())
        sigma = float(np.std(w))
        dens, vals = [], []
        for q in qs:
            keep = np.abs(w) >= np.float32(q * sigma)
            k.assign(np.where(keep, w, np.float32(0)))
            dens.append(float(keep.mean()))
            vals.append(accuracy(model, data["x_val"], data["y_val"]))
        k.assign(w)
        out["layers"][n] = {"sigma": sigma, "size": int(w.size), "q": qs.tolist(), "density": dens, "val": vals}
        if verbose:
            marks = [f"q {q:.1f}: {d:.1%} {v:.2%}" for q, d, v in zip(qs, dens, vals) if round(q * 10) % 10 == 0]
            print(f"scan {n:6s} sigma {sigma:.4g} | " + " | ".join(marks), flush=True)
    return out


def allocate(scan: Mapping[str, Any], compression: float) -> dict:
    """Per-layer ``q`` and target density for a total ``compression``: the smallest tolerated
    scan drop ``tau`` such that each layer at its largest ``q`` within ``tau`` (all smaller
    ``q`` within ``tau`` too) leaves at most ``total / compression`` non-zeros."""
    layers = scan["layers"]
    base = scan["baseline_val"]
    total = sum(l["size"] for l in layers.values())
    budget = total / compression

    def pick(tau: float) -> dict:
        res = {}
        for n, l in layers.items():
            j = 0
            for i, v in enumerate(l["val"]):
                if base - v > tau:
                    break
                j = i
            res[n] = {"q": l["q"][j], "density": l["density"][j]}
        return res

    def nnz(p: dict) -> float:
        return sum(p[n]["density"] * layers[n]["size"] for n in layers)

    lo, hi = 0.0, 1.0
    if nnz(pick(hi)) > budget:
        raise ValueError(f"the scan's q range cannot reach {compression}x: raise scan q_max")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if nnz(pick(mid)) <= budget:
            hi = mid
        else:
            lo = mid
    p = pick(hi)
    return {"tau": hi, "layers": p, "nnz": nnz(p), "compression": total / nnz(p)}


# ---------------------------------------------------------------- training


def _threshold_for_density(w: np.ndarray, mask: np.ndarray, density: float) -> float:
    """The magnitude below which weights go so that ``density`` of the layer stays (among the
    weights the mask still keeps)."""
    keep = int(round(density * w.size))
    alive = np.abs(w[mask])
    if keep >= alive.size:
        return 0.0
    if keep <= 0:
        return float(np.inf)
    # the keep-th largest magnitude: weights >= it stay
    return float(np.partition(alive, alive.size - keep)[alive.size - keep])


class _Trainer:
    """A plain tf.function training step for a chain model with masks (and, optionally,
    shared weights): Adam, sparse categorical cross-entropy; after each step the kernels are
    multiplied by their masks (pruned weights stay exactly zero)."""

    def __init__(self, model: Any, names: Sequence[str], masks: Mapping[str, np.ndarray], lr: Any,
                 codebooks: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None):
        import keras
        import tensorflow as tf
        self.tf = tf
        self.model = model
        self.names = list(names)
        self.kernels = {n: model.get_layer(n).kernel for n in names}
        self.mask_vars = {n: tf.Variable(np.asarray(masks[n], np.float32), trainable=False) for n in names}
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy()
        self.opt = optimizers.adam(lr)
        self.codebooks = None
        if codebooks:
            # shared weights: the kernels are centroids[idx]; idx 0 is the pruned zero (fixed)
            self.codebooks = {}
            for n, (cent, idx) in codebooks.items():
                self.codebooks[n] = (tf.Variable(np.asarray(cent, np.float32)),
                                     tf.constant(idx.reshape(-1).astype(np.int32)), len(cent))
            self.vars = [v for v in model.trainable_variables
                         if not any(v is k for k in self.kernels.values())]
        else:
            self.vars = list(model.trainable_variables)

        kernels, mask_vars, cbs = self.kernels, self.mask_vars, self.codebooks
        ordered = list(model.trainable_variables)

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = self.loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, ordered)
            gmap = {id(v): g for v, g in zip(ordered, grads)}
            if cbs is None:
                self.opt.apply_gradients(zip(grads, ordered))
            else:
                pairs = [(gmap[id(v)], v) for v in self.vars]
                for n, (cent, idx, kc) in cbs.items():
                    gk = tf.reshape(gmap[id(kernels[n])], [-1])
                    gc = tf.math.unsorted_segment_sum(gk, idx, kc)
                    gc = tf.tensor_scatter_nd_update(gc, [[0]], [0.0])  # the zero code does not move
                    pairs.append((gc, cent))
                self.opt.apply_gradients(pairs)
                for n, (cent, idx, kc) in cbs.items():
                    kernels[n].assign(tf.reshape(tf.gather(cent, idx), tf.shape(kernels[n])))
            for n in kernels:
                kernels[n].assign(kernels[n] * mask_vars[n])
            return loss

        self.step = step

    def set_masks(self, masks: Mapping[str, np.ndarray]) -> None:
        for n in self.names:
            self.mask_vars[n].assign(np.asarray(masks[n], np.float32))
            k = self.kernels[n]
            k.assign(k.numpy() * np.asarray(masks[n], np.float32))


def _epoch_batches(data: Mapping[str, np.ndarray], seed: Sequence[int], batch: int, shift: int):
    from .augment import random_shift
    rng = np.random.default_rng(list(seed))
    perm = rng.permutation(len(data["x_train"]))
    x = data["x_train"][perm]
    if shift:
        x = random_shift(x, shift, rng)
    y = data["y_train"][perm]
    for i in range(0, len(x), batch):
        yield x[i:i + batch], y[i:i + batch]


def _cosine(lr: float, steps: int, alpha: float = 0.01) -> Any:
    import keras
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps), alpha=alpha)


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


def run_one(cfg: GradualConfig, data: Mapping[str, Any], scan: Mapping[str, Any], compression: float,
            out: str, shared_out: str | None, verbose: bool = True) -> dict:
    """Steps 2-6 for one target compression, from the dense model; returns the record."""
    import keras

    from sparseinfer.export import export_keras

    from .deadneurons import remove_dead_neurons
    from .keras_io import keras_from_model_file
    from .masks import prunable_layers

    t0 = time.time()
    keras.utils.set_random_seed(cfg.seed)
    model = keras_from_model_file(cfg.model)
    names = [l.name for l in prunable_layers(model)]
    alloc = allocate(scan, compression)
    _log(f"[{compression:g}x] tau {alloc['tau']:.4f}; targets "
         + ", ".join(f"{n} q {v['q']:.1f} -> {v['density']:.2%}" for n, v in alloc["layers"].items()))
    sigma = {n: scan["layers"][n]["sigma"] for n in names}
    masks = {n: np.ones(model.get_layer(n).kernel.shape, bool) for n in names}
    steps_per_epoch = int(np.ceil(len(data["x_train"]) / cfg.batch_size))
    ramp_steps = cfg.prune_epochs * steps_per_epoch
    trainer = _Trainer(model, names, masks, cfg.learning_rate)
    history: list[dict] = []
    step = 0
    q_now = {n: 0.0 for n in names}

    def update_masks(t: float) -> None:
        for n in names:
            d_t = alloc["layers"][n]["density"]
            d = d_t + (1.0 - d_t) * (1.0 - t) ** 3
            w = np.asarray(model.get_layer(n).kernel.numpy())
            thr = _threshold_for_density(w, masks[n], d)
            masks[n] &= np.abs(w) >= np.float32(thr)
            if thr > 0:
                q_now[n] = max(q_now[n], thr / sigma[n] if np.isfinite(thr) else float("inf"))
        trainer.set_masks(masks)

    for e in range(cfg.prune_epochs):
        for xb, yb in _epoch_batches(data, (cfg.seed, 1, e), cfg.batch_size, cfg.shift):
            if step % cfg.frequency == 0:
                update_masks(min(1.0, step / max(1, ramp_steps - cfg.frequency)))
            trainer.step(xb, yb)
            step += 1
        update_masks(min(1.0, step / max(1, ramp_steps - cfg.frequency)))
        v = accuracy(model, data["x_val"], data["y_val"])
        dens = {n: float(masks[n].mean()) for n in names}
        history.append({"phase": "prune", "epoch": e + 1, "val": v, "density": dens, "q": dict(q_now)})
        if verbose:
            _log(f"[{compression:g}x] prune epoch {e + 1}/{cfg.prune_epochs}: val {v:.2%}; "
                 + ", ".join(f"{n} {dens[n]:.2%} (q {q_now[n]:.2f})" for n in names))
    update_masks(1.0)

    # fine-tuning with the masks held; the best validation epoch is kept
    ft_steps = cfg.finetune_epochs * steps_per_epoch
    trainer = _Trainer(model, names, masks, _cosine(cfg.finetune_learning_rate, ft_steps))
    best_v, best_w, best_e = accuracy(model, data["x_val"], data["y_val"]), model.get_weights(), 0
    for e in range(cfg.finetune_epochs):
        for xb, yb in _epoch_batches(data, (cfg.seed, 2, e), cfg.batch_size, cfg.shift):
            trainer.step(xb, yb)
        v = accuracy(model, data["x_val"], data["y_val"])
        history.append({"phase": "finetune", "epoch": e + 1, "val": v})
        if verbose:
            _log(f"[{compression:g}x] fine-tune epoch {e + 1}/{cfg.finetune_epochs}: val {v:.2%}")
        if v > best_v:
            best_v, best_w, best_e = v, model.get_weights(), e + 1
    model.set_weights(best_w)
    rec: dict[str, Any] = {"target_compression": compression, "allocation": alloc, "history": history,
                           "finetune_best_epoch": best_e, "val_tf": best_v}

    export_model, dead = (remove_dead_neurons(model) if cfg.dead_neurons else (model, None))
    rec["dead_neurons"] = dead
    spec = data["manifest"]["input"]
    man = data["manifest"]
    export_keras(export_model, out, input_spec=spec, classes=man.get("classes"), name=man.get("name"))
    rec.update(_evaluate_file(out, data))
    if verbose:
        _log(f"[{compression:g}x] wrote {out}: {rec['nnz']:,} non-zeros ({rec['compression']:.2f}x), "
             f"C runtime val {rec['val']:.2%}, test {rec['test']:.2%} (report only)")

    if shared_out and cfg.codebook:
        rec["shared"] = share_weights(out, shared_out, data, cfg, verbose=verbose)
    rec["seconds"] = round(time.time() - t0, 1)
    return rec


def _evaluate_file(path: str, data: Mapping[str, Any]) -> dict:
    """Non-zeros and accuracies of a written file, by the C runtime."""
    import sparseinfer
    m = sparseinfer.load(path)

    def acc(x: np.ndarray, y: np.ndarray) -> float:
        pred = np.concatenate([m.predict(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
        return float(np.mean(pred == y))
    z = np.load(path, allow_pickle=False)
    nnz = 0
    for k in z.files:
        if k.endswith(".W.data") or (k.endswith(".W") and z[k].dtype == np.float32):
            nnz += int(np.count_nonzero(z[k]))
    dense = np.load(data.get("dense_path", "models/lenet5.npz"), allow_pickle=False)
    total = sum(int(dense[k].size) for k in dense.files if k.endswith(".W"))
    return {"nnz": nnz, "weights_dense": total, "compression": total / max(1, nnz),
            "val": acc(data["x_val"], data["y_val"]), "test": acc(data["x_test"], data["y_test"]),
            "file_bytes": os.path.getsize(path)}


def share_weights(path: str, out: str, data: Mapping[str, Any], cfg: GradualConfig, verbose: bool = True) -> dict:
    """k-means per layer on the non-zeros of ``path``'s model, centroid fine-tuning, write ``out``."""
    import keras

    from sparseinfer.export import export_keras

    from .keras_io import keras_from_model_file
    from .masks import prunable_layers

    cb = cfg.codebook
    k = 2 ** int(cb["bits"]) - 1
    keras.utils.set_random_seed(cfg.seed)
    model = keras_from_model_file(path)
    names = [l.name for l in prunable_layers(model)]
    books, masks = {}, {}
    for n in names:
        w = np.asarray(model.get_layer(n).kernel.numpy())
        nz = w != 0
        masks[n] = nz
        cent, a = kmeans_1d(w[nz], min(k, int(nz.sum())) if nz.any() else 1, int(cb["iterations"]))
        idx = np.zeros(w.shape, np.int32)
        idx[nz] = a + 1
        books[n] = (np.concatenate([[0.0], cent]).astype(np.float32), idx)
        model.get_layer(n).kernel.assign(books[n][0][idx])
    v0 = accuracy(model, data["x_val"], data["y_val"])
    if verbose:
        _log(f"weight sharing, {k} centroids + zero per layer: val {v0:.2%} before centroid fine-tuning")
    steps = int(cb["epochs"]) * int(np.ceil(len(data["x_train"]) / cfg.batch_size))
    trainer = _Trainer(model, names, masks, _cosine(float(cb["learning_rate"]), steps), codebooks=books)
    best_v, best_w, best_e, hist = v0, model.get_weights(), 0, []
    for e in range(int(cb["epochs"])):
        for xb, yb in _epoch_batches(data, (cfg.seed, 3, e), cfg.batch_size, cfg.shift):
            trainer.step(xb, yb)
        v = accuracy(model, data["x_val"], data["y_val"])
        hist.append(v)
        if verbose:
            _log(f"centroid fine-tuning epoch {e + 1}/{cb['epochs']}: val {v:.2%}")
        if v > best_v:
            best_v, best_w, best_e = v, model.get_weights(), e + 1
    model.set_weights(best_w)
    for n in names:
        kk = np.asarray(model.get_layer(n).kernel.numpy())
        assert len(np.unique(kk[kk != 0])) <= k, n
    man = data["manifest"]
    export_keras(model, out, input_spec=man["input"], classes=man.get("classes"), name=man.get("name"))
    rec = {"bits": int(cb["bits"]), "centroids": k, "val_before_finetune": v0, "val_per_epoch": hist,
           "best_epoch": best_e, **_evaluate_file(out, data)}
    if verbose:
        _log(f"wrote {out}: C runtime val {rec['val']:.2%}, test {rec['test']:.2%} (report only)")
    return rec


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m prune.gradual", description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--compression", help="comma-separated target compressions (overrides the config)")
    ap.add_argument("--fresh", action="store_true", help="redo the sensitivity scan even if saved")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tfmot", default="bench/results/tfmot_lenet5.json",
                    help="bench/tfmot_curve.py's results, drawn beside ours when the file exists")
    ap.add_argument("--report-only", action="store_true", help="redraw the report from the saved runs")
    a = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cfg = GradualConfig.from_file(a.config)
    if a.compression:
        cfg.compressions = sorted(float(c) for c in a.compression.split(","))
    import tensorflow as tf
    n = a.threads or os.cpu_count() or 1
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, n))
    import keras

    from .keras_io import keras_from_model_file
    from .masks import prunable_layers

    os.makedirs(cfg.report_dir, exist_ok=True)
    data = load_mnist_split(cfg.model, cfg.val_size)
    data["dense_path"] = cfg.model
    scan_path = os.path.join(cfg.report_dir, "sensitivity.json")
    if os.path.exists(scan_path) and not a.fresh:
        with open(scan_path, encoding="utf-8") as f:
            scan = json.load(f)
        _log(f"sensitivity scan read from {scan_path}")
    else:
        keras.utils.set_random_seed(cfg.seed)
        model = keras_from_model_file(cfg.model)
        names = [l.name for l in prunable_layers(model)]
        scan = sensitivity_scan(model, names, data, cfg.scan["q_step"], cfg.scan["q_max"])
        with open(scan_path, "w", encoding="utf-8") as f:
            json.dump(scan, f)
    runs_path = os.path.join(cfg.report_dir, "runs.json")
    runs = {}
    if os.path.exists(runs_path):
        with open(runs_path, encoding="utf-8") as f:
            runs = json.load(f)
    for c in ([] if a.report_only else cfg.compressions):
        key = f"{c:g}"
        out = os.path.join(cfg.report_dir, f"pruned_{key}x.npz")
        shared = os.path.join(cfg.report_dir, f"shared_{key}x.npz")
        runs[key] = run_one(cfg, data, scan, c, out, shared)
        with open(runs_path, "w", encoding="utf-8") as f:
            json.dump(runs, f, indent=1)
    return ship_and_report(cfg, scan, runs, a.tfmot)


def ship_and_report(cfg: GradualConfig, scan: Mapping[str, Any], runs: Mapping[str, Any],
                    tfmot_json: str | None) -> int:
    """Pick the largest compression whose validation accuracy (C runtime, on the written file)
    is within ``ship_tolerance`` of the dense model's, copy it (and its shared-weight twin) to
    ``out`` / ``shared_out``, and write ``report.md`` and the plots."""
    import shutil
    base = scan["baseline_val"]
    ok = [k for k, r in runs.items() if r["val"] >= base - cfg.ship_tolerance]
    _log(f"dense validation {base:.2%}; within {cfg.ship_tolerance:.2%}: {sorted(ok, key=float)}")
    pick = max(ok, key=float) if ok else None
    if pick is not None:
        _log(f"ship: {pick}x (validation {runs[pick]['val']:.2%}; test {runs[pick]['test']:.2%}, report only)")
        shutil.copyfile(os.path.join(cfg.report_dir, f"pruned_{pick}x.npz"), cfg.out)
        _log(f"copied to {cfg.out}")
        shared = os.path.join(cfg.report_dir, f"shared_{pick}x.npz")
        if cfg.shared_out and os.path.exists(shared):
            shutil.copyfile(shared, cfg.shared_out)
            _log(f"copied {shared} to {cfg.shared_out}")
    tfmot = None
    if tfmot_json and os.path.exists(tfmot_json):
        with open(tfmot_json, encoding="utf-8") as f:
            tfmot = json.load(f)
    plot_report(cfg.report_dir, scan, runs, tfmot)
    write_report_md(cfg, scan, runs, tfmot, pick)
    return 0 if pick is not None else 1


def plot_report(report_dir: str, scan: Mapping[str, Any], runs: Mapping[str, Any],
                tfmot: Mapping[str, Any] | None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for n, l in scan["layers"].items():
        ax.plot(l["density"], [100 * (1 - v) for v in l["val"]], marker=".", label=f"{n} ({l['size']:,} weights)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("density of the one pruned layer (|w| >= q sigma), no retraining")
    ax.set_ylabel("validation error, %")
    ax.set_title("LeNet-5 sensitivity scan: one layer pruned at a time")
    ax.invert_xaxis()
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "sensitivity.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ks = sorted(runs, key=float)
    ax.plot([runs[k]["compression"] for k in ks], [100 * (1 - runs[k]["test"]) for k in ks], "o-",
            color="C0", label="prune.gradual: test (C runtime)")
    ax.plot([runs[k]["compression"] for k in ks], [100 * (1 - runs[k]["val"]) for k in ks], "o--",
            color="C0", alpha=0.5, label="prune.gradual: validation")
    if tfmot:
        tk = sorted(tfmot, key=float)
        ax.plot([tfmot[k]["compression"] for k in tk], [100 * (1 - tfmot[k]["test"]) for k in tk], "s-",
                color="C3", label="tfmot PolynomialDecay: test (TF)")
        ax.plot([tfmot[k]["compression"] for k in tk], [100 * (1 - tfmot[k]["val"]) for k in tk], "s--",
                color="C3", alpha=0.5, label="tfmot PolynomialDecay: validation")
    for x, y, name in ((12, 0.77, "Han 2015"), (108, 0.91, "DNS"), (280, 0.75, "SVD")):
        ax.plot([x], [y], "k^", ms=5)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(0.80, color="gray", lw=0.8, ls=":")
    ax.axvline(30, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("compression (weights / non-zero weights)")
    ax.set_ylabel("error, %")
    ax.set_title("LeNet-5 on MNIST: error against compression, same data and epochs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(report_dir, "curve.png"), dpi=110)
    plt.close(fig)


def write_report_md(cfg: GradualConfig, scan: Mapping[str, Any], runs: Mapping[str, Any],
                    tfmot: Mapping[str, Any] | None, pick: str | None) -> None:
    lines = [f"# {cfg.model} pruned by prune.gradual", "",
             f"Configuration: `{cfg.to_config()}`", "",
             f"Dense validation accuracy {scan['baseline_val']:.2%}. Shipped: "
             + (f"**{pick}x** (the largest target within {cfg.ship_tolerance:.2%} of it on validation)" if pick
                else "nothing (no target within the tolerance)"), "",
             "| target | non-zeros | compression | val (C) | test (C) | shared val | shared test | conv1 | conv2 | fc1 | fc2 | tfmot val | tfmot test |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in sorted(runs, key=float):
        r = runs[k]
        d = r["history"][cfg.prune_epochs - 1]["density"] if len(r["history"]) >= cfg.prune_epochs else {}
        sh = r.get("shared") or {}
        tf_ = (tfmot or {}).get(k, {})
        f = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
        lines.append(f"| {k}x | {r['nnz']:,} | {r['compression']:.2f}x | {f(r['val'])} | {f(r['test'])} | "
                     f"{f(sh.get('val'))} | {f(sh.get('test'))} | "
                     + " | ".join(f"{d.get(n, 0):.2%}" for n in ("conv1", "conv2", "fc1", "fc2"))
                     + f" | {f(tf_.get('val'))} | {f(tf_.get('test'))} |")
    lines += ["", "![sensitivity](sensitivity.png)", "", "![curve](curve.png)", ""]
    with open(os.path.join(cfg.report_dir, "report.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
