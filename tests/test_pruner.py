"""The pruner (prune/): schedules, masks, q steps and stopping, dead neurons, dropout rule,
resume after an interruption, export round trip through the C runtime.

Fast: the shipped LeNet-5 on 2,000 training / 1,000 validation MNIST images, one epoch
per step, two or three steps.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from prune.schedule import LayerGroup, PruningSchedule, QSchedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET = os.path.join(ROOT, "models", "lenet5.npz")


# ---------------------------------------------------------------- schedules (no TensorFlow)


def test_qschedule_steps():
    assert list(QSchedule(step=0.2, max_q=1.0)) == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert list(QSchedule(step=0.1, start=0.5, max_q=0.8)) == [0.5, 0.6, 0.7, 0.8]
    assert list(QSchedule(values=[0.3, 1.0])) == [0.3, 1.0]
    assert len(QSchedule(step=0.1)) == 40
    with pytest.raises(IndexError):
        QSchedule(values=[1.0]).q(1)


@pytest.mark.parametrize("kwargs, match", [
    ({"step": 0}, "step must be >"),
    ({"step": -0.1}, "step must be >"),
    ({"step": float("nan")}, "finite"),
    ({"step": "0.1"}, "finite number"),
    ({"step": 0.1, "start": 0.5, "max_q": 0.2}, "max_q must be >="),
    ({}, "give step"),
    ({"values": []}, "non-empty"),
    ({"values": [0.5, 0.5]}, "strictly increasing"),
    ({"values": [0.0, 0.5]}, "must be >"),
    ({"values": [0.5], "step": 0.1}, "not both"),
])
def test_qschedule_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QSchedule(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"layers": []}, "non-empty list"),
    ({"layers": "fc1"}, "non-empty list"),
    ({"layers": ["fc1", "fc1"]}, "duplicate"),
    ({"layers": ["fc1"]}, "give q"),
    ({"layers": ["fc1"], "kind": "dense", "tolerance": -0.1}, "tolerance"),
    ({"layers": ["fc1"], "kind": "dense", "tolerance": 2}, "tolerance"),
    ({"layers": ["fc1"], "kind": "dense", "epochs": 2, "max_epochs": 1}, "max_epochs"),
    ({"layers": ["fc1"], "kind": "dense", "epochs": 1.5}, "epochs must be an integer"),
    ({"layers": ["fc1"], "kind": "dense", "learning_rate": -1}, "learning_rate"),
    ({"layers": ["fc1"], "kind": "dense", "freeze_others": "yes"}, "freeze_others"),
    ({"layers": ["fc1"], "q": {"step": 0.1, "bogus": 1}}, "unknown config keys"),
])
def test_layer_group_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LayerGroup(**kwargs)


def test_schedule_validation_and_round_trip(tmp_path):
    assert LayerGroup(["conv1"], kind="conv").q == QSchedule(step=0.1)
    assert LayerGroup(["fc1"], kind="dense").q == QSchedule(step=0.2)
    s = PruningSchedule([LayerGroup(["fc1", "fc2"], q=QSchedule(step=0.2, max_q=2.0), name="fc",
                                    tolerance=0.002, freeze_others=True),
                         {"layers": ["conv2"], "q": {"values": [0.1, 0.3, 0.7]}, "epochs": 2, "max_epochs": 3}],
                        final_epochs=2, final_learning_rate=5e-5)
    path = tmp_path / "s.json"
    path.write_text(s.to_json())
    back = PruningSchedule.from_json(path.read_text())
    assert back == s and back.to_config() == s.to_config()
    assert back.layers == ["fc1", "fc2", "conv2"]
    assert back.groups[1].name == "conv2" and list(back.groups[1].q) == [0.1, 0.3, 0.7]
    with pytest.raises(ValueError, match="is in groups"):
        PruningSchedule([LayerGroup(["fc1"], kind="dense"), LayerGroup(["fc1", "fc2"], kind="dense")])
    with pytest.raises(ValueError, match="non-empty list"):
        PruningSchedule([])
    with pytest.raises(ValueError, match="unknown config keys"):
        PruningSchedule.from_config({"groups": [{"layers": ["a"], "kind": "conv"}], "epochs": 3})
    with pytest.raises(ValueError, match="final_epochs"):
        PruningSchedule([LayerGroup(["a"], kind="conv")], final_epochs=-1)


def test_prune_config_file_and_validation(tmp_path):
    from prune.pruner import PruneConfig
    cfg = PruneConfig.from_file(os.path.join(ROOT, "prune", "configs", "lenet5.json"))
    assert cfg.model == "models/lenet5.npz" and cfg.out == "models/lenet5_stepwise.npz"
    assert cfg.schedule.layers == ["fc1", "conv2", "fc2", "conv1"] and cfg.lr_schedule == "cosine"
    assert PruneConfig.from_config(json.loads(json.dumps(cfg.to_config()))).to_config() == cfg.to_config()
    base = {"model": "a.npz", "out": "b.npz", "schedule": {"groups": [{"layers": ["fc1"], "kind": "dense"}]}}
    assert PruneConfig.from_config(base).checkpoint == os.path.join("b", "checkpoint.npz")
    for bad, match in [({"out": "b.bin"}, "out must end"), ({"batch_size": 0}, "batch_size"),
                       ({"dataset": {"val_size": 0}}, "val_size"), ({"dataset": {"name": "cifar"}}, "mnist"),
                       ({"storage": "zip"}, "storage"), ({"bogus": 1}, "unknown configuration keys")]:
        with pytest.raises(ValueError, match=match):
            PruneConfig.from_config({**base, **bad})
    # out naming the model itself (here through a link) would overwrite it: refused
    (tmp_path / "m.npz").write_bytes(b"model")
    os.symlink(tmp_path / "m.npz", tmp_path / "link.npz")
    with pytest.raises(ValueError, match="is the model being pruned"):
        PruneConfig.from_config({**base, "model": str(tmp_path / "m.npz"), "out": str(tmp_path / "link.npz")})
    assert (tmp_path / "m.npz").read_bytes() == b"model"


def test_sparseinfer_prune_command(capsys):
    """sparseinfer-prune (prune.commands): `prune` is the default command, and the runtime's
    `sparseinfer prune` points there."""
    from prune.commands import main
    from sparseinfer.cli import main as runtime_main
    for lead in ([], ["prune"]):
        assert main([*lead, os.path.join(ROOT, "prune", "configs", "lenet5.json"), "--print-config",
                     "--out", "x/y.npz"]) == 0
        cfg = json.loads(capsys.readouterr().out)
        assert cfg["out"] == "x/y.npz" and cfg["report_dir"] == "x/y"
    assert main(["prune", "nothing.txt"]) == 1
    assert runtime_main(["prune", "lenet5.json"]) == 2
    assert "sparseinfer-prune" in capsys.readouterr().err


# ---------------------------------------------------------------- TensorFlow from here


@pytest.fixture(scope="module")
def keras():
    pytest.importorskip("tensorflow")
    import keras
    return keras


@pytest.fixture(scope="module")
def mnist_small(keras):
    pytest.importorskip("zarr")
    from prune.pruner import PruneConfig, load_data
    cfg = PruneConfig(LENET, "/tmp/unused.npz", {"groups": [{"layers": ["fc1"], "kind": "dense"}]},
                      dataset={"train_limit": 2000, "val_limit": 1000})
    d = load_data(cfg, {"mean": [0.0], "std": [255.0]}, with_test=False)
    d["x_test"], d["y_test"] = d["x_val"][:200], d["y_val"][:200]  # a stand-in: the real test set stays unused
    return d


def _config(tmp_path, groups, name="p", **kw):
    from prune.pruner import PruneConfig
    return PruneConfig(LENET, str(tmp_path / f"{name}.npz"), {"groups": groups, "final_epochs": kw.pop("final_epochs", 0)},
                       dataset={"train_limit": 2000, "val_limit": 1000}, plots=kw.pop("plots", False),
                       deterministic=True, **kw)


def test_masks_hold_through_fit(keras):
    from prune.masks import apply_masks, mask_callback, threshold_mask
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu", name="d1"),
                              keras.layers.Dense(3, activation="softmax", name="d2")])
    k = model.get_layer("d1").kernel.numpy()
    masks = {"d1": threshold_mask(k, 1.0, float(np.std(k))),
             "d2": threshold_mask(model.get_layer("d2").kernel.numpy(), 0.5, 0.1)}
    assert 0 < masks["d1"].mean() < 1
    apply_masks(model, masks)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(256, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    before = model.get_layer("d1").kernel.numpy().copy()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[mask_callback(masks)])
    for n, m in masks.items():
        w = model.get_layer(n).kernel.numpy()
        assert (w[m == 0] == 0).all(), f"{n}: pruned weights moved"
    kept = masks["d1"] != 0
    assert not np.array_equal(model.get_layer("d1").kernel.numpy()[kept], before[kept]), "kept weights must train"


def test_q_rises_then_stops_and_keeps_last_good_step(tmp_path, keras, mnist_small):
    """fc1: q 1.0 is accepted (1% tolerance), q 50 prunes every weight and fails: the run
    keeps the state of q 1.0; pruned weights are exactly zero after fine-tuning; the file
    stores fc1 as CSR and the C runtime computes what TensorFlow computes on it."""
    from prune.keras_io import keras_from_model_file, load_weights
    from prune.pruner import _load_checkpoint, prune
    cfg = _config(tmp_path, [{"layers": ["fc1"], "q": {"values": [1.0, 50.0]}, "tolerance": 0.01,
                              "epochs": 1, "max_epochs": 1}], plots=True)
    r = prune(cfg, data=mnist_small, verbose=False)
    h = r["history"]
    assert [x["q"] for x in h] == [1.0, 50.0]
    assert [x["accepted"] for x in h] == [True, False]
    assert h[1]["density"]["fc1"] == 0.0 and h[1]["val_after"] < 0.5
    assert r["q"]["fc1"] == 1.0
    assert r["layers"]["fc1"]["density"] == pytest.approx(h[0]["density"]["fc1"])
    assert 0.2 < h[0]["density"]["fc1"] < 0.45   # about 2 * Phi(-1) = 32% for a bell-shaped layer
    # masks held: every weight pruned at step 1 is exactly zero in the checkpoint and the file
    weights, masks, state = _load_checkpoint(cfg.checkpoint)
    assert state["group_index"] == 1 and state["q"]["fc1"] == 1.0
    manifest, fw = load_weights(cfg.out)
    w_fc1 = fw["fc1"][0]                  # (units, inputs): file orientation
    m = masks["fc1"].T
    if w_fc1.shape == m.shape:            # no dead neuron removed
        assert (w_fc1[m == 0] == 0).all()
    assert np.count_nonzero(w_fc1) == int(masks["fc1"].sum()) - 0  # kept weights are non-zero
    assert r["evaluation"]["tf_val"] == r["evaluation"]["runtime_val"]
    # export round trip: CSR where smaller, runtime output equals Keras output on the file
    fmt = {l["name"]: l["weight"]["format"] for l in manifest["layers"] if "weight" in l}
    assert fmt["fc1"] == "csr" and fmt["conv2"] == "dense"
    sparseinfer = pytest.importorskip("sparseinfer")
    x = mnist_small["x_val"][:64]
    ref = np.asarray(keras_from_model_file(cfg.out)(x, training=False))
    got = sparseinfer.load(cfg.out).predict(x)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    for f in ("report.json", "report.md", "hist_fc1.png", "hist_conv1.png", "accuracy_vs_compression.png"):
        assert os.path.getsize(os.path.join(cfg.report_dir, f)) > 0, f
    assert r["runtime_info"]["matches_file"]


def test_steps_without_fine_tuning(tmp_path, keras, mnist_small):
    """A group with ``epochs: 0`` prunes step after step with no training in between: each
    step is kept while validation accuracy as pruned stays within the tolerance; the first
    that falls out is undone. No weight other than the pruned ones moves."""
    from prune.keras_io import load_weights
    from prune.pruner import prune
    cfg = _config(tmp_path, [{"layers": ["fc1"], "q": {"values": [0.1, 0.2, 40.0]}, "tolerance": 0.02,
                              "epochs": 0, "max_epochs": 1}], dead_neurons=False)
    r = prune(cfg, data=mnist_small, verbose=False)
    h = r["history"]
    assert [x["q"] for x in h] == [0.1, 0.2, 40.0] and [x["accepted"] for x in h] == [True, True, False]
    assert all(x["epochs"] == 0 and x["val_after"] == x["val_before"] for x in h)
    assert r["q"]["fc1"] == 0.2
    _, w_in = load_weights(LENET)
    _, w_out = load_weights(cfg.out)
    for name in w_in:
        a, b = w_in[name][0], w_out[name][0]
        if name == "fc1":
            below = np.abs(a) < 0.2 * r["sigma"]["fc1"]
            assert (b[below] == 0).all() and np.array_equal(b[~below], a[~below]), "fc1: only pruning"
            assert 0.1 < below.mean() < 0.25  # about 1 - 2 Phi(-0.2) = 16%
        else:
            np.testing.assert_array_equal(b, a, err_msg=f"{name} moved without fine-tuning")
        np.testing.assert_array_equal(w_out[name][1], w_in[name][1], err_msg=f"{name} bias")


def test_resume_equals_uninterrupted(tmp_path, keras, mnist_small):
    from prune.keras_io import load_weights
    from prune.pruner import StepInterrupt, prune
    groups = [{"layers": ["fc1"], "q": {"values": [0.5, 1.0]}, "tolerance": 0.05, "epochs": 1, "max_epochs": 1},
              {"layers": ["conv2"], "q": {"values": [0.3]}, "tolerance": 0.05, "epochs": 1, "max_epochs": 1}]
    # with augmentation on: the shifts are seeded per (step, epoch) too, so resuming repeats them
    a = prune(_config(tmp_path, groups, "a", final_epochs=1, augment={"shift": 2}), data=mnist_small, verbose=False)

    def crash(state):
        if state["step_counter"] == 1:
            raise StepInterrupt("simulated crash after step 1")

    cfg_b = _config(tmp_path, groups, "b", final_epochs=1, augment={"shift": 2})
    with pytest.raises(StepInterrupt):
        prune(cfg_b, data=mnist_small, verbose=False, on_step_end=crash)
    assert os.path.exists(cfg_b.checkpoint) and not os.path.exists(cfg_b.out)
    b = prune(cfg_b, data=mnist_small, verbose=False)
    assert b["resumed"] == 1
    strip = lambda hist: [{k: v for k, v in h.items() if k != "seconds"} for h in hist]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"]) and len(a["history"]) == 3
    assert a["q"] == b["q"] and a["evaluation"] == b["evaluation"]
    _, wa = load_weights(a["output_model"])
    _, wb = load_weights(b["output_model"])
    for n in wa:
        np.testing.assert_array_equal(wa[n][0], wb[n][0], err_msg=n)
        np.testing.assert_array_equal(wa[n][1], wb[n][1], err_msg=n)
    # a checkpoint from another configuration is refused
    groups[0]["tolerance"] = 0.04
    with pytest.raises(ValueError, match="another configuration"):
        prune(_config(tmp_path, groups, "b", final_epochs=1, augment={"shift": 2}), data=mnist_small, verbose=False)
    with pytest.raises(ValueError, match="another configuration"):  # augmentation is part of it
        groups[0]["tolerance"] = 0.05   # the original schedule, but no augmentation
        prune(_config(tmp_path, groups, "b", final_epochs=1), data=mnist_small, verbose=False)


def _dead_model(keras, padding="valid"):
    L = keras.layers
    return keras.Sequential([
        keras.Input((10, 10, 2)),
        L.Conv2D(4, 3, padding="valid", name="c1"),                      # linear, like LeNet
        L.MaxPooling2D(2, name="p1"),
        L.Conv2D(5, 2, padding=padding, activation="relu", name="c2"),
        L.Flatten(name="flat"),
        L.Dense(6, activation="relu", name="d1"),
        L.Dropout(0.3, name="drop"),
        L.Dense(5, activation="relu", name="d2"),
        L.Dense(3, name="out"),
    ], name="dead")


def _set_dead_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    for l in model.layers:
        ws = l.get_weights()
        if ws:
            l.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in ws])
    k, b = model.get_layer("c1").get_weights()
    k[..., 1] = 0; b[1] = 0.7          # c1 filter 1: no inputs, constant 0.7 -> folded into c2's bias  # noqa: E702
    model.get_layer("c1").set_weights([k, b])
    k, b = model.get_layer("c2").get_weights()
    k[:, :, 2, :] = 0                  # c1 filter 2: no outputs
    k[..., 3] = 0; b[3] = 0.4          # c2 filter 3: no inputs, relu(0.4) through flatten into d1  # noqa: E702
    model.get_layer("c2").set_weights([k, b])
    k, b = model.get_layer("d1").get_weights()
    k[:, 2] = 0; b[2] = 0.5            # d1 unit 2: no inputs  # noqa: E702
    k[:, 4] = 0; b[4] = -0.3           # d1 unit 4: no inputs, relu(-0.3) = 0  # noqa: E702
    model.get_layer("d1").set_weights([k, b])
    k, b = model.get_layer("out").get_weights()
    k[0, :] = 0                        # d2 unit 0: no outputs
    model.get_layer("out").set_weights([k, b])


def test_dead_neurons_removed_outputs_unchanged(keras):
    from prune.deadneurons import remove_dead_neurons
    model = _dead_model(keras)
    _set_dead_weights(model)
    new, rep = remove_dead_neurons(model)
    widths = {n: v["after"] for n, v in rep["layers"].items()}
    assert widths == {"c1": 2, "c2": 4, "d1": 4, "d2": 4}, rep
    assert new.get_layer("c2").kernel.shape == (2, 2, 2, 4)
    assert new.get_layer("d1").kernel.shape == (3 * 3 * 4, 4)
    assert new.get_layer("out").kernel.shape == (4, 3)
    assert rep["bias_folds"] == 3        # c1[1] -> c2, c2[3] -> d1, d1[2] -> d2 (d1[4] is 0: dropped)
    x = np.random.default_rng(1).normal(size=(32, 10, 10, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(new(x, training=False)), np.asarray(model(x, training=False)),
                               atol=1e-5, rtol=0)
    # an already clean model is left alone
    again, rep2 = remove_dead_neurons(new)
    assert {n: v["after"] for n, v in rep2["layers"].items()} == widths and rep2["connections_removed"] == 0


def test_dead_neurons_same_padding_keeps_nonzero_constants(keras):
    """With 'same' padding the zero border makes a constant channel non-constant: a
    neuron without inputs but a non-zero constant output stays."""
    from prune.deadneurons import remove_dead_neurons
    model = _dead_model(keras, padding="same")
    _set_dead_weights(model)
    new, rep = remove_dead_neurons(model)
    assert rep["layers"]["c1"]["after"] == 3   # filter 2 (no outputs) goes, filter 1 (constant 0.7) stays
    x = np.random.default_rng(2).normal(size=(16, 10, 10, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(new(x, training=False)), np.asarray(model(x, training=False)),
                               atol=1e-5, rtol=0)


def test_dropout_rate_rule(keras):
    from prune.masks import dropout_rate, dropout_rates, set_dropout_rates
    assert dropout_rate(0.5, 2500, 10000) == pytest.approx(0.25)
    assert dropout_rate(0.5, 10000, 10000) == 0.5
    assert dropout_rate(0.4, 0, 100) == 0.0
    with pytest.raises(ValueError):
        dropout_rate(0.5, 11, 10)
    with pytest.raises(ValueError):
        dropout_rate(1.0, 1, 10)
    model = _dead_model(keras)
    base = {"drop": 0.3}
    sizes = {l.name: int(np.prod(l.kernel.shape)) for l in model.layers if hasattr(l, "kernel")}
    k, b = model.get_layer("d1").get_weights()
    k[np.abs(k) < np.quantile(np.abs(k), 0.84)] = 0        # d1 keeps 16% of its weights
    model.get_layer("d1").set_weights([k, b])
    c = int(np.count_nonzero(k))
    rates = dropout_rates(model, base, sizes)
    assert rates == {"drop": pytest.approx(0.3 * np.sqrt(c / k.size))}
    assert rates["drop"] == pytest.approx(0.3 * 0.4, abs=0.01)
    set_dropout_rates(model, rates)
    assert model.get_layer("drop").rate == pytest.approx(rates["drop"])
