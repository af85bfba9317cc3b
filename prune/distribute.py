"""Masked fine-tuning under a ``tf.distribute`` strategy chosen by configuration.

    from prune.distribute import DistributeConfig, make_strategy, fine_tune
    cfg = DistributeConfig.from_config({"strategy": "mirrored", "logical_cpus": 2})
    strategy = make_strategy(cfg)          # first thing: before any other TensorFlow work
    weights = fine_tune(build_model, weights, masks, (x, y), strategy=strategy,
                        global_batch_size=128, learning_rate=1e-3, epochs=1)

Strategies: ``default`` (one device), ``mirrored`` (``MirroredStrategy`` over this machine's
devices, or over ``logical_cpus`` logical CPU devices), ``multi_worker``
(``MultiWorkerMirroredStrategy``, cluster and role from ``TF_CONFIG``; read_tf_config says
what it must hold). docs/distribute.md tells how to run two workers.

Every step takes one GLOBAL batch, the same on every configuration; each replica trains on
its own contiguous slice of it (replica ``r`` of ``n`` takes rows ``[b*r//n, b*(r+1)//n)``),
and the loss is the sum over the slice divided by the global batch's size
(``tf.nn.compute_average_loss``), so the all-reduced gradient is the gradient of the mean
loss over the whole global batch: N replicas compute the update one replica would compute
on the whole batch, up to float rounding. Gradients of pruned weights are masked and the
masks are re-applied after every step, so pruned weights stay exactly zero.

Only the chief (``strategy.extended.should_checkpoint``) prints progress and writes files;
every worker must run the same calls (the steps are collective).
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import optimizers
from .schedule import _check_keys, _int, _number

__all__ = ["DistributeConfig", "make_strategy", "setup_logical_cpus", "read_tf_config", "is_chief",
           "MaskedTrainer", "fine_tune", "replica_slice"]

STRATEGIES = ("default", "mirrored", "multi_worker")
COMMUNICATIONS = ("auto", "ring")
OPTIMIZERS = ("sgd", "adam")


class DistributeConfig:
    """How fine-tuning is distributed; validated here, read from / written to JSON.

    ``strategy``: ``default`` (one device), ``mirrored`` (all devices of this machine) or
    ``multi_worker`` (several machines, cluster from ``TF_CONFIG``).
    ``logical_cpus``: with ``mirrored`` only: split the CPU into this many logical devices
    and mirror over them (tests, or to check a configuration without GPUs); null: the
    machine's devices as TensorFlow sees them.
    ``communication``: with ``multi_worker`` only: collective implementation, ``auto`` or
    ``ring`` (NCCL is GPU-only and not offered).
    ``timeout_seconds``: with ``multi_worker`` only: a collective that waits longer than this
    for a peer fails instead of hanging (null: wait forever).
    """

    KEYS = ("strategy", "logical_cpus", "communication", "timeout_seconds")

    def __init__(self, strategy: str = "default", logical_cpus: int | None = None,
                 communication: str = "auto", timeout_seconds: float | None = None):
        if strategy not in STRATEGIES:
            raise ValueError(f"distribute strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
        self.strategy = strategy
        if logical_cpus is not None:
            logical_cpus = _int("logical_cpus", logical_cpus, 1)
            if strategy != "mirrored":
                raise ValueError(f"logical_cpus applies to strategy 'mirrored' only, got it with {strategy!r}")
        self.logical_cpus = logical_cpus
        if communication not in COMMUNICATIONS:
            raise ValueError(f"communication must be one of {list(COMMUNICATIONS)}, got {communication!r}")
        if communication != "auto" and strategy != "multi_worker":
            raise ValueError(f"communication {communication!r} applies to strategy 'multi_worker' only, "
                             f"got it with {strategy!r}")
        self.communication = communication
        if timeout_seconds is not None:
            timeout_seconds = _number("timeout_seconds", timeout_seconds, low=0.0, low_open=True)
            if strategy != "multi_worker":
                raise ValueError(f"timeout_seconds applies to strategy 'multi_worker' only, got it with {strategy!r}")
        self.timeout_seconds = timeout_seconds

    def to_config(self) -> dict:
        return {"strategy": self.strategy, "logical_cpus": self.logical_cpus,
                "communication": self.communication, "timeout_seconds": self.timeout_seconds}

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> "DistributeConfig":
        """``None`` (the key absent from a pruning configuration) is the default strategy."""
        if config is None:
            return cls()
        _check_keys("DistributeConfig", config, cls.KEYS)
        return cls(**dict(config))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DistributeConfig) and self.to_config() == other.to_config()

    def __repr__(self) -> str:
        return f"DistributeConfig({self.to_config()})"


# ---------------------------------------------------------------- TF_CONFIG


_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}')


def read_tf_config(environ: Mapping[str, str] | None = None) -> dict:
    """The ``TF_CONFIG`` environment variable, parsed and checked; ValueError saying what is
    wrong otherwise.

    It must be a JSON object ``{"cluster": {"worker": ["host:port", ...]}, "task": {"type":
    "worker", "index": i}}`` (an optional ``"chief": ["host:port"]`` job makes that task the
    chief; otherwise worker 0 is). Every process of the cluster gets the same ``cluster``
    and its own ``task``. Parameter servers (``ps``) and evaluators are not supported.
    """
    env = os.environ if environ is None else environ
    text = env.get("TF_CONFIG", "")
    if not text.strip():
        raise ValueError("strategy 'multi_worker' needs the TF_CONFIG environment variable (the cluster and "
                         f"this process's task), e.g. TF_CONFIG='{_TF_CONFIG_EXAMPLE}'")
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {text[:200]!r}") from None
    if not isinstance(tf_config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {type(tf_config).__name__}")
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG needs a 'cluster' object of jobs, e.g. {_TF_CONFIG_EXAMPLE}")
    unknown = sorted(set(cluster) - {"worker", "chief"})
    if unknown:
        raise ValueError(f"TF_CONFIG cluster: jobs {unknown} are not supported (only 'worker' and 'chief')")
    if "worker" not in cluster:
        raise ValueError("TF_CONFIG cluster needs a 'worker' job (a list of host:port)")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(f"TF_CONFIG cluster {job!r} must be a non-empty list of host:port, got {addresses!r}")
        if job == "chief" and len(addresses) != 1:
            raise ValueError(f"TF_CONFIG cluster 'chief' must have exactly one address, got {addresses!r}")
        for i, a in enumerate(addresses):
            host, sep, port = a.rpartition(":") if isinstance(a, str) else ("", "", "")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"TF_CONFIG cluster {job}[{i}] must be 'host:port' with a port in 1..65535, "
                                 f"got {a!r}")
    all_addresses = [a for addresses in cluster.values() for a in addresses]
    if len(set(all_addresses)) != len(all_addresses):
        raise ValueError(f"TF_CONFIG cluster: an address is used twice: {all_addresses}")
    if not isinstance(task, dict):
        raise ValueError("TF_CONFIG needs a 'task' object, e.g. {\"type\": \"worker\", \"index\": 0}")
    t, i = task.get("type"), task.get("index")
    if t not in cluster:
        raise ValueError(f"TF_CONFIG task type must be one of the cluster's jobs {sorted(cluster)}, got {t!r}")
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(cluster[t]):
        raise ValueError(f"TF_CONFIG task index must be an integer in 0..{len(cluster[t]) - 1} "
                         f"(the {t!r} job has {len(cluster[t])} addresses), got {i!r}")
    return {"cluster": {k: list(v) for k, v in cluster.items()}, "task": {"type": t, "index": i}}


# ---------------------------------------------------------------- strategies


def _log(msg: str) -> None:
    print(msg, flush=True)


def setup_logical_cpus(n: int) -> list[str]:
    """Split the first physical CPU into ``n`` logical devices; returns their names.

    TensorFlow allows this only before it initialises its devices (the first op, or the
    first list_logical_devices), so call it first thing in the process; if TensorFlow is
    already up with exactly ``n`` logical CPUs this is a no-op, otherwise RuntimeError.
    """
    n = _int("logical_cpus", n, 1)
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        have = tf.config.list_logical_devices("CPU")
        if len(have) != n:
            raise RuntimeError(f"cannot split the CPU into {n} logical devices: TensorFlow is already "
                               f"initialised with {len(have)} ({[d.name for d in have]}); call "
                               "setup_logical_cpus (or make_strategy) before any other TensorFlow work") from e
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(config: DistributeConfig | Mapping[str, Any] | None = None, *, verbose: bool = True) -> Any:
    """The ``tf.distribute.Strategy`` that ``config`` asks for.

    Call it before any other TensorFlow work in the process: logical CPU devices and
    MultiWorkerMirroredStrategy's collective ops can only be set up before TensorFlow
    initialises (RuntimeError otherwise). ``multi_worker`` reads ``TF_CONFIG``
    (read_tf_config: ValueError if it is missing or malformed) and blocks until every
    worker of the cluster has started.
    """
    cfg = config if isinstance(config, DistributeConfig) else DistributeConfig.from_config(config)
    tf_config = read_tf_config() if cfg.strategy == "multi_worker" else None
    import tensorflow as tf

    if cfg.strategy == "default":
        strategy = tf.distribute.get_strategy()
        if verbose:
            _log("distribute: default strategy (one device)")
        return strategy
    if cfg.strategy == "mirrored":
        if cfg.logical_cpus is not None:
            devices = setup_logical_cpus(cfg.logical_cpus)
            strategy = tf.distribute.MirroredStrategy(devices=devices)
        else:
            strategy = tf.distribute.MirroredStrategy()
        if verbose:
            _log(f"distribute: MirroredStrategy over {strategy.num_replicas_in_sync} device(s) "
                 f"{list(strategy.extended.worker_devices)}")
        return strategy
    impl = {"auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
            "ring": tf.distribute.experimental.CommunicationImplementation.RING}[cfg.communication]
    options = tf.distribute.experimental.CommunicationOptions(implementation=impl,
                                                              timeout_seconds=cfg.timeout_seconds)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as e:
        raise RuntimeError(f"cannot start MultiWorkerMirroredStrategy ({e}); create it (make_strategy) before "
                           "any other TensorFlow work in the process") from e
    if verbose:
        task = tf_config["task"]
        _log(f"distribute: MultiWorkerMirroredStrategy, {strategy.num_replicas_in_sync} replica(s) in "
             f"{sum(len(v) for v in tf_config['cluster'].values())} task(s); this is {task['type']} "
             f"{task['index']}{' (chief)' if is_chief(strategy) else ''}; communication {cfg.communication}")
    return strategy


def is_chief(strategy: Any | None = None) -> bool:
    """True in the one process that should print progress and write files (always, unless
    the strategy is multi-worker: there the chief, or worker 0 without a chief job)."""
    if strategy is None:
        import tensorflow as tf
        strategy = tf.distribute.get_strategy()
    return bool(strategy.extended.should_checkpoint)


def replica_slice(batch_size: Any, replica: Any, replicas: Any) -> tuple[Any, Any]:
    """Rows ``[lo, hi)`` of a global batch of ``batch_size`` that replica ``replica`` of
    ``replicas`` trains on: contiguous, in replica order, sizes differing by at most one
    (a batch smaller than the number of replicas leaves some replicas an empty slice)."""
    return (batch_size * replica) // replicas, (batch_size * (replica + 1)) // replicas


# ---------------------------------------------------------------- masked training


class MaskedTrainer:
    """A Keras model built in ``strategy.scope()`` and trained with a custom loop whose
    gradients and weights are masked; the optimizer (and its state) lives as long as the
    trainer, so successive ``fit`` calls continue one another like epochs of ``model.fit``.

    ``build_model()``: returns a fresh Keras model (called inside the scope; its outputs
    are class probabilities, or logits with ``from_logits=True``). ``masks``: layer name ->
    0/1 array of that layer's kernel shape. ``global_batch_size``: examples per step, over
    all replicas. ``learning_rate``: a float or a ``keras.optimizers.schedules``
    LearningRateSchedule (stepped once per global step). ``optimizer``: ``sgd`` (with
    ``momentum``) or ``adam``. ``trainable``: the layer names to train (None: all).
    ``seed``: ``keras.utils.set_random_seed`` before building. ``log_every``: print the loss
    every this many steps (chief only; 0: never).
    """

    def __init__(self, build_model: Callable[[], Any], masks: Mapping[str, np.ndarray], *,
                 strategy: Any | None = None, global_batch_size: int, learning_rate: Any,
                 optimizer: str = "sgd", momentum: float = 0.0, trainable: Sequence[str] | None = None,
                 from_logits: bool = False, seed: int = 0, log_every: int = 10):
        import keras
        import tensorflow as tf

        self.strategy = strategy if strategy is not None else tf.distribute.get_strategy()
        self.global_batch_size = _int("global_batch_size", global_batch_size, 1)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        momentum = _number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        if optimizer != "sgd" and momentum:
            raise ValueError(f"momentum applies to optimizer 'sgd' only, got it with {optimizer!r}")
        self._scheduled = isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule)
        if not self._scheduled:
            learning_rate = _number("learning_rate", learning_rate, low=0.0)
        self.log_every = _int("log_every", log_every, 0)
        self.chief = is_chief(self.strategy)
        self.replicas = int(self.strategy.num_replicas_in_sync)
        self.losses: list[float] = []
        self.steps_done = 0

        self.seed = _int("seed", seed, 0)
        self.from_logits = from_logits
        keras.utils.set_random_seed(self.seed)
        with self.strategy.scope():
            self.model = build_model()
            names = [l.name for l in self.model.layers]
            if trainable is not None:
                missing = sorted(set(trainable) - set(names))
                if missing:
                    raise ValueError(f"trainable names layers {missing} that the model does not have ({names})")
            for layer in self.model.layers:
                if layer.weights:
                    layer.trainable = trainable is None or layer.name in trainable
            if optimizer == "sgd":
                self.optimizer = optimizers.sgd(learning_rate, momentum=momentum)
            else:
                self.optimizer = optimizers.adam(learning_rate)
            self.optimizer.build(self.model.trainable_variables)
        self.masks = self._check_masks(masks)
        # the masks as variables, not constants of the traced step, so that restart can assign
        # new ones: a new trainer per pruning step grew a VGG19 run by 2.9 GB a step (over
        # several replicas Keras' all-reduce keeps each traced step and what it captured;
        # prune/optimizers.py, docs/vgg19.md)
        with self.strategy.scope():
            self._mask_vars = {n: tf.Variable(m, trainable=False, name=f"mask_{n}") for n, m in self.masks.items()}
        kernels = {id(self.model.get_layer(n).kernel): n for n in self.masks}
        self._tvars = list(self.model.trainable_variables)
        self._tmasks = [self._mask_vars[kernels[id(v)]] if id(v) in kernels else None for v in self._tvars]
        self._pairs = [(self.model.get_layer(n).kernel, self._mask_vars[n]) for n in self.masks]
        self._trace()

    def restart(self, masks: Mapping[str, np.ndarray], learning_rate: Any,
                dropout: Mapping[str, float] | None = None) -> None:
        """Make this trainer what a new one built with the same model, trainable layers,
        optimizer and seed would be, with ``masks`` (the same layers as before) and
        ``learning_rate`` (a float if the trainer was made with one, else a schedule): the
        optimizer's step counter and state at zero, the global seeds reset, ``dropout``
        (layer name -> rate) set, the step traced again. Load the weights after it
        (set_weights). The model, its optimizer and the masks' variables are reused."""
        import keras

        checked = self._check_masks(masks)
        if sorted(checked) != sorted(self.masks):
            raise ValueError(f"restart: masks for layers {sorted(checked)}, this trainer has {sorted(self.masks)}")
        scheduled = isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule)
        if not scheduled:
            learning_rate = _number("learning_rate", learning_rate, low=0.0)
        if scheduled != self._scheduled:
            raise ValueError("restart: a learning rate schedule and a float do not replace each other")
        keras.utils.set_random_seed(self.seed)
        self.masks = checked
        for n, m in checked.items():
            self._mask_vars[n].assign(m)
        for v in self.optimizer.variables:  # the step counter, the moments (and a float rate, set below)
            v.assign(np.zeros(v.shape, v.dtype))
        self.optimizer.learning_rate = learning_rate
        for n, r in (dropout or {}).items():
            self.model.get_layer(n).rate = float(r)
        self.losses, self.steps_done = [], 0
        self._trace()

    def _trace(self) -> None:
        import keras
        import tensorflow as tf

        from_logits = self.from_logits
        loss_fn = keras.losses.sparse_categorical_crossentropy

        def replica_step(x: Any, y: Any) -> Any:
            # every replica receives the whole global batch and trains on its own slice of it
            ctx = tf.distribute.get_replica_context()
            b = tf.shape(x)[0]
            lo, hi = replica_slice(b, ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync)
            with tf.GradientTape() as tape:
                p = self.model(x[lo:hi], training=True)
                per_example = loss_fn(y[lo:hi], p, from_logits=from_logits)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=b)
                if self.model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            grads = tape.gradient(loss, self._tvars)
            grads = [g if m is None or g is None else g * m for g, m in zip(grads, self._tmasks)]
            self.optimizer.apply_gradients(zip(grads, self._tvars))
            return loss

        @tf.function(reduce_retracing=True)
        def train_step(batch: Any) -> Any:
            per_replica = self.strategy.run(replica_step, args=batch)
            for var, m in self._pairs:  # cross-replica context: every copy of the kernel
                var.assign(var * m)
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        self._train_step = train_step

    def apply_masks(self) -> None:
        """Zero the pruned weights (in every replica's copy)."""
        for var, m in self._pairs:
            var.assign(var * m)

    def _check_masks(self, masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        names = [l.name for l in self.model.layers if hasattr(l, "kernel")]
        for name, m in masks.items():
            if name not in names:
                raise ValueError(f"mask for layer {name!r}, but the model's layers with kernels are {names}")
            shape = tuple(self.model.get_layer(name).kernel.shape)
            m = np.asarray(m)
            if m.shape != shape:
                raise ValueError(f"layer {name}: mask shape {m.shape} != kernel shape {shape}")
            bad = ~((m == 0) | (m == 1))
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(f"layer {name}: mask must hold only 0 and 1, got {m[idx].item()!r} at {idx}")
            out[name] = m.astype(np.float32)
        return out

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Load ``weights`` (model.get_weights() order) into every replica, then zero the
        pruned ones."""
        current = self.model.get_weights()
        if len(weights) != len(current):
            raise ValueError(f"got {len(weights)} weight arrays, the model has {len(current)}")
        for i, (w, c) in enumerate(zip(weights, current)):
            if np.shape(w) != c.shape:
                raise ValueError(f"weight {i} ({self.model.weights[i].path}): shape {np.shape(w)} != {c.shape}")
        self.model.set_weights([np.asarray(w, np.float32) for w in weights])
        self.apply_masks()

    def get_weights(self) -> list[np.ndarray]:
        return self.model.get_weights()

    def _dataset(self, data: Any, steps: int | None) -> Any:
        import tensorflow as tf

        if isinstance(data, tf.data.Dataset):
            base = data
        else:
            if not isinstance(data, (tuple, list)) or len(data) != 2:
                raise ValueError("data must be a tf.data.Dataset of (x, y) examples or a pair (x, y) of arrays")
            x, y = np.asarray(data[0]), np.asarray(data[1])
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(f"data: x has {len(x)} examples and y {len(y)}; need the same, at least one")
            base = tf.data.Dataset.from_tensor_slices((x, y))
        batch = self.global_batch_size

        def input_fn(ctx: Any) -> Any:
            ds = base.repeat() if steps is not None else base
            ds = ds.batch(batch)
            if steps is not None:
                ds = ds.take(steps)
            # one pipeline per worker; its local replicas take consecutive elements, so each
            # global batch is repeated once per local replica: every replica sees the whole
            # batch (replica_step slices it), and every worker reads the same batches
            local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            if local > 1:
                ds = ds.flat_map(lambda *b: tf.data.Dataset.from_tensors(b).repeat(local))
            return ds.prefetch(2)

        return self.strategy.distribute_datasets_from_function(input_fn)

    def fit(self, data: Any, *, epochs: int | None = None, steps: int | None = None) -> list[float]:
        """Train on ``data`` (a pair of arrays, or a tf.data.Dataset of unbatched (x, y)
        examples) in its order, for ``epochs`` passes (the last batch of a pass may be short)
        or ``steps`` global batches (the data repeated as needed); give exactly one.
        Returns the losses of the steps (mean over each global batch)."""
        if (epochs is None) == (steps is None):
            raise ValueError(f"give exactly one of epochs and steps, got epochs={epochs!r}, steps={steps!r}")
        passes = 1 if steps is not None else _int("epochs", epochs, 0)
        if steps is not None:
            steps = _int("steps", steps, 0)
        losses: list[float] = []
        t0 = time.time()
        for _ in range(passes):
            for batch in self._dataset(data, steps):
                loss = float(self._train_step(batch))
                if not math.isfinite(loss):
                    raise FloatingPointError(f"fine-tuning step {self.steps_done + 1}: loss is {loss}")
                losses.append(loss)
                self.steps_done += 1
                if self.chief and self.log_every and self.steps_done % self.log_every == 0:
                    _log(f"fine-tune step {self.steps_done}: loss {loss:.5f} ({self.replicas} replica(s), "
                         f"global batch {self.global_batch_size}, {time.time() - t0:.1f} s)")
        if self.chief and self.log_every and losses:
            _log(f"fine-tune: {len(losses)} step(s), loss {losses[0]:.5f} -> {losses[-1]:.5f}, "
                 f"{time.time() - t0:.1f} s")
        self.losses.extend(losses)
        return losses

    def save(self, path: str | os.PathLike) -> bool:
        """Write the weights (``w0``, ``w1``, ...) and masks (``mask.<layer>``) to an .npz,
        atomically, on the chief only; returns whether this process wrote it."""
        if not self.chief:
            return False
        path = os.fspath(path)
        arrays = {f"w{i}": w for i, w in enumerate(self.get_weights())}
        arrays.update({f"mask.{n}": m.astype(np.uint8) for n, m in self.masks.items()})
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return True


def fine_tune(build_model: Callable[[], Any], weights: Sequence[np.ndarray] | None,
              masks: Mapping[str, np.ndarray], data: Any, *, strategy: Any | None = None,
              global_batch_size: int, learning_rate: Any, epochs: int | None = None,
              steps: int | None = None, optimizer: str = "sgd", momentum: float = 0.0,
              trainable: Sequence[str] | None = None, from_logits: bool = False, seed: int = 0,
              log_every: int = 10, out: str | os.PathLike | None = None) -> list[np.ndarray]:
    """Fine-tune ``build_model()``'s model from ``weights`` (None: as built) with ``masks``
    held, under ``strategy`` (None: the current one), and return the new weights
    (model.get_weights() order). One MaskedTrainer, one ``fit``; ``out``: the chief also
    saves the result there (MaskedTrainer.save). Every worker of a multi-worker cluster
    must call this with the same arguments."""
    trainer = MaskedTrainer(build_model, masks, strategy=strategy, global_batch_size=global_batch_size,
                            learning_rate=learning_rate, optimizer=optimizer, momentum=momentum,
                            trainable=trainable, from_logits=from_logits, seed=seed, log_every=log_every)
    if weights is not None:
        trainer.set_weights(weights)
    else:
        trainer.apply_masks()
    trainer.fit(data, epochs=epochs, steps=steps)
    if out is not None:
        trainer.save(out)
    return trainer.get_weights()
