"""prune.distribute: masked fine-tuning under tf.distribute gives the single-device result.

The training runs in subprocesses (tests/_distribute_worker.py): logical CPU devices and
MultiWorkerMirroredStrategy can only be set up before TensorFlow initialises, and must not
leak into the pytest process. ``local`` trains the same masked LeNet-5 on the same global
batches four ways (a plain single-device reference loop, the default strategy,
MirroredStrategy over 2 logical CPUs, and the steps= form); the multi-worker test launches
two worker processes on localhost with their own TF_CONFIG and compares the chief's result
with the local reference.

Tolerances (float32, the same global batches; the replicas' gradient sums are added in a
different order): SGD rtol 1e-5, atol 1e-6 on weights of magnitude up to ~1. Adam divides
the gradient by its running RMS, which turns rounding in a near-zero gradient into a
relative error of the update (at most ~lr), so Adam gets atol 2e-5 (lr 1e-3, 8 steps).
Measured on the 2-core build machine: SGD max |diff| 1.2e-7 (mirrored and multi-worker vs
reference), Adam 5.9e-6 vs the NumPy-formula reference and 1.6e-7 mirrored vs default.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from prune.distribute import DistributeConfig, make_strategy, read_tf_config, replica_slice
from tests.tf_util import assert_close, free_ports

WORKER = Path(__file__).with_name("_distribute_worker.py")
SGD_TOL = {"rtol": 1e-5, "atol": 1e-6}
ADAM_TOL = {"rtol": 1e-5, "atol": 2e-5}
TIMEOUT = 240


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1", "OMP_NUM_THREADS": "1",
                "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}, **extra)
    return env


def _nice() -> list[str]:
    return ["nice", "-n", "10"] if sys.platform != "win32" else []


def _weights(z: np.lib.npyio.NpzFile, run: str) -> list[np.ndarray]:
    keys = sorted((k for k in z.files if k.startswith(run + ".w")), key=lambda k: int(k.rsplit(".w", 1)[1]))
    assert keys, f"{run}: no weights in the result file (has {sorted(z.files)[:8]}...)"
    return [z[k] for k in keys]


# lenet5's get_weights order: kernel, bias of conv1, conv2, fc1, fc2
KERNELS = {0: "conv1", 2: "conv2", 4: "fc1", 6: "fc2"}


def _compare(z: np.lib.npyio.NpzFile, run: str, ref: str, tol: dict, expected: np.lib.npyio.NpzFile | None = None
             ) -> float:
    """Assert run's weights equal ref's within tol and its pruned weights are exactly zero;
    returns the max |difference|."""
    expected = z if expected is None else expected
    got, want = _weights(z, run), _weights(expected, ref)
    assert len(got) == len(want) == 8
    worst = 0.0
    for i, (a, b) in enumerate(zip(got, want)):
        layer = KERNELS.get(i, KERNELS.get(i - 1, "?"))
        what = f"{run} vs {ref}: weight {i} ({layer} {'kernel' if i in KERNELS else 'bias'})"
        assert_close(a, b, what=what, **tol)
        worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
        if i in KERNELS:
            m = z[f"mask.{KERNELS[i]}"]
            assert 0.45 < 1 - m.mean() < 0.55, f"{KERNELS[i]}: mask has {1 - m.mean():.1%} zeros"
            leaked = np.argwhere((m == 0) & (a != 0))
            assert not len(leaked), (f"{run}: layer {KERNELS[i]}: {len(leaked)} pruned weights are not zero, first at "
                                     f"{tuple(leaked[0])}: {a[tuple(leaked[0])]!r}")
            assert np.count_nonzero(a) == np.count_nonzero(m), f"{run}: {KERNELS[i]} lost unpruned weights"
    loss_got, loss_want = z[f"{run}.losses"], expected[f"{ref}.losses"]
    assert_close(loss_got, loss_want, rtol=1e-5, atol=1e-5, what=f"{run} vs {ref}: loss per step")
    print(f"{run} vs {ref}: max |weight diff| {worst:.3g}, {len(loss_got)} steps, "
          f"loss {loss_got[0]:.4f} -> {loss_got[-1]:.4f}")
    return worst


def _show(name: str, p: subprocess.CompletedProcess | None, stdout: str, stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if not l.startswith(("WARNING: All log", "I0000"))]
    return f"--- {name} (exit {None if p is None else p.returncode}) stdout:\n{stdout[-3000:]}\n--- stderr:\n" + \
        "\n".join(lines[-60:])


@pytest.fixture(scope="module")
def local_result(tmp_path_factory: pytest.TempPathFactory) -> np.lib.npyio.NpzFile:
    out = tmp_path_factory.mktemp("distribute") / "local.npz"
    p = subprocess.run([*_nice(), sys.executable, str(WORKER), "local", str(out)], capture_output=True, text=True,
                       timeout=TIMEOUT, env=_env(), cwd=str(out.parent))
    assert p.returncode == 0 and out.exists(), _show("local", p, p.stdout, p.stderr)
    return np.load(out)


def test_default_strategy_matches_reference(local_result):
    """The custom loop on one device computes the plain masked SGD / Adam."""
    _compare(local_result, "default", "reference", SGD_TOL)
    _compare(local_result, "default_adam", "reference_adam", ADAM_TOL)


def test_mirrored_two_logical_cpus_matches_one_device(local_result):
    """2 replicas on 2 halves of each global batch == 1 replica on the whole batch."""
    _compare(local_result, "mirrored", "reference", SGD_TOL)
    _compare(local_result, "mirrored", "default", SGD_TOL)
    _compare(local_result, "mirrored_adam", "default_adam", ADAM_TOL)
    _compare(local_result, "mirrored_steps", "default_steps", SGD_TOL)
    assert len(local_result["mirrored_steps.losses"]) == 5
    assert len(local_result["mirrored.losses"]) == 8  # 2 epochs of 32 + 32 + 32 + 4


def test_restarted_trainer_equals_a_new_one(local_result):
    """The pruner keeps one MaskedTrainer per set of trainable layers and restarts it each
    step (new masks, a new rate, the optimizer's state at zero) instead of building a new
    one, whose traced step TensorFlow would keep in memory: the restarted trainer's second
    step equals a new trainer's bit for bit (MirroredStrategy, 2 logical CPUs, one process),
    and restart refuses masks of other layers and a schedule for a float rate."""
    got, want = _weights(local_result, "mirrored_restarted"), _weights(local_result, "mirrored_fresh_b")
    for i, (a, b) in enumerate(zip(got, want)):
        layer = KERNELS.get(i, KERNELS.get(i - 1, "?"))
        diff = np.argwhere(a != b)
        assert not len(diff), (f"weight {i} ({layer}): restarted {a[tuple(diff[0])]!r} vs new "
                               f"{b[tuple(diff[0])]!r} at {tuple(diff[0])} ({len(diff)} differ)")
        if i in KERNELS:
            m = local_result[f"mask_b.{layer}"]
            assert ((m == 0) <= (a == 0)).all(), f"{layer}: a weight pruned by the second masks is not zero"
    np.testing.assert_array_equal(local_result["mirrored_restarted.losses"], local_result["mirrored_fresh_b.losses"])
    assert "this trainer has" in str(local_result["restart_error.layers"])
    assert "do not replace each other" in str(local_result["restart_error.schedule"])


def test_logical_cpus_after_tensorflow_started(local_result):
    msg = str(local_result["late_error"])
    assert "cannot split the CPU into 3 logical devices: TensorFlow is already initialised with 2" in msg, msg


def test_multi_worker_two_processes_matches_one_worker(local_result, tmp_path):
    """Two MultiWorkerMirroredStrategy workers on localhost (one replica each); the chief's
    weights equal the single-device reference on the same global batches."""
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    out = tmp_path / "multi_worker.npz"
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen([*_nice(), sys.executable, str(WORKER), "worker", str(out)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=_env(TF_CONFIG=tf_config), cwd=str(tmp_path)))
    outputs: list[tuple[str, str]] = []
    deadline = time.time() + TIMEOUT
    try:
        for p in procs:
            try:
                outputs.append(p.communicate(timeout=max(1.0, deadline - time.time())))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                outs = [q.communicate() for q in procs]
                pytest.fail(f"multi-worker run did not finish in {TIMEOUT} s (ports {ports})\n"
                            + "\n".join(_show(f"worker {i}", None, *o) for i, o in enumerate(outs)))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    report = "\n".join(_show(f"worker {i}", p, *o) for i, (p, o) in enumerate(zip(procs, outputs)))
    assert all(p.returncode == 0 for p in procs) and out.exists(), report
    assert "(chief)" in outputs[0][0] and "(chief)" not in outputs[1][0], report
    assert "not chief: nothing written" in outputs[1][0], report
    z = np.load(out)
    _compare(z, "multi_worker", "reference", SGD_TOL, expected=local_result)
    _compare(z, "multi_worker_adam", "default_adam", ADAM_TOL, expected=local_result)


# ---------------------------------------------------------------- configuration (no TensorFlow work)


def test_config_round_trip_and_defaults():
    for c in ({"strategy": "default"}, {"strategy": "mirrored", "logical_cpus": 2},
              {"strategy": "mirrored"},
              {"strategy": "multi_worker", "communication": "ring", "timeout_seconds": 30}):
        cfg = DistributeConfig.from_config(c)
        assert DistributeConfig.from_config(json.loads(json.dumps(cfg.to_config()))) == cfg
        assert {k: v for k, v in cfg.to_config().items() if k in c} == c
    assert DistributeConfig.from_config(None) == DistributeConfig()
    assert DistributeConfig().to_config() == {"strategy": "default", "logical_cpus": None,
                                              "communication": "auto", "timeout_seconds": None}


@pytest.mark.parametrize("config, message", [
    ({"strategy": "parameter_server"}, "strategy must be one of"),
    ({"strategy": "Mirrored"}, "strategy must be one of"),
    ({"strategy": "mirrored", "logical_cpus": 0}, "logical_cpus must be >= 1"),
    ({"strategy": "mirrored", "logical_cpus": 2.0}, "logical_cpus must be an integer"),
    ({"strategy": "mirrored", "logical_cpus": True}, "logical_cpus must be an integer"),
    ({"strategy": "default", "logical_cpus": 2}, "logical_cpus applies to strategy 'mirrored' only"),
    ({"strategy": "multi_worker", "logical_cpus": 2}, "logical_cpus applies to strategy 'mirrored' only"),
    ({"strategy": "multi_worker", "communication": "nccl"}, "communication must be one of"),
    ({"strategy": "mirrored", "communication": "ring"}, "applies to strategy 'multi_worker' only"),
    ({"strategy": "multi_worker", "timeout_seconds": 0}, "timeout_seconds must be > 0"),
    ({"strategy": "default", "timeout_seconds": 5}, "applies to strategy 'multi_worker' only"),
    ({"strategy": "default", "devices": 2}, "unknown config keys ['devices']"),
    (["mirrored"], "must be a JSON object"),
])
def test_config_validation(config, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        DistributeConfig.from_config(config)


def _tf_config(cluster=None, task=None, **extra) -> dict[str, str]:
    c = {"cluster": {"worker": ["localhost:2222", "localhost:2223"]} if cluster is None else cluster,
         "task": {"type": "worker", "index": 0} if task is None else task, **extra}
    return {"TF_CONFIG": json.dumps(c)}


def test_read_tf_config_accepts_a_cluster():
    tf_config = read_tf_config(_tf_config(task={"type": "worker", "index": 1}))
    assert tf_config == {"cluster": {"worker": ["localhost:2222", "localhost:2223"]},
                         "task": {"type": "worker", "index": 1}}
    with_chief = read_tf_config(_tf_config(cluster={"chief": ["h0:1"], "worker": ["h1:1"]},
                                           task={"type": "chief", "index": 0}))
    assert with_chief["task"]["type"] == "chief"


@pytest.mark.parametrize("environ, message", [
    ({}, "needs the TF_CONFIG environment variable"),
    ({"TF_CONFIG": "  "}, "needs the TF_CONFIG environment variable"),
    ({"TF_CONFIG": "{cluster: 1}"}, "TF_CONFIG is not valid JSON"),
    ({"TF_CONFIG": "[1, 2]"}, "TF_CONFIG must be a JSON object"),
    ({"TF_CONFIG": '{"task": {"type": "worker", "index": 0}}'}, "needs a 'cluster' object"),
    (_tf_config(cluster={"worker": []}), "'worker' must be a non-empty list"),
    (_tf_config(cluster={"worker": ["localhost"]}), r"worker\[0\] must be 'host:port'"),
    (_tf_config(cluster={"worker": ["localhost:99999"]}), r"worker\[0\] must be 'host:port'"),
    (_tf_config(cluster={"worker": ["h:1", "h:1"]}), "an address is used twice"),
    (_tf_config(cluster={"worker": ["h:1"], "ps": ["h:2"]}), r"jobs \['ps'\] are not supported"),
    (_tf_config(cluster={"chief": ["h:1"]}, task={"type": "chief", "index": 0}), "needs a 'worker' job"),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["h:1"]}})}, "needs a 'task' object"),
    (_tf_config(task={"type": "evaluator", "index": 0}), "task type must be one of"),
    (_tf_config(task={"type": "worker", "index": 2}), r"task index must be an integer in 0\.\.1"),
    (_tf_config(task={"type": "worker", "index": "0"}), "task index must be an integer"),
])
def test_read_tf_config_errors(environ, message):
    with pytest.raises(ValueError, match=message):
        read_tf_config(environ)


def test_multi_worker_without_tf_config_fails_before_tensorflow(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        make_strategy({"strategy": "multi_worker"}, verbose=False)
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:2222"]}, "task": {"type": "worker"}}')
    with pytest.raises(ValueError, match="task index must be an integer"):
        make_strategy({"strategy": "multi_worker"}, verbose=False)


def test_replica_slices_partition_the_global_batch():
    for b in (0, 1, 3, 4, 32, 33):
        for n in (1, 2, 3, 5):
            rows = [r for i in range(n) for r in range(*replica_slice(b, i, n))]
            assert rows == list(range(b)), f"batch {b}, {n} replicas: rows {rows}"
            sizes = [hi - lo for lo, hi in (replica_slice(b, i, n) for i in range(n))]
            assert max(sizes) - min(sizes) <= 1, f"batch {b}, {n} replicas: slice sizes {sizes}"


# ---------------------------------------------------------------- MaskedTrainer arguments (one device, in process)


def _lenet_masks(model, zero_every: int = 2) -> dict[str, np.ndarray]:
    masks = {}
    for layer in model.layers:
        if layer.weights:
            m = np.ones(tuple(layer.kernel.shape), np.float32)
            m.reshape(-1)[::zero_every] = 0
            masks[layer.name] = m
    return masks


def test_trainer_rejects_bad_masks_and_arguments():
    from prune.distribute import MaskedTrainer
    from prune.models import lenet5
    masks = _lenet_masks(lenet5())
    kw = {"global_batch_size": 8, "learning_rate": 0.01, "log_every": 0}
    with pytest.raises(ValueError, match=r"mask for layer 'fc9', but the model's layers with kernels are"):
        MaskedTrainer(lenet5, {"fc9": masks["fc1"]}, **kw)
    with pytest.raises(ValueError, match=r"layer fc2: mask shape \(500, 11\) != kernel shape \(500, 10\)"):
        MaskedTrainer(lenet5, {"fc2": np.ones((500, 11))}, **kw)
    bad = masks["conv1"].copy()
    bad[0, 0, 0, 3] = 0.5
    with pytest.raises(ValueError, match=r"layer conv1: mask must hold only 0 and 1, got 0.5 at \(0, 0, 0, 3\)"):
        MaskedTrainer(lenet5, {"conv1": bad}, **kw)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        MaskedTrainer(lenet5, masks, optimizer="rmsprop", **kw)
    with pytest.raises(ValueError, match="momentum applies to optimizer 'sgd' only"):
        MaskedTrainer(lenet5, masks, optimizer="adam", momentum=0.9, **kw)
    with pytest.raises(ValueError, match=r"trainable names layers \['fc7'\]"):
        MaskedTrainer(lenet5, masks, trainable=["fc7"], **kw)
    trainer = MaskedTrainer(lenet5, masks, **kw)
    with pytest.raises(ValueError, match="give exactly one of epochs and steps"):
        trainer.fit((np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.int32)))
    with pytest.raises(ValueError, match="x has 4 examples and y 3"):
        trainer.fit((np.zeros((4, 28, 28, 1), np.float32), np.zeros(3, np.int32)), steps=1)


def test_trainer_trains_only_the_trainable_layers_and_keeps_zeros():
    """freeze_others: with trainable=["fc1"], every other weight is unchanged; fc1's pruned
    weights stay zero and its kept weights move."""
    import tensorflow as tf
    from prune.distribute import fine_tune
    from prune.models import lenet5
    model = lenet5()
    masks = _lenet_masks(model, zero_every=3)
    rng = np.random.default_rng(5)
    before = [(rng.standard_normal(w.shape) * 0.05).astype(np.float32) for w in model.get_weights()]
    x = rng.standard_normal((20, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 20)
    data = tf.data.Dataset.from_tensor_slices((x, y))
    after = fine_tune(lenet5, before, masks, data, global_batch_size=8, learning_rate=0.1, steps=3,
                      trainable=["fc1"], log_every=0)
    for i, (a, b) in enumerate(zip(after, before)):
        layer = KERNELS.get(i, KERNELS.get(i - 1))
        if i in KERNELS:
            b = b * masks[layer]
            pruned = masks[layer] == 0
            assert np.all(a[pruned] == 0), f"{layer}: pruned weights not zero"
        if layer == "fc1":
            assert np.count_nonzero(a != b) > 0.5 * np.count_nonzero(b), f"{layer} weight {i}: did not train"
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{layer} weight {i}: frozen layer changed")
