"""The Python API's own contract: batches of any size, single samples, read-only inputs,
loading from bytes, threads, and the fast kernels against the reference kernels."""
from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

import sparseinfer
from sparseinfer import _core
from sparseinfer.format import write_model
from tests.tf_util import assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "kernels", "tests"))
import make_cases  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    out = {}
    for name, (layers, shape, storage) in make_cases.good_models().items():
        path = d / f"{name}.npz"
        write_model(path, layers, {"shape": shape}, storage=storage, name=name)
        if storage == "compact":  # lossy value modes (int8, k-means): the reference takes the stored weights
            from sparseinfer.compact import read_model_layers
            layers = read_model_layers(path)[1]
        out[name] = (str(path), layers, shape)
    return out


def _ref(layers, x):
    return make_cases.reference_forward(layers, x.astype(np.float64)).reshape(len(x), -1)


def test_any_batch_size(models):
    """0, 1, 63, 64, 65 and 130 samples (the bindings run chunks of 64 through one context)."""
    for name, (path, layers, shape) in models.items():
        m = sparseinfer.load(path)
        x = np.random.default_rng(5).uniform(-1, 1, (130, *shape)).astype(np.float32)
        want = _ref(layers, x)
        for n in (0, 1, 63, 64, 65, 130):
            got = m.predict(x[:n])
            assert got.shape == (n, m.output_size)
            assert_close(got, want[:n], 1e-4, 1e-5 * np.abs(want).max(), f"{name} batch {n}")


def test_single_sample_readonly_and_dtypes(models):
    path, layers, shape = models["good_lenet"]
    m = sparseinfer.load(path)
    x = np.random.default_rng(6).uniform(-1, 1, shape).astype(np.float32)
    want = m.predict(x[None])
    np.testing.assert_array_equal(m.predict(x), want)  # HWC alone is one sample
    ro = x.copy()
    ro.setflags(write=False)
    np.testing.assert_array_equal(m.predict(ro), want)
    np.testing.assert_array_equal(m.predict(x.astype(np.float64)), want)
    with pytest.raises(ValueError, match="NaN"):
        m.predict(np.full(shape, np.nan, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_non_finite_value_anywhere_is_refused(models, bad):
    """The finite check runs in blocks of 4,096 floats: one bad value in the first, a middle
    or the last element of a batch is found; the largest finite floats pass."""
    path, _, shape = models["good_lenet"]
    m = sparseinfer.load(path)
    x = np.zeros((20,) + tuple(shape), np.float32)  # > 8,192 floats
    flat = x.reshape(-1)
    for i in (0, 4095, 4096, flat.size // 2, flat.size - 1):
        y = x.copy()
        y.reshape(-1)[i] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            m.predict(y)
    x.reshape(-1)[::7] = np.finfo(np.float32).max
    x.reshape(-1)[1::7] = -np.finfo(np.float32).max
    assert m.predict(x).shape[0] == 20


def test_from_bytes_equals_file(models):
    path, _, shape = models["good_lenet"]
    # The same plan for both (no timing: the picks are then a pure function of the file), so
    # the outputs must be bit-identical.
    with open(path, "rb") as f:
        a = sparseinfer.Model.from_bytes(f.read(), plan="nomeasure", cache="")
    b = sparseinfer.load(path, plan="nomeasure", cache="")
    x = np.random.default_rng(7).uniform(-1, 1, (4, *shape)).astype(np.float32)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    strip = lambda ls: [{k: v for k, v in l.items() if k not in ("plan_batch", "plan_positions")} for l in ls]  # noqa: E731
    assert strip(a.layers()) == strip(b.layers())


def test_threads_setting_and_concurrent_predicts(models):
    path, _, shape = models["good_lenet"]
    x = np.random.default_rng(8).uniform(-1, 1, (32, *shape)).astype(np.float32)
    want = sparseinfer.load(path, threads=1).predict(x)
    m = sparseinfer.load(path, threads=2)
    results, errors = [], []

    def work():
        try:
            for _ in range(20):
                results.append(m.predict(x))
        except Exception as e:  # reported below
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    assert len(results) == 80
    for r in results:
        assert_close(r, want, 1e-5, 1e-7, "concurrent predict")
    with pytest.raises(ValueError):
        sparseinfer.load(path, threads=-1)


def test_fast_kernels_against_reference(models):
    """si_set_reference_kernels(1) runs plain loops; the fast path (im2col + MKL) must match."""
    for name, (path, _, shape) in models.items():
        m = sparseinfer.load(path)
        x = np.random.default_rng(9).uniform(-1, 1, (5, *shape)).astype(np.float32)
        fast = m.predict(x)
        _core.set_reference_kernels(True)
        try:
            ref = m.predict(x)
        finally:
            _core.set_reference_kernels(False)
        assert_close(fast, ref, 1e-4, 1e-5 * np.abs(ref).max(), f"{name}: fast vs reference kernels")


def test_profile_layers(models):
    """Per-layer times (si_context_set_profile): one row per timed run, one column per layer,
    every weighted layer timed, a pool fused into its convolution reading 0 and nothing
    else; the output of the profiled runs is the model's."""
    for name, (path, layers, shape) in models.items():
        m = sparseinfer.load(path)
        info = m.layers()
        for batch in (1, 3):
            x = np.random.default_rng(6).uniform(-1, 1, (batch, *shape)).astype(np.float32)
            t = m.profile_layers(x, repeats=4, warmup=1)
            assert t.shape == (4, len(info)), f"{name} batch {batch}: shape {t.shape}"
            assert np.isfinite(t).all() and (t >= 0).all(), f"{name} batch {batch}: {t}"
            for j, layer in enumerate(info):
                if layer["weight_shape"]:
                    assert (t[:, j] > 0).all(), f"{name} batch {batch}: weighted layer {layer['name']} not timed"
                if (t[:, j] == 0).any() and layer["type"] != "flatten":  # NHWC flatten: nothing to do
                    prev = info[j - 1] if j else None
                    assert layer["type"] == "maxpool2d" and prev and prev["type"] == "conv2d", (
                        f"{name} batch {batch}: layer {layer['name']} ({layer['type']}) read 0 s")
            # profiling off again: plain runs still give the model's output
            assert_close(m.predict(x), _ref(layers, x), 1e-4, 1e-5 * np.abs(_ref(layers, x)).max(), name)
    m = sparseinfer.load(models["good_lenet"][0])
    with pytest.raises(ValueError, match="1..64 samples"):
        m.profile_layers(np.zeros((65, *m.input_shape), np.float32))
    with pytest.raises(ValueError, match="repeats"):
        m.profile_layers(np.zeros((1, *m.input_shape), np.float32), repeats=0)


def test_version_one_place():
    """The version is written once, in kernels/sparseinfer.h: the library reports it, and the
    installed package's metadata (from setup.py) agrees (a stale editable install fails here:
    reinstall)."""
    import importlib.metadata
    import re

    with open(os.path.join(ROOT, "kernels", "sparseinfer.h")) as f:
        text = f.read()
    header = ".".join(re.search(rf"#define SI_VERSION_{k}\s+(\d+)", text).group(1) for k in ("MAJOR", "MINOR"))
    assert sparseinfer.__version__ == _core.version() == header
    assert importlib.metadata.version("sparseinfer") == header
