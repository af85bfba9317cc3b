"""prune.gradual (issue 15): the per-layer allocation from a sensitivity scan, the density
thresholds, 1-D k-means, and one short run on a slice of MNIST through the C runtime.

The short run is the shipped LeNet-5 on 3,000 training / 1,000 validation / 1,000 test images,
one epoch per phase: it checks the mechanics (targets reached, masks held, weight sharing
leaves at most 15 distinct non-zero values per layer, the written files load and agree with
TensorFlow), not the accuracy of the shipped result (models/lenet5_gradual/report.md).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from prune.gradual import GradualConfig, _threshold_for_density, allocate, kmeans_1d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET = os.path.join(ROOT, "models", "lenet5.npz")


def _scan():
    q = [0.0, 1.0, 2.0, 3.0]
    return {"baseline_val": 0.99, "layers": {
        "a": {"size": 1000, "sigma": 1.0, "q": q, "density": [1.0, 0.3, 0.05, 0.01], "val": [0.99, 0.99, 0.98, 0.5]},
        "b": {"size": 100, "sigma": 1.0, "q": q, "density": [1.0, 0.3, 0.05, 0.01], "val": [0.99, 0.9, 0.5, 0.1]}}}


def test_allocate_spends_the_budget_on_the_insensitive_layer():
    s = _scan()
    # 1100 weights; 10x -> at most 110 non-zeros: a at q 2 (50) keeps b dense (100)? 150 > 110, so
    # tau must reach b's drop at q 1 (0.09): a 50 + b 30 = 80
    p = allocate(s, 10)
    assert p["layers"]["a"]["q"] == 2.0 and p["layers"]["b"]["q"] == 1.0
    assert abs(p["tau"] - 0.09) < 1e-6 and p["nnz"] == pytest.approx(80) and p["compression"] == pytest.approx(13.75)
    # 5x -> 220: a at q 1 (300) is too many; a at q 2 (tau 0.01) and b dense: 150
    p = allocate(s, 5)
    assert p["layers"]["a"]["q"] == 2.0 and p["layers"]["b"]["q"] == 0.0 and p["tau"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="q_max"):
        allocate(s, 200)


def test_threshold_for_density():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(50, 40)).astype(np.float32)
    mask = np.ones(w.shape, bool)
    for d in (1.0, 0.5, 0.1, 0.01):
        t = _threshold_for_density(w, mask, d)
        assert int((np.abs(w) >= t).sum()) == int(round(d * w.size)), d
    mask[:, :20] = False  # a mask that already keeps half: the threshold counts only kept weights
    t = _threshold_for_density(w, mask, 0.1)
    assert int(((np.abs(w) >= t) & mask).sum()) == 200
    assert _threshold_for_density(w, mask, 0.9) == 0.0 and _threshold_for_density(w, mask, 0.0) == np.inf


def test_kmeans_1d_deterministic_and_optimal_on_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([-0.5, -0.1, 0.2, 0.7])
    v = np.concatenate([c + 0.001 * rng.normal(size=200) for c in centres])
    c, a = kmeans_1d(v, 4)
    np.testing.assert_allclose(c, centres, atol=2e-3)
    assert np.array_equal(a, np.repeat(np.arange(4), 200))
    c2, a2 = kmeans_1d(v, 4)
    assert np.array_equal(c, c2) and np.array_equal(a, a2)
    c, a = kmeans_1d(rng.normal(size=5000), 15)
    assert len(c) == 15 and np.all(np.diff(c) > 0) and a.min() >= 0 and a.max() <= 14


def test_config_validation():
    cfg = GradualConfig.from_file(os.path.join(ROOT, "prune", "configs", "lenet5_gradual.json"))
    assert cfg.model == "models/lenet5.npz" and cfg.out == "models/lenet5_pruned.npz"
    assert json.loads(json.dumps(cfg.to_config()))["compressions"] == cfg.compressions
    for bad, match in [({"bogus": 1}, "unknown configuration keys"), ({"out": "x.bin"}, "out must end"),
                       ({"compressions": [0.5]}, "compressions"), ({"prune_epochs": 0}, "prune_epochs"),
                       ({"codebook": {"bits": 9}}, "bits")]:
        with pytest.raises(ValueError, match=match):
            GradualConfig(**{"model": "a.npz", "out": "b.npz", **bad})


def test_short_run_reaches_targets_and_shares_weights(tmp_path):
    pytest.importorskip("tensorflow")
    import keras

    import sparseinfer
    from prune.gradual import load_mnist_split, run_one, sensitivity_scan
    from prune.keras_io import keras_from_model_file

    full = load_mnist_split(LENET, 5000)
    data = {"x_train": full["x_train"][:3000], "y_train": full["y_train"][:3000],
            "x_val": full["x_val"][:1000], "y_val": full["y_val"][:1000],
            "x_test": full["x_test"][:1000], "y_test": full["y_test"][:1000],
            "manifest": full["manifest"], "dense_path": LENET}
    cfg = GradualConfig(model=LENET, out=str(tmp_path / "p.npz"), prune_epochs=1, finetune_epochs=1,
                        frequency=5, scan={"q_step": 0.5, "q_max": 4.0},
                        codebook={"bits": 4, "epochs": 1, "learning_rate": 1e-4})
    keras.utils.set_random_seed(0)
    model = keras_from_model_file(LENET)
    names = ["conv1", "conv2", "fc1", "fc2"]
    scan = sensitivity_scan(model, names, data, 0.5, 4.0, verbose=False)
    assert set(scan["layers"]) == set(names)
    for n in names:  # q 0 keeps everything and the accuracy of the dense model
        assert scan["layers"][n]["density"][0] == 1.0 and scan["layers"][n]["val"][0] == scan["baseline_val"]
    rec = run_one(cfg, data, scan, 20.0, str(tmp_path / "p.npz"), str(tmp_path / "s.npz"), verbose=False)
    alloc = rec["allocation"]
    # every layer ends at its target density (dead-neuron removal can only lower the count)
    total = sum(scan["layers"][n]["size"] for n in names)
    assert rec["nnz"] <= sum(round(alloc["layers"][n]["density"] * scan["layers"][n]["size"]) for n in names) + 4
    assert rec["compression"] >= 20.0 * 0.99 and rec["weights_dense"] == total
    # the written file runs in the C runtime as TensorFlow runs it
    x = data["x_val"][:64]
    m = sparseinfer.load(str(tmp_path / "p.npz"))
    np.testing.assert_allclose(m.predict(x), np.asarray(keras_from_model_file(str(tmp_path / "p.npz"))(x)),
                               rtol=1e-4, atol=1e-5)
    # weight sharing: at most 15 distinct non-zero values per layer, the same zeros
    z, zs = np.load(tmp_path / "p.npz"), np.load(tmp_path / "s.npz")
    for n in names:
        for k in (f"{n}.W.data", f"{n}.W"):
            if k in zs.files:
                vals = zs[k][zs[k] != 0]
                assert len(np.unique(vals)) <= 15, (n, len(np.unique(vals)))
    assert rec["shared"]["nnz"] <= rec["nnz"]
    assert rec["shared"]["val"] >= rec["val"] - 0.05, rec["shared"]


def test_shipped_files_meet_issue_15():
    """The shipped pruned and compressed LeNet-5s against issue 15's bars, by the C runtime on
    all 10,000 MNIST test images: at least 30x fewer non-zero weights than models/lenet5.npz and
    at most 0.80% test error; the compressed file at least 60x fewer bytes and at most 0.80%;
    TensorFlow on the same (decoded) weights agrees image by image."""
    import sparseinfer
    from sparseinfer.evaluation import evaluate_mnist
    from sparseinfer.info import model_info

    pytest.importorskip("zarr")
    dense = model_info(LENET)["total"]["nnz"]
    for name, bar in (("lenet5_pruned", "nnz"), ("lenet5_compressed", "bytes")):
        path = os.path.join(ROOT, "models", name + ".npz")
        m = sparseinfer.load(path, plan="nomeasure")
        r = evaluate_mnist(m)
        err = 100 * (1 - r["accuracy"])
        assert err <= 0.80, f"{name}: test error {err:.2f}% > 0.80%"
        if bar == "nnz":
            nnz = model_info(path)["total"]["nnz"]
            assert dense / nnz >= 30, f"{name}: {dense:,} / {nnz:,} = {dense / nnz:.1f}x fewer non-zeros < 30x"
        else:
            ratio = os.path.getsize(LENET) / os.path.getsize(path)
            assert ratio >= 60, f"{name}: {ratio:.1f}x fewer bytes than lenet5.npz < 60x"
        if name == "lenet5_compressed":
            pytest.importorskip("tensorflow")
            from prune.keras_io import keras_from_model_file
            from sparseinfer.datasets import load_mnist
            from sparseinfer.preprocess import normalize
            x = normalize(load_mnist()[2][..., None], m.input_spec)
            km = keras_from_model_file(path)
            tf_pred = np.concatenate([np.asarray(km(x[i:i + 2000])).argmax(1)
                                      for i in range(0, len(x), 2000)])
            differ = np.flatnonzero(tf_pred != r["predictions"])
            assert differ.size == 0, f"{name}: TensorFlow and the C runtime differ on test images {differ[:10]}"
