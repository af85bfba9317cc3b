"""The runtime against TensorFlow on the same weights: LeNet-5 (trained and random, dense
and CSR) and VGG19 (generated weights), batch 1 and 8.

Tolerance: float32, |runtime - tf| <= 1e-4 * |tf| + 1e-7 per probability (the absolute
floor covers probabilities below 1e-7, which float32 sums cannot order more finely), plus
the argmax must agree.

VGG19's reference is TensorFlow in float64 on the same weights (tests.tf_util.keras_float64),
and its float32 result must agree in argmax: TensorFlow's own float32 output was measured
0.81 of the tolerance away from float64 on one probability (batch 8), the runtime's 0.22
(im2col + MKL) to 0.35 (Winograd), so against float32 TensorFlow the two errors added up to
1.2 of it with no error of the runtime's own out of bounds.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import sparseinfer  # noqa: E402
from prune.models import lenet5, vgg19  # noqa: E402
from tests.tf_util import assert_close, keras_float64, prune_keras_magnitude, randomize_keras  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL, ATOL = 1e-4, 1e-7


def _check(keras_model, path, x, what, require_spread=True, float64=False):
    m = sparseinfer.load(path)
    ref = keras_float64(keras_model, x) if float64 else keras_model(x, training=False).numpy()
    got = m.predict(x)
    if float64:
        np.testing.assert_array_equal(got.argmax(1), keras_model(x, training=False).numpy().argmax(1),
                                      err_msg=f"{what}: argmax differs from TensorFlow's float32")
    # A saturated softmax (one class ~1, the rest ~0) would hide errors: require spread.
    assert not require_spread or (ref > 1e-3).sum(1).min() >= 2, f"{what}: reference output is saturated, test would be weak"
    assert_close(got, ref, RTOL, ATOL, what)
    np.testing.assert_array_equal(got.argmax(1), ref.argmax(1), err_msg=f"{what}: argmax differs")


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("storage", ["dense", "csr"])
def test_lenet5_random_weights(tmp_path, batch, storage):
    model = lenet5()
    randomize_keras(model, seed=1, logit_scale=0.3)
    prune_keras_magnitude(model.get_layer("fc1"), keep=0.08)
    prune_keras_magnitude(model.get_layer("conv2"), keep=0.12)
    path = tmp_path / "lenet5.npz"
    manifest = sparseinfer.export_keras(model, path, storage=storage)
    formats = {l["name"]: l["weight"]["format"] for l in manifest["layers"] if "weight" in l}
    assert set(formats.values()) == {storage}, formats
    x = np.random.default_rng(batch).random((batch, 28, 28, 1), dtype=np.float32)
    _check(model, path, x, f"LeNet-5 random {storage} batch {batch}")


@pytest.mark.parametrize("batch", [1, 8])
def test_lenet5_shipped(batch):
    from prune.keras_io import keras_from_model_file
    from sparseinfer.datasets import load_mnist

    path = os.path.join(ROOT, "models", "lenet5.npz")
    model = keras_from_model_file(path)
    _, _, x_test, _ = load_mnist()
    x = (x_test[:batch].astype(np.float32) / 255.0)[..., None]
    # A trained model is confident: its probabilities are saturated by nature.
    _check(model, path, x, f"shipped LeNet-5 batch {batch}", require_spread=False)


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory):
    model = vgg19()
    randomize_keras(model, seed=19, logit_scale=0.05)
    path = tmp_path_factory.mktemp("vgg") / "vgg19.npz"
    sparseinfer.export_keras(model, path)
    return model, path


@pytest.mark.parametrize("batch", [1, 8])
def test_vgg19_generated(vgg19_file, batch):
    model, path = vgg19_file
    rng = np.random.default_rng(100 + batch)
    # Caffe-style inputs: BGR pixels minus the ImageNet means, as the runtime's CLI makes.
    x = (rng.random((batch, 224, 224, 3), dtype=np.float32) * 255.0
         - np.array([103.939, 116.779, 123.68], np.float32))
    _check(model, path, x, f"VGG19 generated batch {batch}", float64=True)


@pytest.mark.parametrize("batch", [1, 8])
def test_c_example_matches_tensorflow(vgg19_file, tmp_path, batch):
    """examples/classify.c (the C API alone, compiled against the installed library) on the
    generated VGG19 and on the shipped LeNet-5, against TensorFlow on the same weights."""
    import shutil
    import subprocess

    from prune.keras_io import keras_from_model_file
    from tests.test_c_api import EXAMPLE, _config, _parse

    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    exe = tmp_path / "classify"
    subprocess.run(["cc", "-std=c99", "-O1", EXAMPLE, *_config("--cflags", "--libs"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    rng = np.random.default_rng(200 + batch)
    vgg, vgg_path = vgg19_file
    cases = [("VGG19", vgg, str(vgg_path),
              rng.random((batch, 224, 224, 3), dtype=np.float32) * 255.0 - np.array([103.9, 116.8, 123.7], np.float32)),
             ("LeNet-5", keras_from_model_file(os.path.join(ROOT, "models", "lenet5.npz")),
              os.path.join(ROOT, "models", "lenet5.npz"), rng.random((batch, 28, 28, 1), dtype=np.float32))]
    for what, keras_model, path, x in cases:
        inp = tmp_path / "x.f32"
        inp.write_bytes(x.astype("<f4").tobytes())
        r = subprocess.run([str(exe), path, str(inp), str(batch)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        ref = keras_model(x, training=False).numpy()
        idx, got = _parse(r.stdout, batch, ref.shape[1])
        exact = keras_float64(keras_model, x) if what == "VGG19" else ref  # see the module's docstring
        assert_close(got, exact, RTOL, ATOL, f"C example, {what} batch {batch}")
        np.testing.assert_array_equal(idx, ref.argmax(1), err_msg=f"C example, {what} batch {batch}: argmax")
