"""sparseinfer.export.export_keras, prune.keras_io.keras_from_model_file, write_model atomicity."""
from __future__ import annotations

import os

import numpy as np
import pytest

from sparseinfer.format import ModelFormatError, read_manifest, write_model


@pytest.fixture(scope="module")
def keras():
    pytest.importorskip("tensorflow")
    import keras
    return keras


def _randomize(model, seed: int = 0, sparsity: float = 0.0) -> None:
    """Random weights, random (non-zero) biases; optionally zero a fraction of each kernel."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        new = []
        for w in ws:
            fan_in = int(np.prod(w.shape[:-1])) if w.ndim > 1 else 1
            v = rng.normal(0.0, 1.0 / np.sqrt(fan_in), w.shape).astype(np.float32)
            if w.ndim > 1 and sparsity:
                v[rng.random(w.shape) < sparsity] = 0.0
            new.append(v)
        layer.set_weights(new)


def _weights_by_layer(model) -> dict[str, list[np.ndarray]]:
    return {l.name: l.get_weights() for l in model.layers if l.get_weights()}


def _assert_same_weights(a, b) -> None:
    wa, wb = _weights_by_layer(a), _weights_by_layer(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert len(wa[name]) == len(wb[name]), name
        for x, y in zip(wa[name], wb[name]):
            assert x.dtype == y.dtype == np.float32 and x.shape == y.shape, name
            assert x.tobytes() == y.tobytes(), f"{name}: weights differ"  # bitwise


def _small_vgg(keras):
    """VGG-like, 32x32x3, exercising use_bias=False, strides, same padding, separate
    ReLU/Activation/Softmax layers and Dropout."""
    L = keras.layers
    inp = keras.Input((32, 32, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c2")(x)
    x = L.ReLU(name="c2_relu")(x)
    x = L.MaxPooling2D(2, name="p1")(x)
    x = L.Conv2D(16, 3, strides=2, padding="same", name="c3")(x)
    x = L.Activation("relu", name="c3_relu")(x)
    x = L.MaxPooling2D(3, strides=2, padding="same", name="p2")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dropout(0.5, name="drop")(x)
    x = L.Dense(32, activation="relu", name="fc1")(x)
    x = L.Dense(10, name="logits")(x)
    x = L.Softmax(name="prob")(x)
    return keras.Model(inp, x, name="smallvgg")


def test_lenet5_export_manifest_and_round_trip(keras, tmp_path):
    from prune.keras_io import keras_from_model_file
    from prune.models import lenet5
    from sparseinfer.export import export_keras

    m = lenet5()
    assert m.count_params() == 431080
    _randomize(m)
    path = tmp_path / "lenet5.npz"
    man = export_keras(m, path, classes=[str(i) for i in range(10)], storage="dense")
    assert read_manifest(path) == man
    assert man["name"] == "lenet5" and man["classes"] == [str(i) for i in range(10)]
    assert man["input"] == {"shape": [28, 28, 1], "color": "gray",
                            "resize": {"mode": "stretch", "size": [28, 28]}, "crop": None,
                            "mean": [0.0], "std": [255.0], "invert": False}
    got = [(l["name"], l["type"]) for l in man["layers"]]
    assert got == [("conv1", "conv2d"), ("pool1", "maxpool2d"), ("conv2", "conv2d"),
                   ("pool2", "maxpool2d"), ("flatten", "flatten"), ("fc1", "dense"), ("fc2", "dense")]
    c1, c2, fc1, fc2 = (man["layers"][i] for i in (0, 2, 5, 6))
    assert (c1["filters"], c1["kernel"], c1["strides"], c1["padding"], c1["activation"]) == \
        (20, [5, 5], [1, 1], "valid", "linear")
    assert (c2["filters"], c2["activation"]) == (50, "linear")
    assert (fc1["units"], fc1["activation"], fc2["units"], fc2["activation"]) == (500, "relu", 10, "softmax")
    assert man["layers"][1]["pool"] == [2, 2] and man["layers"][1]["strides"] == [2, 2]
    with np.load(path, allow_pickle=False) as z:
        shapes = {k: z[k].shape for k in z.files if k != "model.json"}
        assert shapes == {"conv1.W": (20, 25), "conv1.b": (20,), "conv2.W": (50, 500), "conv2.b": (50,),
                          "fc1.W": (500, 800), "fc1.b": (500,), "fc2.W": (10, 500), "fc2.b": (10,)}
        # orientation: conv rows are filters over (kh, kw, cin); dense is kernel.T
        k2 = m.get_layer("conv2").kernel.numpy()
        np.testing.assert_array_equal(z["conv2.W"][7], k2[..., 7].reshape(-1))
        np.testing.assert_array_equal(z["fc1.W"], m.get_layer("fc1").kernel.numpy().T)

    r = keras_from_model_file(path)
    _assert_same_weights(m, r)
    x = np.random.default_rng(1).random((16, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(r.predict(x, verbose=0), m.predict(x, verbose=0), rtol=0, atol=1e-6)


def test_small_vgg_round_trip(keras, tmp_path):
    from prune.keras_io import keras_from_model_file
    from sparseinfer.export import CAFFE_BGR_MEAN, export_keras

    m = _small_vgg(keras)
    _randomize(m, seed=2)
    path = tmp_path / "vgg.npz"
    man = export_keras(m, path, storage="auto")
    assert man["name"] == "smallvgg" and "classes" not in man
    inp = man["input"]
    assert inp["shape"] == [32, 32, 3] and inp["color"] == "bgr" and inp["crop"] is None
    assert inp["resize"] == {"mode": "stretch", "size": [32, 32]}
    assert inp["mean"] == list(CAFFE_BGR_MEAN) and inp["std"] == [1.0]  # one value stands for all channels
    types = [(l["name"], l["type"]) for l in man["layers"]]
    assert types == [("c1", "conv2d"), ("c2", "conv2d"), ("c2_relu", "relu"), ("p1", "maxpool2d"),
                     ("c3", "conv2d"), ("c3_relu", "relu"), ("p2", "maxpool2d"), ("flat", "flatten"),
                     ("fc1", "dense"), ("logits", "dense"), ("prob", "softmax")]  # Dropout skipped
    by = {l["name"]: l for l in man["layers"]}
    assert by["c2"]["bias"] is None and by["c1"]["bias"] == "c1.b"
    assert by["c3"]["strides"] == [2, 2] and by["c3"]["padding"] == "same"
    assert by["p2"] == {"name": "p2", "type": "maxpool2d", "pool": [3, 3], "strides": [2, 2],
                        "padding": "same"}
    with np.load(path, allow_pickle=False) as z:
        assert z["c3.W"].shape == (16, 3 * 3 * 8)
        assert z["fc1.W"].shape == (32, 4 * 4 * 16)  # 32 -> p1 16 -> c3 8 -> p2 4
    r = keras_from_model_file(path)
    _assert_same_weights(m, r)
    x = np.random.default_rng(3).normal(0, 50, (8, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(r.predict(x, verbose=0), m.predict(x, verbose=0), rtol=0, atol=1e-6)


def test_csr_round_trip(keras, tmp_path):
    from prune.keras_io import keras_from_model_file, load_weights
    from prune.models import lenet5
    from sparseinfer.export import export_keras

    m = lenet5()
    _randomize(m, seed=4, sparsity=0.9)
    path = tmp_path / "sparse.npz"
    man = export_keras(m, path, storage="csr", name="sparse")
    for l in man["layers"]:
        if l["type"] in ("conv2d", "dense"):
            assert l["weight"] == {"format": "csr", "prefix": f"{l['name']}.W"}
    with np.load(path, allow_pickle=False) as z:
        w = m.get_layer("fc1").kernel.numpy().T
        assert z["fc1.W.data"].shape == (np.count_nonzero(w),)
        assert list(z["fc1.W.shape"]) == [500, 800]
        assert z["fc1.W.indptr"][-1] == np.count_nonzero(w)
    _, ws = load_weights(path)
    np.testing.assert_array_equal(ws["fc1"][0], w)
    r = keras_from_model_file(path)
    _assert_same_weights(m, r)
    x = np.random.default_rng(5).random((16, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(r.predict(x, verbose=0), m.predict(x, verbose=0), rtol=0, atol=1e-6)
    # "auto" picks CSR for 90 %-sparse weights as well
    man2 = export_keras(m, tmp_path / "auto.npz")
    assert all(l["weight"]["format"] == "csr" for l in man2["layers"] if "weight" in l)


def test_vgg19_topology(keras):
    from prune.models import vgg19
    from sparseinfer.export import default_input_spec

    m = vgg19(classes=10, input_shape=(32, 32, 3), fc_units=16, width=0.125)
    names = [l.name for l in m.layers]
    convs = [n for n in names if "_conv" in n]
    assert len(convs) == 16 and convs[0] == "block1_conv1" and convs[-1] == "block5_conv4"
    assert names[-4:] == ["flatten", "fc1", "fc2", "predictions"]
    assert [n for n in names if n.endswith("_pool")] == [f"block{i}_pool" for i in range(1, 6)]
    assert m.output.shape[-1] == 10
    spec = default_input_spec((224, 224, 3))
    assert spec["resize"] == {"mode": "shorter", "size": 256} and spec["crop"] == [224, 224]
    assert spec["color"] == "bgr" and spec["mean"] == [103.939, 116.779, 123.68]


def test_unsupported_layers(keras, tmp_path):
    from sparseinfer.export import export_keras
    L = keras.layers
    path = tmp_path / "bad.npz"

    m = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(2, 3, name="c"),
                          L.BatchNormalization(name="bn"), L.Flatten(), L.Dense(2)])
    with pytest.raises(ValueError, match=r"layer 'bn' \(BatchNormalization\).*unsupported"):
        export_keras(m, path)

    m = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(2, 3, activation="tanh", name="ct")])
    with pytest.raises(ValueError, match=r"layer 'ct' \(Conv2D\).*activation 'tanh'"):
        export_keras(m, path)

    m = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(2, 3, dilation_rate=2, name="dil")])
    with pytest.raises(ValueError, match=r"layer 'dil' \(Conv2D\).*dilation"):
        export_keras(m, path)

    m = keras.Sequential([keras.Input((8, 8, 1)), L.Dense(4, name="d4")])
    with pytest.raises(ValueError, match=r"layer 'd4' \(Dense\).*flat"):
        export_keras(m, path)

    m = keras.Sequential([keras.Input((8, 8, 1)), L.ReLU(max_value=6.0, name="relu6")])
    with pytest.raises(ValueError, match=r"layer 'relu6' \(ReLU\)"):
        export_keras(m, path)

    inp = keras.Input((8, 8, 1))
    a = L.Conv2D(2, 3, padding="same", name="a")(inp)
    b = L.Conv2D(2, 3, padding="same", name="b")(a)
    out = L.Add(name="skip")([a, b])
    with pytest.raises(ValueError, match=r"'skip' \(Add\)"):
        export_keras(keras.Model(inp, out), path)

    with pytest.raises(ValueError, match=r"not built"):
        export_keras(keras.Sequential([L.Dense(3)]), path)

    m = keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Dense(3)])
    with pytest.raises(ValueError, match=r"2 class names for 3 outputs"):
        export_keras(m, path, classes=["a", "b"])
    assert not path.exists()


def test_write_model_is_atomic(tmp_path, monkeypatch):
    """A failing write leaves no file (and no temporary file) and keeps an existing file."""
    layers = [{"name": "flat", "type": "flatten"},
              {"name": "fc", "type": "dense", "W": np.ones((2, 4), np.float32), "b": None}]
    spec = {"shape": [2, 2, 1]}
    path = tmp_path / "m.npz"

    def failing_savez(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        write_model(path, layers, spec)
    assert os.listdir(tmp_path) == []

    monkeypatch.undo()
    write_model(path, layers, spec, name="good")
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError):
        write_model(path, layers, spec, name="other")
    assert os.listdir(tmp_path) == ["m.npz"] and path.read_bytes() == before
    monkeypatch.undo()

    bad = [dict(layers[0]), {**layers[1], "W": np.full((2, 4), np.nan, np.float32)}]
    with pytest.raises(ModelFormatError, match="non-finite"):
        write_model(tmp_path / "nan.npz", bad, spec)
    assert os.listdir(tmp_path) == ["m.npz"]
    assert read_manifest(path)["name"] == "good"


def test_same_and_valid_output_sizes_agree_with_the_loader(tmp_path):
    """TensorFlow's "same" / "valid" output sizes are computed by the exporter (export.py
    _out_size, for the manifest) and by the C loader (si_loader.c, which also derives the
    padding offsets): a grid of sizes, kernels and strides holds the two equal, for conv2d
    and maxpool2d."""
    import sparseinfer
    from sparseinfer.export import _out_size
    from sparseinfer.format import write_model

    rng = np.random.default_rng(0)
    checked = 0
    for n in (1, 2, 3, 5, 8, 9):
        for k in (1, 2, 3, 5):
            for s in (1, 2, 3):
                for padding in ("same", "valid"):
                    if padding == "valid" and k > n:
                        continue
                    for kind in ("conv2d", "maxpool2d"):
                        if kind == "maxpool2d" and k > n:  # the loader refuses a window past its input
                            continue
                        if kind == "conv2d":
                            layer = {"name": "l", "type": "conv2d", "W": rng.standard_normal((2, k * k)).astype(np.float32),
                                     "b": None, "kernel": [k, k], "strides": [s, s], "padding": padding}
                        else:
                            layer = {"name": "l", "type": "maxpool2d", "pool": [k, k], "strides": [s, s],
                                     "padding": padding}
                        path = tmp_path / f"{kind}_{n}_{k}_{s}_{padding}.npz"
                        write_model(path, [layer], {"shape": [n, n + 1, 1]})
                        got = sparseinfer.load(path, plan="nomeasure").layers()[0]["output_shape"][:2]
                        want = [_out_size(n, k, s, padding), _out_size(n + 1, k, s, padding)]
                        assert got == want, f"{kind} {n}x{n + 1} k={k} s={s} {padding}: C {got}, exporter {want}"
                        checked += 1
    assert checked > 200
