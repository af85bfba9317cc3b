"""Iterative magnitude pruning with fine-tuning (Han et al. 2015), resumable.

    from prune.pruner import PruneConfig, prune
    result = prune(PruneConfig.from_file("prune/configs/lenet5.json"))

For each group of the schedule (prune.schedule), in order: raise q one step, prune the
group's layers where ``|w| < q * sigma`` (sigma: std of the layer's original weights),
fine-tune with the masks held (prune.masks), and check validation accuracy; if it cannot
come back within the group's tolerance of the baseline, restore the last good step and go
to the next group. Then optionally fine-tune everything, remove dead neurons
(prune.deadneurons), export the model file (CSR where smaller) and write the report
(prune.report). The state is checkpointed after every step; a run started again with the
same configuration resumes from the last checkpoint.

Validation is the last ``val_size`` images of the training set (never the test set); the
test set is only evaluated on the written file, at the end, for the report.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from sparseinfer.format import same_file

from . import optimizers
from .schedule import LayerGroup, PruningSchedule

__all__ = ["PruneConfig", "prune", "StepInterrupt", "load_data"]

CHECKPOINT_VERSION = 1


class StepInterrupt(Exception):
    """Raised by an ``on_step_end`` hook to stop a run after a checkpoint (tests)."""


class PruneConfig:
    """Everything a pruning run needs; validated here, read from / written to JSON.

    ``model``: input model file (sparseinfer format); ``out``: pruned model file;
    ``report_dir``: report directory (default: ``out`` without ``.npz``);
    ``checkpoint``: checkpoint file (default ``<report_dir>/checkpoint.npz``);
    ``schedule``: a PruningSchedule (or its config);
    ``dataset``: ``{"name": "mnist", "mnist_dir": null, "val_size": 5000,
    "train_limit": null, "val_limit": null}`` (limits take the first images of each split,
    for quick runs); ``batch_size``; ``seed``; ``threads`` (TensorFlow, null: all cores);
    ``dead_neurons``: remove them before export; ``storage``: export_keras storage;
    ``deterministic``: TensorFlow op determinism; ``plots``: write PNGs;
    ``evaluate_test``: evaluate the written file on the test set (report only);
    ``lr_schedule``: ``constant`` or ``cosine`` (decay within each step's fine-tuning);
    ``augment``: ``{"shift": 2}`` moves each training image by up to 2 pixels every epoch
    (prune.augment), or null; validation and test images are never augmented.
    """

    KEYS = ("model", "out", "report_dir", "checkpoint", "schedule", "dataset", "batch_size", "seed",
            "threads", "dead_neurons", "storage", "deterministic", "plots", "evaluate_test", "comment",
            "lr_schedule", "augment", "distribute")
    MNIST_KEYS = ("name", "mnist_dir", "val_size", "train_limit", "val_limit")
    FOLDER_KEYS = ("name", "root", "labels", "sizes", "split_seed", "flip", "max_upscale", "eval_batch", "verify")

    def __init__(self, model: str, out: str, schedule: PruningSchedule | Mapping[str, Any],
                 report_dir: str | None = None, checkpoint: str | None = None,
                 dataset: Mapping[str, Any] | None = None, batch_size: int = 128, seed: int = 0,
                 threads: int | None = None, dead_neurons: bool = True, storage: str = "auto",
                 deterministic: bool = False, plots: bool = True, evaluate_test: bool = True,
                 comment: str | None = None, lr_schedule: str = "constant",
                 augment: Mapping[str, Any] | None = None, distribute: Mapping[str, Any] | None = None):
        for k, v in (("model", model), ("out", out)):
            if not isinstance(v, (str, os.PathLike)) or not str(v):
                raise ValueError(f"{k} must be a path, got {v!r}")
        self.model, self.out = str(model), str(out)
        if not self.out.endswith(".npz"):
            raise ValueError(f"out must end in .npz, got {self.out!r}")
        if same_file(self.model, self.out):
            raise ValueError(f"out {self.out!r} is the model being pruned; write the pruned model to another file")
        self.report_dir = str(report_dir) if report_dir else self.out[:-4]
        self.checkpoint = str(checkpoint) if checkpoint else os.path.join(self.report_dir, "checkpoint.npz")
        self.schedule = schedule if isinstance(schedule, PruningSchedule) else PruningSchedule.from_config(schedule)
        self.dataset = self._check_dataset(dataset)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or null, got {threads!r}")
        if storage not in ("auto", "dense", "csr"):
            raise ValueError(f"storage must be auto, dense or csr, got {storage!r}")
        for k, v in (("dead_neurons", dead_neurons), ("deterministic", deterministic), ("plots", plots),
                     ("evaluate_test", evaluate_test)):
            if not isinstance(v, bool):
                raise ValueError(f"{k} must be true or false, got {v!r}")
        self.batch_size, self.seed, self.threads = batch_size, seed, threads
        self.dead_neurons, self.storage, self.deterministic = dead_neurons, storage, deterministic
        self.plots, self.evaluate_test, self.comment = plots, evaluate_test, comment
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be constant or cosine, got {lr_schedule!r}")
        self.lr_schedule = lr_schedule
        from .augment import Augment
        from .distribute import DistributeConfig
        self.augment = Augment.from_config(augment)
        if self.augment and self.dataset["name"] != "mnist":
            raise ValueError("augment (pixel shifts) is for MNIST; an image folder is augmented by random "
                             "crops and flips (dataset 'flip')")
        self.distribute = DistributeConfig.from_config(distribute)

    @classmethod
    def _check_dataset(cls, dataset: Mapping[str, Any] | None) -> dict:
        name = (dataset or {}).get("name", "mnist")
        if name == "mnist":
            keys = cls.MNIST_KEYS
            ds: dict[str, Any] = {"name": "mnist", "mnist_dir": None, "val_size": 5000, "train_limit": None,
                                  "val_limit": None}
        elif name == "imagefolder":
            keys = cls.FOLDER_KEYS
            ds = {"name": "imagefolder", "root": None, "labels": None, "sizes": [30, 10, 10], "split_seed": 0,
                  "flip": True, "max_upscale": 8.0, "eval_batch": 16, "verify": True}
        else:
            raise ValueError(f"dataset name must be 'mnist' or 'imagefolder', got {name!r}")
        unknown = sorted(set(dataset or {}) - set(keys))
        if unknown:
            raise ValueError(f"dataset {name}: unknown keys {unknown} (allowed: {list(keys)})")
        ds.update(dataset or {})
        posint = lambda v: not isinstance(v, bool) and isinstance(v, int) and v >= 1  # noqa: E731
        if name == "mnist":
            for k in ("val_size", "train_limit", "val_limit"):
                if ds[k] is not None and not posint(ds[k]):
                    raise ValueError(f"dataset {k} must be a positive integer or null, got {ds[k]!r}")
            return ds
        if not isinstance(ds["root"], str) or not ds["root"]:
            raise ValueError(f"dataset imagefolder needs 'root', the image folder, got {ds['root']!r}")
        if ds["labels"] is not None and (not isinstance(ds["labels"], str) or not ds["labels"]):
            raise ValueError(f"dataset labels must be a label list file or null, got {ds['labels']!r}")
        sizes = ds["sizes"]
        if (not isinstance(sizes, (list, tuple)) or len(sizes) != 3
                or any(not (v is None or posint(v) or (isinstance(v, float) and 0 < v < 1)) for v in sizes)):
            raise ValueError("dataset sizes must be [train, val, test] per class, each a count, a fraction "
                             f"or null, got {sizes!r}")
        ds["sizes"] = list(sizes)
        if isinstance(ds["split_seed"], bool) or not isinstance(ds["split_seed"], int) or ds["split_seed"] < 0:
            raise ValueError(f"dataset split_seed must be a non-negative integer, got {ds['split_seed']!r}")
        for k in ("flip", "verify"):
            if not isinstance(ds[k], bool):
                raise ValueError(f"dataset {k} must be true or false, got {ds[k]!r}")
        mu = ds["max_upscale"]
        if mu is not None and (isinstance(mu, bool) or not isinstance(mu, (int, float)) or mu <= 0):
            raise ValueError(f"dataset max_upscale must be a positive number or null, got {mu!r}")
        if not posint(ds["eval_batch"]):
            raise ValueError(f"dataset eval_batch must be a positive integer, got {ds['eval_batch']!r}")
        return ds

    def to_config(self) -> dict:
        return {"comment": self.comment, "model": self.model, "out": self.out,
                "report_dir": self.report_dir, "checkpoint": self.checkpoint,
                "dataset": dict(self.dataset), "batch_size": self.batch_size, "seed": self.seed,
                "threads": self.threads, "dead_neurons": self.dead_neurons, "storage": self.storage,
                "deterministic": self.deterministic, "plots": self.plots,
                "evaluate_test": self.evaluate_test, "lr_schedule": self.lr_schedule,
                "augment": self.augment.to_config() if self.augment else None,
                "distribute": self.distribute.to_config(),
                "schedule": self.schedule.to_config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "PruneConfig":
        if not isinstance(config, Mapping):
            raise ValueError("a pruning configuration must be a JSON object")
        unknown = sorted(set(config) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown} (allowed: {list(cls.KEYS)})")
        for k in ("model", "out", "schedule"):
            if k not in config:
                raise ValueError(f"the configuration needs {k!r}")
        return cls(**dict(config))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "PruneConfig":
        try:
            return cls.from_config(json.loads(Path(path).read_text("utf-8")))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from e

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed (not the output paths or plotting)."""
        c = self.to_config()
        key = {k: c[k] for k in ("model", "dataset", "batch_size", "seed", "schedule", "lr_schedule")}
        if c["augment"]:  # absent from older fingerprints, so their checkpoints still resume
            key["augment"] = c["augment"]
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def default_schedule(model: Any) -> PruningSchedule:
    """Layer by layer, dense layers first (largest first), then convolutions (last first)."""
    import keras
    from .masks import prunable_layers
    layers = prunable_layers(model)
    dense = sorted([l for l in layers if isinstance(l, keras.layers.Dense)], key=lambda l: -l.kernel.shape.num_elements()
                   if hasattr(l.kernel.shape, "num_elements") else -int(np.prod(l.kernel.shape)))
    conv = [l for l in layers if isinstance(l, keras.layers.Conv2D)][::-1]
    groups = [LayerGroup([l.name], kind="dense") for l in dense] + [LayerGroup([l.name], kind="conv") for l in conv]
    return PruningSchedule(groups, final_epochs=2)


# ---------------------------------------------------------------- data


def load_data(config: PruneConfig, input_spec: Mapping[str, Any], with_test: bool = True,
              verbose: bool = True) -> dict:
    """MNIST as the model file's input spec wants it: ``x = (pixel - mean) / std``.
    Train: the first ``60000 - val_size`` training images; validation: the last ``val_size``.

    An image folder (``dataset.name == "imagefolder"``): ``{"folder": True, "train", "val",
    "test": ImageSet, "spec": input_spec}``, split per class by prune.imagefolder.split_images;
    images are decoded by tf.data as they are needed, with the runtime's preprocessing."""
    ds = config.dataset
    if ds["name"] == "imagefolder":
        from .imagefolder import load_images, split_images
        images = load_images(ds["root"], ds["labels"])
        parts = split_images(images, *ds["sizes"], seed=ds["split_seed"])
        if not with_test:
            parts["test"] = parts["test"].subset([])
        if ds["verify"]:
            # decode every image the run will use once, now, so that a bad file stops the run
            # before hours of fine-tuning rather than when tf.data reaches it
            from .imagefolder import verify_images
            n = sum(len(parts[p]) for p in ("train", "val", "test"))
            t0 = time.time()
            _log(verbose, f"checking that all {n:,} images of the split decode ({images.describe()})")
            for part in ("train", "val", "test"):
                verify_images(parts[part], input_spec, ds["max_upscale"], threads=os.cpu_count() or 2)
            _log(verbose, f"  {n:,} images checked in {time.time() - t0:.0f} s")
        return {"folder": True, "spec": dict(input_spec), **parts}

    from sparseinfer.datasets import load_mnist
    from sparseinfer.preprocess import normalize
    x_train, y_train, x_test, y_test = load_mnist(ds["mnist_dir"])

    def prep(x: np.ndarray) -> np.ndarray:
        return normalize(x[..., None], input_spec)

    v = ds["val_size"]
    if v >= len(x_train):
        raise ValueError(f"val_size {v} leaves no training images")
    xt, yt = x_train[:-v], y_train[:-v]
    xv, yv = x_train[-v:], y_train[-v:]
    if ds["train_limit"]:
        xt, yt = xt[:ds["train_limit"]], yt[:ds["train_limit"]]
    if ds["val_limit"]:
        xv, yv = xv[:ds["val_limit"]], yv[:ds["val_limit"]]
    out = {"x_train": prep(xt), "y_train": yt.astype(np.int32), "x_val": prep(xv), "y_val": yv.astype(np.int32)}
    if with_test:
        out["x_test"], out["y_test"] = prep(x_test), y_test.astype(np.int32)
    return out


# ---------------------------------------------------------------- data sources


class _ArrayData:
    """Preprocessed arrays in memory (MNIST): a seeded permutation and augmentation per epoch."""

    def __init__(self, data: Mapping[str, np.ndarray], config: PruneConfig):
        self.config = config
        self.x_tr, self.y_tr = data["x_train"], data["y_train"]
        self.x_val, self.y_val = data["x_val"], data["y_val"]
        self.test = (data["x_test"], data["y_test"]) if "x_test" in data else None
        self.n_train, self.n_val = len(self.x_tr), len(self.x_val)

    def val_accuracy(self, model: Any) -> float:
        return _accuracy(model, self.x_val, self.y_val)

    def epoch_arrays(self, step_seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.config.seed, step_seed, epoch])
        perm = rng.permutation(self.n_train)
        return self.config.augment(self.x_tr[perm], rng), self.y_tr[perm]

    def fit(self, model: Any, step_seed: int, epoch: int, callbacks: list) -> None:
        x, y = self.epoch_arrays(step_seed, epoch)
        model.fit(x, y, batch_size=self.config.batch_size, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)

    def trainer_data(self, step_seed: int, epoch: int) -> Any:
        return self.epoch_arrays(step_seed, epoch)

    def evaluate_file(self, path: str, keras_from_model_file: Callable) -> dict:
        rebuilt = keras_from_model_file(path)
        ev: dict[str, Any] = {"tf_val": _accuracy(rebuilt, self.x_val, self.y_val), "tf_test": None,
                              "runtime_val": None, "runtime_test": None}
        try:
            import sparseinfer
            rt = sparseinfer.load(path)

            def runtime_accuracy(x: np.ndarray, y: np.ndarray) -> float:
                pred = np.concatenate([rt.predict(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
                return float(np.mean(pred == y))
            ev["runtime_val"] = runtime_accuracy(self.x_val, self.y_val)
            if self.test is not None:
                ev["runtime_test"] = runtime_accuracy(*self.test)
        except (ImportError, OSError) as e:  # runtime not built: report TensorFlow only
            ev["runtime_error"] = str(e)
        if self.test is not None:
            ev["tf_test"] = _accuracy(rebuilt, *self.test)
        return ev


class _FolderData:
    """An image folder split three ways; tf.data decodes with the runtime's preprocessing
    (prune.imagefolder): random crops (and flips) for training, centre crops otherwise."""

    def __init__(self, data: Mapping[str, Any], config: PruneConfig):
        self.config = config
        self.parts = {k: data[k] for k in ("train", "val", "test")}
        self.spec = data["spec"]
        self.n_train, self.n_val = len(self.parts["train"]), len(self.parts["val"])
        if not self.n_train or not self.n_val:
            raise ValueError(f"{config.dataset['root']}: the split leaves {self.n_train} training and "
                             f"{self.n_val} validation images; both must be at least 1")

    def _dataset(self, part: str, batch: int, training: bool = False, seed: int = 0) -> Any:
        from .imagefolder import make_dataset
        ds = self.config.dataset
        return make_dataset(self.parts[part], self.spec, batch_size=batch, training=training,
                            flip=training and ds["flip"], seed=seed, max_upscale=ds["max_upscale"])

    def val_accuracy(self, model: Any) -> float:
        from .imagefolder import image_errors
        hits = 0
        with image_errors():
            for x, y in self._dataset("val", self.config.dataset["eval_batch"]).as_numpy_iterator():
                hits += int((np.argmax(np.asarray(model(x, training=False)), axis=1) == y).sum())
        return hits / self.n_val

    def _train(self, step_seed: int, epoch: int) -> Any:
        # one seed per (run seed, step, epoch): a resumed run draws the same crops and order
        seed = int.from_bytes(hashlib.sha256(f"{self.config.seed}/{step_seed}/{epoch}".encode()).digest()[:4], "little")
        return self._dataset("train", self.config.batch_size, training=True, seed=seed)

    def fit(self, model: Any, step_seed: int, epoch: int, callbacks: list) -> None:
        from .imagefolder import image_errors
        with image_errors():
            model.fit(self._train(step_seed, epoch), epochs=1, verbose=0, shuffle=False, callbacks=callbacks)

    def trainer_data(self, step_seed: int, epoch: int) -> Any:
        return self._train(step_seed, epoch).unbatch()

    def evaluate_file(self, path: str, keras_from_model_file: Callable) -> dict:
        """Top-1 (and top-5) of the written file by TensorFlow and by the runtime (prune.evaluate)."""
        import sparseinfer

        from .evaluate import evaluate
        ds = self.config.dataset
        ev: dict[str, Any] = {"tf_val": None, "tf_test": None, "runtime_val": None, "runtime_test": None}
        keras_model, runtime = keras_from_model_file(path), sparseinfer.load(path)  # once for both parts
        for part in ("val", "test"):
            if len(self.parts[part]):
                r = evaluate(path, self.parts[part], batch_size=ds["eval_batch"], max_upscale=ds["max_upscale"],
                             keras_model=keras_model, runtime=runtime)
                ev[f"tf_{part}"], ev[f"runtime_{part}"] = r["tf"]["top1"], r["runtime"]["top1"]
                ev[f"{part}_top5"] = {"tf": r["tf"]["top5"], "runtime": r["runtime"]["top5"],
                                      "top1_differ": r["top1_differ"], "images": r["images"]}
        return ev


# ---------------------------------------------------------------- helpers


def _progress_callback(total_batches: int, batch_size: int, every: float = 30.0) -> Any:
    """A keras Callback printing, at most every ``every`` seconds, how far the epoch is (for
    the epochs that take minutes: VGG19 on a CPU; a LeNet-5 epoch never prints)."""
    import keras

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = self.last = time.time()

        def on_train_batch_end(self, batch, logs=None):
            now = time.time()
            if now - self.last < every:
                return
            self.last = now
            done = batch + 1
            rate = done * batch_size / (now - self.t0)
            left = (total_batches - done) * batch_size / rate if rate > 0 else 0.0
            loss = (logs or {}).get("loss")
            print(f"    batch {done:,}/{total_batches:,}" + (f", loss {float(loss):.4f}" if loss is not None else "")
                  + f", {rate:.1f} images/s, about {left / 60:.1f} min left in this epoch", flush=True)

    return Progress()


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    # direct calls, not model.predict: predict's function is retraced after every compile
    pred = np.concatenate([np.argmax(np.asarray(model(x[i:i + batch], training=False)), axis=1)
                           for i in range(0, len(x), batch)])
    return float(np.mean(pred == y))


def _configure_tf(threads: int | None, deterministic: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    n = threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, n))
    except RuntimeError:
        pass  # TensorFlow already initialised (tests): keep its pools
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _save_checkpoint(path: str, model: Any, masks: Mapping[str, np.ndarray], state: dict) -> None:
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"mask.{n}": m.astype(np.uint8) for n, m in masks.items()})
    arrays["state.json"] = np.frombuffer(json.dumps(state).encode("utf-8"), dtype=np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_checkpoint(path: str) -> tuple[list[np.ndarray], dict[str, np.ndarray], dict]:
    with np.load(path, allow_pickle=False) as z:
        state = json.loads(z["state.json"].tobytes().decode("utf-8"))
        n = sum(1 for k in z.files if k.startswith("w") and k[1:].isdigit())
        weights = [z[f"w{i}"] for i in range(n)]
        masks = {k[5:]: z[k] != 0 for k in z.files if k.startswith("mask.")}
    return weights, masks, state


def _nnz(model: Any, names: Sequence[str]) -> dict[str, int]:
    return {n: int(np.count_nonzero(model.get_layer(n).kernel.numpy())) for n in names}


def _adam_key(trainable: Sequence[str] | None, lr: Any) -> tuple:
    """Which reused optimizer a step takes: its trainable layers, and whether its rate is a
    schedule (Keras does not let a float replace a schedule)."""
    import keras
    return (None if trainable is None else tuple(trainable),
            isinstance(lr, keras.optimizers.schedules.LearningRateSchedule))


def _fresh_adam(cache: dict[tuple, Any], trainable: Sequence[str] | None, lr: Any) -> Any:
    """An Adam in a new one's state (step 0, both moments zero) at learning rate ``lr`` (a
    float or a schedule), the same object each time for a set of trainable layers. A new
    one each step allocates its moments before the last one's are collected (the old
    optimizer sits in reference cycles until gc runs): even with prune.optimizers, 4 steps of
    VGG19's fully connected group peaked at 11.1 GB against 7.9 GB reused; with keras' own
    Adam the last one's moments also stayed for good (prune/optimizers.py)."""
    import keras
    key = _adam_key(trainable, lr)
    opt = cache.get(key)
    if opt is None:
        opt = cache[key] = optimizers.adam(lr)
        return opt
    for v in opt.variables:  # the step counter, the moments (and a float rate, set below)
        v.assign(keras.ops.zeros(v.shape, v.dtype))
    opt.learning_rate = lr
    return opt


def _release_memory() -> None:
    """Collect the Keras models held in reference cycles, then hand glibc's free pages back to
    the system: TensorFlow's threads leave freed memory spread over many malloc arenas (after
    a full-size VGG19 stage, malloc_trim gave back 0.55 GB of the 5.1 GB still resident)."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to trim
        pass


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(msg, flush=True)


# ---------------------------------------------------------------- the run


def prune(config: PruneConfig, *, resume: bool = True, data: Mapping[str, np.ndarray] | None = None,
          on_step_end: Callable[[dict], None] | None = None, verbose: bool = True,
          command: str | None = None) -> dict:
    """Run (or resume) the pruning described by ``config``; returns the report dict.

    ``data``: ``{"x_train", "y_train", "x_val", "y_val"[, "x_test", "y_test"]}`` already
    preprocessed (default: MNIST per ``config.dataset``). ``on_step_end(state)`` is called
    after every step's checkpoint (a test raises StepInterrupt there to simulate a crash).
    ``resume``: continue from ``config.checkpoint`` if it exists (it must have been made
    with the same configuration); False starts afresh.
    """
    t_start = time.time()
    _release_memory()  # an earlier run's Keras model (in reference cycles: a test's interrupted run) goes first
    _configure_tf(config.threads, config.deterministic)
    strategy = None
    if config.distribute.strategy != "default":
        from .distribute import make_strategy
        strategy = make_strategy(config.distribute, verbose=verbose)  # before any other TensorFlow work
    import keras

    from sparseinfer.export import export_keras

    from .deadneurons import remove_dead_neurons
    from .keras_io import keras_from_model_file
    from .masks import (apply_masks, dropout_rates, mask_callback, prunable_layers, set_dropout_rates,
                        threshold_mask)

    if not os.path.isfile(config.model):
        raise FileNotFoundError(f"{config.model}: no such model file (make one with `python -m prune.train`, "
                                "`sparseinfer-prune import WEIGHTS --out MODEL.npz` or sparseinfer.export_keras)")
    manifest_in = json.loads(np.load(config.model, allow_pickle=False)["model.json"].tobytes().decode("utf-8"))
    model = keras_from_model_file(config.model)
    names_all = [l.name for l in prunable_layers(model)]
    for n in config.schedule.layers:
        if n not in names_all:
            raise ValueError(f"schedule names layer {n!r}, but {config.model} has prunable layers {names_all}")
    if data is None:
        data = load_data(config, manifest_in["input"], with_test=config.evaluate_test, verbose=verbose)
    src = _FolderData(data, config) if data.get("folder") else _ArrayData(data, config)
    _log(verbose, f"{config.model}: layers {names_all}; {src.n_train} training images, "
                  f"{src.n_val} validation images")
    from .distribute import is_chief
    chief = strategy is None or is_chief(strategy)
    trainer: Any = None

    original = {n: np.array(model.get_layer(n).kernel.numpy()) for n in names_all}
    sizes = {n: int(original[n].size) for n in names_all}
    dropout_base = {l.name: float(l.rate) for l in model.layers if isinstance(l, keras.layers.Dropout)}
    fp = config.fingerprint()

    state: dict[str, Any] | None = None
    masks: dict[str, np.ndarray]
    if resume and os.path.exists(config.checkpoint):
        weights, masks, state = _load_checkpoint(config.checkpoint)
        if state.get("fingerprint") != fp or state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{config.checkpoint} was made with another configuration; delete it or "
                             "run with --fresh")
        model.set_weights(weights)
        state["resumed"] = state.get("resumed", 0) + 1
        _log(verbose, f"resuming from {config.checkpoint}: group {state['group_index']}, "
                      f"step {state['step_counter']} done")
    else:
        masks = {n: np.ones(original[n].shape, dtype=bool) for n in names_all}
        sigma = {n: float(np.std(original[n])) for n in names_all}
        keras.utils.set_random_seed(config.seed)
        baseline = src.val_accuracy(model)
        state = {"version": CHECKPOINT_VERSION, "fingerprint": fp, "baseline_val": baseline,
                 "sigma": sigma, "q": {n: 0.0 for n in names_all}, "group_index": 0, "group_step": 0,
                 "step_counter": 0, "final_done": False, "history": [], "elapsed": 0.0, "resumed": 0,
                 "final": None}
        _log(verbose, f"baseline validation accuracy {baseline:.4%}; sigma "
                      + ", ".join(f"{n} {s:.4g}" for n, s in sigma.items()))
    baseline = state["baseline_val"]
    sigma = state["sigma"]
    groups = config.schedule.groups

    def set_dropout() -> None:
        if dropout_base:
            set_dropout_rates(model, dropout_rates(model, dropout_base, sizes))

    steps_per_epoch = int(np.ceil(src.n_train / config.batch_size))
    adams: dict[tuple, Any] = {}  # _fresh_adam's optimizers, one per set of trainable layers
    trainers: dict[tuple, Any] = {}  # the same for the MaskedTrainer under a strategy

    def compile_for(trainable: Sequence[str] | None, lr: float, epochs: int = 1, alpha: float = 0.1) -> None:
        nonlocal trainer
        for l in model.layers:
            if l.weights:
                l.trainable = trainable is None or l.name in trainable
        if config.lr_schedule == "cosine" and epochs > 0:
            # lr -> alpha * lr over the first `epochs` epochs, then alpha * lr (extra epochs)
            lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * steps_per_epoch, alpha=alpha)
        if strategy is None:
            model.compile(optimizer=_fresh_adam(adams, trainable, lr), loss="sparse_categorical_crossentropy")
            return
        # under a tf.distribute strategy: a copy of the model in the strategy's scope, trained by
        # prune.distribute's masked loop; one per set of trainable layers, restarted each step
        # in a new one's state (a fresh Adam, like model.compile above)
        from .distribute import MaskedTrainer

        key = _adam_key(trainable, lr)
        trainer = trainers.get(key)
        if trainer is None:
            trainers.clear()  # another group's: its memory stays with TensorFlow until the process ends
            # clone_model copies each layer's config, the current (adjusted) dropout rates included
            trainer = trainers[key] = MaskedTrainer(
                lambda: keras.models.clone_model(model), masks, strategy=strategy, global_batch_size=config.batch_size,
                learning_rate=lr, optimizer="adam", trainable=trainable, seed=config.seed,
                log_every=50 if verbose and steps_per_epoch >= 200 else 0)
        else:
            trainer.restart({n: masks[n] for n in trainer.masks}, lr,
                            dropout={l.name: l.rate for l in model.layers if isinstance(l, keras.layers.Dropout)})
        trainer.set_weights(model.get_weights())

    def fit_epoch(step_seed: int, epoch: int) -> None:
        keras.utils.set_random_seed(config.seed * 100003 + step_seed * 101 + epoch)
        if trainer is None:
            cbs = [mask_callback(masks)]
            if verbose:
                cbs.append(_progress_callback(steps_per_epoch, config.batch_size))
            src.fit(model, step_seed, epoch, cbs)
        else:
            trainer.fit(src.trainer_data(step_seed, epoch), epochs=1)
            model.set_weights(trainer.get_weights())

    def checkpoint() -> None:
        state["elapsed"] = elapsed_before + (time.time() - t_start)
        if not chief:  # every worker runs every step; only the chief writes
            if on_step_end is not None:
                on_step_end(state)
            return
        _save_checkpoint(config.checkpoint, model, masks, state)
        if on_step_end is not None:
            on_step_end(state)

    elapsed_before = float(state["elapsed"])
    apply_masks(model, masks)
    set_dropout()

    # ---- pruning steps
    while state["group_index"] < len(groups):
        g = groups[state["group_index"]]
        k = state["group_step"]
        if k >= len(g.q):
            _log(verbose, f"[{g.name}] schedule exhausted at q {g.q.max_q}")
            state["group_index"] += 1
            state["group_step"] = 0
            checkpoint()
            continue
        q = g.q.q(k)
        t0 = time.time()
        good_weights = model.get_weights()
        good_masks = {n: masks[n].copy() for n in g.layers}  # only the group's masks change
        for n in g.layers:
            masks[n] = threshold_mask(model.get_layer(n).kernel.numpy(), q, sigma[n], masks[n])
        apply_masks(model, masks)
        set_dropout()
        dens_before = {n: float(masks[n].mean()) for n in names_all}
        val_before = src.val_accuracy(model)
        compile_for(None if not g.freeze_others else g.layers, g.learning_rate, g.epochs)
        step_seed = state["step_counter"] + 1
        val_after, epochs, ok, val_epochs = val_before, 0, False, []
        if g.epochs == 0:
            ok = val_before >= baseline - g.tolerance
        else:
            while epochs < g.max_epochs:
                fit_epoch(step_seed, epochs)
                epochs += 1
                if epochs >= g.epochs:
                    val_after = src.val_accuracy(model)
                    val_epochs.append(val_after)
                    if val_after >= baseline - g.tolerance:
                        ok = True
                        break
        nnz = _nnz(model, names_all)
        row = {"step": step_seed, "group": g.name, "layers": list(g.layers), "q": q,
               "thresholds": {n: q * sigma[n] for n in g.layers},
               "density": {n: nnz[n] / sizes[n] for n in names_all},
               "nnz": int(sum(nnz.values())), "compression": sum(sizes.values()) / max(1, sum(nnz.values())),
               "val_before": val_before, "val_after": val_after, "val_per_epoch": val_epochs,
               "epochs": epochs, "accepted": ok, "seconds": round(time.time() - t0, 2)}
        mark = "ok  " if ok else "STOP"
        _log(verbose, f"step {step_seed:3d} [{g.name}] q {q:.2f} {mark} density "
                      + " ".join(f"{n} {dens_before[n]:.1%}" for n in g.layers)
                      + f" | total {row['nnz']:,} nnz ({row['compression']:.1f}x) | val {val_before:.2%} -> "
                      f"{val_after:.2%} (baseline {baseline:.2%}, tol {g.tolerance:.2%}) | {epochs} ep "
                      f"{row['seconds']:.0f} s | {(elapsed_before + time.time() - t_start) / 60:.1f} min")
        if ok:
            for n in g.layers:
                state["q"][n] = q
            state["group_step"] = k + 1
        else:
            model.set_weights(good_weights)
            masks.update(good_masks)
            set_dropout()
            state["group_index"] += 1
            state["group_step"] = 0
            _log(verbose, f"[{g.name}] keeps q {max(state['q'][n] for n in g.layers):.2f} "
                          f"(the last good step)")
        state["history"].append(row)
        state["step_counter"] = step_seed
        del good_weights, good_masks  # a full copy of the weights: not kept past its step
        checkpoint()

    # ---- final fine-tuning of all layers, masks held; keep the best validation epoch
    sched = config.schedule
    if not state["final_done"]:
        t0 = time.time()
        val0 = src.val_accuracy(model)
        best, per_epoch = val0, []
        if sched.final_epochs:
            best_w = model.get_weights()
            compile_for(None, sched.final_learning_rate, sched.final_epochs, alpha=0.01)
            for e in range(sched.final_epochs):
                fit_epoch(10**6, e)
                v = src.val_accuracy(model)
                per_epoch.append(v)
                _log(verbose, f"final fine-tuning epoch {e + 1}/{sched.final_epochs}: val {v:.2%}")
                if v > best:
                    best, best_w = v, model.get_weights()
            model.set_weights(best_w)
        state["final"] = {"val_before": val0, "val_per_epoch": per_epoch, "val_after": best,
                          "kept_epoch": (per_epoch.index(best) + 1) if best in per_epoch and best > val0 else 0,
                          "seconds": round(time.time() - t0, 2)}
        state["final_done"] = True
        state["step_counter"] += 1
        checkpoint()

    # ---- strip masks, remove dead neurons, export (the chief alone: the other workers are done)
    # drop the optimizer's state (Adam: two copies of the trainable weights) before exporting
    trainer = None
    adams.clear()
    trainers.clear()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    _release_memory()
    apply_masks(model, masks)
    if not chief:
        _log(verbose, "fine-tuning done; the chief worker exports and reports")
        return {"chief": False, "history": state["history"], "q": state["q"], "baseline_val": baseline}
    nnz_pruned = _nnz(model, names_all)
    dead_report = None
    export_model = model
    if config.dead_neurons:
        export_model, dead_report = remove_dead_neurons(model)
        _log(verbose, "dead neurons: " + ", ".join(
            f"{n} {r['before']} -> {r['after']}" for n, r in dead_report["layers"].items())
            + f"; {dead_report['connections_removed']} connections removed")
    os.makedirs(os.path.dirname(os.path.abspath(config.out)) or ".", exist_ok=True)
    manifest = export_keras(export_model, config.out, input_spec=manifest_in["input"],
                            classes=manifest_in.get("classes"), name=manifest_in.get("name"),
                            storage=config.storage)
    _log(verbose, f"wrote {config.out}")
    del export_model  # the dead-neuron pass's copy (VGG19: 575 MB), before the file is loaded twice
    _release_memory()

    # ---- evaluate the written file (TensorFlow and the C runtime)
    ev = src.evaluate_file(config.out, keras_from_model_file)
    pc = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
    _log(verbose, f"written file: validation accuracy TF {pc(ev['tf_val'])}, C runtime {pc(ev['runtime_val'])}; "
                  f"test accuracy (report only) TF {pc(ev['tf_test'])}, C runtime {pc(ev['runtime_test'])}")

    elapsed = elapsed_before + (time.time() - t_start)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "command": command, "config": config.to_config(), "input_model": config.model, "output_model": config.out,
        "baseline_val": baseline, "sigma": sigma, "q": state["q"], "history": state["history"],
        "final_finetune": state["final"], "dead_neurons": dead_report,
        "layers": {n: {"shape": list(original[n].shape), "weights": sizes[n], "nnz_after_pruning": nnz_pruned[n],
                       "density": nnz_pruned[n] / sizes[n], "q": state["q"][n], "threshold": state["q"][n] * sigma[n]}
                   for n in names_all},
        "evaluation": ev, "manifest_layers": manifest["layers"],
        "run_seconds": round(elapsed, 1), "resumed": state.get("resumed", 0),
        "peak_rss_mib": round(usage.ru_maxrss / 1024.0, 1),
        "tensorflow": __import__("tensorflow").__version__, "keras": keras.__version__,
        "python": sys.version.split()[0], "cpus": os.cpu_count(), "threads": config.threads or os.cpu_count(),
    }
    from .report import write_report
    write_report(result, config, original, model, verbose=verbose)
    return result
