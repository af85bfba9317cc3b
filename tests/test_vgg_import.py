"""VGG19 weight import (prune/vgg_import.py, docs/vgg19.md).

One full-size VGG19 (keras.applications.VGG19, seeded He-scaled random weights) is written
in each supported format: tensorflow-vgg's pickled .npy dict, the legacy Keras HDF5 layout
of keras.applications' download, Keras 3 .weights.h5 and .keras. Each is converted (by
`python -m prune.vgg_import` or `sparseinfer-prune import`), the written weights are held bit for
bit against the originals layer by layer, and the runtime's output on a random input and
on two photographs is held against keras.applications.VGG19 on the same weights.

Tolerance: float32 through 19 layers, |runtime - keras| <= 1e-4 * |keras| + 1e-7 per
probability (the floor covers probabilities below 1e-7, which float32 sums cannot order
more finely), and the argmax must agree. Random weights would saturate the softmax (one
class ~1, the rest ~0, hiding errors in the logits), so the last layer's weights are
scaled down (logit_scale 0.01) and the reference is required to spread its probability
over several classes.

Bad inputs use small files: HDF5 datasets of VGG19's shapes are created without data
(h5py allocates nothing, reads give zeros), so every layer but the broken one is valid.
"""
from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
h5py = pytest.importorskip("h5py")

import sparseinfer  # noqa: E402
from prune.keras_io import load_weights  # noqa: E402
from prune.models import VGG19_BLOCKS, lenet5, vgg19  # noqa: E402
from prune.vgg_import import (VGG19_LAYERS, VGGImportError, convert, detect_format,  # noqa: E402
                              keras_vgg19_from_weights, load_vgg19_weights)
from sparseinfer.labels import imagenet_class_names  # noqa: E402
from sparseinfer.export import default_input_spec  # noqa: E402
from sparseinfer.format import conv_kernel_to_matrix, read_manifest  # noqa: E402
from sparseinfer.preprocess import load_image  # noqa: E402
from tests.tf_util import assert_close  # noqa: E402

RTOL, ATOL = 1e-4, 1e-7
FORMATS = ("npy", "keras-legacy-h5", "keras-h5", "keras")
KERAS_NAMES = [k for k, _, _ in VGG19_LAYERS]
NPY_NAMES = {k: n for k, n, _ in VGG19_LAYERS}


def _skimage_images() -> list[str]:
    skimage = pytest.importorskip("skimage")
    paths = [os.path.join(skimage.data_dir, f) for f in ("chelsea.png", "coffee.png")]
    for p in paths:
        if not os.path.exists(p):
            pytest.skip(f"{p} is not installed")
    return paths


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)


# --- writers of each format, as the tools that make them do ---------------------------

def write_npy(path, weights):
    """tensorflow-vgg's vgg19.npy: np.save of {name: [W, b]} (a pickled 0-d object array)."""
    np.save(path, {NPY_NAMES[k]: [w, b] for k, (w, b) in weights.items()})


def write_legacy_h5(path, weights, layer_names, shapes_only=False, overrides=None):
    """The layout of keras.applications' vgg19_weights_tf_dim_ordering_tf_kernels.h5 (written
    by Keras 1): root attribute layer_names (every layer, weighted or not), one group per
    layer with attribute weight_names and datasets '<layer>_W_1:0', '<layer>_b_1:0'.
    ``shapes_only``: datasets are created with shape and dtype but no data (tiny files);
    ``overrides``: {layer: [array or (shape, dtype), ...]} replaces or adds layers (arrays
    are written with their data)."""
    layers = {k: list(v) for k, v in weights.items()}
    layers.update(overrides or {})
    overridden = set(overrides or {})
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
        for name in layer_names:
            g = f.create_group(name)
            arrays = layers.get(name, [])
            if not arrays:
                g.attrs["weight_names"] = np.asarray([])  # what Keras writes for no weights
                continue
            wnames = [f"{name}_{s}_1:0" for s in ("W", "b", "x", "y")[:len(arrays)]]
            g.attrs["weight_names"] = np.array([n.encode() for n in wnames])
            for wn, a in zip(wnames, arrays):
                if isinstance(a, tuple):
                    g.create_dataset(wn, shape=a[0], dtype=a[1])
                elif shapes_only and name not in overridden:
                    g.create_dataset(wn, shape=a.shape, dtype=a.dtype)
                else:
                    g.create_dataset(wn, data=a)


def vgg_layer_names():
    """Every layer of keras.applications.VGG19, weighted or not, as layer_names lists them."""
    names = ["input_1"]
    for b, (_, n) in enumerate(VGG19_BLOCKS, start=1):
        names += [f"block{b}_conv{i}" for i in range(1, n + 1)] + [f"block{b}_pool"]
    return names + ["flatten", "fc1", "fc2", "predictions"]


def shaped_weights():
    """VGG19's shapes with placeholder arrays (only shape and dtype are used)."""
    return {k: [np.empty(s, np.float32), np.empty(s[-1:], np.float32)] for k, _, s in VGG19_LAYERS}


# --- full-size fixtures ---------------------------------------------------------------

def he_weights(seed: int, logit_scale: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """VGG19's weights, He-scaled, small random biases (prune.sample_data.vgg19_he_weights)."""
    from prune.sample_data import vgg19_he_weights
    return vgg19_he_weights(seed, logit_scale, bias_std=0.01)


SEED, LOGIT_SCALE = 19, 0.01
SOURCES = (("npy", "vgg19.npy"), ("keras-legacy-h5", "vgg19_weights_tf_dim_ordering_tf_kernels.h5"),
           ("keras-h5", "vgg19.weights.h5"), ("keras", "vgg19.keras"))

_REFERENCE = """
import sys
import numpy as np
import keras
from tests.test_vgg_import import (LOGIT_SCALE, SEED, he_weights, reference_inputs, vgg_layer_names,
                                   write_legacy_h5, write_npy)
d, images = sys.argv[1], sys.argv[2:]
weights = he_weights(SEED, LOGIT_SCALE)
model = keras.applications.VGG19(weights=None)
for name, ws in weights.items():
    model.get_layer(name).set_weights(list(ws))
x = reference_inputs(images)
probs = model(x, training=False).numpy()
np.savez(f"{d}/reference.npz", x=x, probs=probs, layer_names=[l.name for l in model.layers],
         weighted=[l.name for l in model.layers if l.weights])
write_npy(f"{d}/vgg19.npy", weights)
write_legacy_h5(f"{d}/vgg19_weights_tf_dim_ordering_tf_kernels.h5", weights, vgg_layer_names())
model.save_weights(f"{d}/vgg19.weights.h5")
model.save(f"{d}/vgg19.keras")
"""


def reference_inputs(images):
    """A random caffe-style input (BGR pixels minus the means) and the photographs as
    `sparseinfer run` preprocesses them."""
    spec = default_input_spec((224, 224, 3))
    noise = (np.random.default_rng(5).random((224, 224, 3), dtype=np.float32) * 255.0
             - np.float32(spec["mean"]))
    return np.stack([noise] + [load_image(p, spec) for p in images])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """keras.applications.VGG19 with seeded random weights, its inputs and outputs, and the
    same weights written in every format. Made in a child process: a Keras VGG19 keeps
    about 2 GB after it is dropped, which this process need not hold."""
    images = _skimage_images()
    d = tmp_path_factory.mktemp("vgg19_import")
    p = _run("-c", _REFERENCE, str(d), *images)
    assert p.returncode == 0, p.stderr
    with np.load(d / "reference.npz") as z:
        x, probs = z["x"], z["probs"]
        layer_names, weighted = list(z["layer_names"]), list(z["weighted"])
    assert weighted == KERAS_NAMES
    # A saturated softmax (one class ~1, the rest ~0) would hide errors: require spread.
    assert (probs > 1e-3).sum(1).min() >= 5, "reference output is saturated, the test would be weak"
    yield {"weights": he_weights(SEED, LOGIT_SCALE), "x": x, "probs": probs, "images": images,
           "sources": {fmt: str(d / name) for fmt, name in SOURCES}, "layer_names": layer_names}
    shutil.rmtree(d, ignore_errors=True)  # 2.3 GB: do not leave it to pytest's retention


def _check_file_weights(path, weights, what):
    """The model file's matrices equal the original kernels bit for bit, layer by layer."""
    _, got = load_weights(path)
    assert list(got) == KERAS_NAMES, f"{what}: layers {list(got)}"
    for name, (k, b) in weights.items():
        expect = conv_kernel_to_matrix(k) if k.ndim == 4 else k.T
        np.testing.assert_array_equal(got[name][0], expect, err_msg=f"{what}: layer {name} weights")
        np.testing.assert_array_equal(got[name][1], b, err_msg=f"{what}: layer {name} bias")


def _max_rel(got, ref):
    return float(np.max(np.abs(got.astype(np.float64) - ref) / np.abs(ref.astype(np.float64))))


_CONVERT_BOTH_H5 = """
import sys, time
from prune.vgg_import import convert
for src, out in zip(sys.argv[1::2], sys.argv[2::2]):
    t0 = time.perf_counter()
    convert(src, out, progress=lambda line: print("convert: " + line, flush=True))
    print(f"seconds {time.perf_counter() - t0:.1f}", flush=True)
"""


@pytest.fixture(scope="module")
def converted(reference, tmp_path_factory):
    """Each format converted in a child process: tensorflow-vgg's .npy by
    `python -m prune.vgg_import --allow-pickle`, .keras by `sparseinfer-prune import`, the two HDF5
    layouts by prune.vgg_import.convert in one process. Converting takes about 2.5 GB for a
    moment, which this process, holding the reference, need not add to."""
    d = tmp_path_factory.mktemp("vgg19_converted")
    src = reference["sources"]
    out = {fmt: str(d / f"{fmt}" / "vgg19.npz") for fmt in FORMATS}
    for path in out.values():
        os.makedirs(os.path.dirname(path))
    logs = {}
    p = _run("-m", "prune.vgg_import", src["npy"], "--out", out["npy"], "--allow-pickle")
    logs["npy"] = ("python -m prune.vgg_import: ", p)
    p = _run("-m", "prune.commands", "import", src["keras"], "--out", out["keras"])
    logs["keras"] = ("sparseinfer-prune import: ", p)
    p = _run("-c", _CONVERT_BOTH_H5, src["keras-legacy-h5"], out["keras-legacy-h5"],
             src["keras-h5"], out["keras-h5"])
    for fmt in ("keras-legacy-h5", "keras-h5"):
        logs[fmt] = ("convert: ", p)
    yield out, logs
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.full_size  # a full-size VGG19 in four formats: 4.4 GB, 2.5 minutes
@pytest.mark.parametrize("fmt", FORMATS)
def test_import_matches_keras(reference, converted, fmt):
    src = reference["sources"][fmt]
    assert detect_format(src) == fmt
    out, logs = converted
    out, (prefix, p) = out[fmt], logs[fmt]
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stdout.splitlines() if src in l or out in l or "checked 19" in l]
    assert f"{prefix}reading {src}: " in p.stdout, p.stdout
    assert f"{prefix}checked 19 layers: shapes of VGG19, finite, 143,667,240 parameters" in p.stdout, p.stdout
    assert f"{prefix}done: {out}, 575 MB" in p.stdout, p.stdout
    assert os.listdir(os.path.dirname(out)) == ["vgg19.npz"], "temporary files left behind"
    print("\n" + "\n".join(lines))

    assert read_manifest(out)["input"] == {**default_input_spec((224, 224, 3)), "std": [1.0]}
    _check_file_weights(out, reference["weights"], fmt)
    m = sparseinfer.load(out)
    assert m.input_spec["color"] == "bgr" and m.input_spec["crop"] == [224, 224]
    # The random input for every format; the photographs too for the one `sparseinfer run` reads.
    n = len(reference["x"]) if fmt == "keras" else 1
    got = m.predict(reference["x"][:n])
    del m  # 575 MB of weights
    ref = reference["probs"][:n]
    print(f"{fmt}: runtime vs Keras max relative difference {_max_rel(got, ref):.2e} ({n} inputs)")
    assert_close(got, ref, RTOL, ATOL, f"{fmt}: runtime vs keras.applications.VGG19 (sample, class)")
    np.testing.assert_array_equal(got.argmax(1), ref.argmax(1), err_msg=f"{fmt}: argmax differs")

    if fmt == "keras":  # end to end: sparseinfer-prune import, then sparseinfer run on two photographs
        names = imagenet_class_names()
        for i, image in enumerate(reference["images"], start=1):
            p = _run("-m", "sparseinfer.cli", "run", out, image)
            assert p.returncode == 0, p.stderr
            rows = [l.split(None, 2) for l in p.stdout.splitlines()[:5]]
            assert len(rows) == 5 and p.stdout.splitlines()[5].startswith("run "), p.stdout
            for prob, index, name in rows:
                assert name == names[int(index)], p.stdout
                # printed with 4 decimals
                assert abs(float(prob) - ref[i, int(index)]) <= 5e-5 + RTOL * ref[i, int(index)], \
                    f"{image}: class {index}: printed {prob}, Keras {ref[i, int(index)]}"
            top5 = [int(r[1]) for r in rows]
            assert top5[0] == int(ref[i].argmax()), f"{image}: top class {top5[0]}, Keras {ref[i].argmax()}"


@pytest.mark.full_size
def test_keras_model_from_weights(reference, tmp_path):
    """The Keras model for the pruner: keras.applications' layer names, the same weights bit
    for bit, the same output. Written back with Keras 3's own legacy HDF5 writer (dataset
    paths '<layer>/<layer>/kernel') inside a full-model file's model_weights group, it
    reads the same again."""
    from keras.src.legacy.saving import legacy_h5_format

    model = keras_vgg19_from_weights(reference["sources"]["keras-legacy-h5"])
    assert [l.name for l in model.layers][1:] == reference["layer_names"][1:]
    for name, (k, b) in reference["weights"].items():
        got = model.get_layer(name).get_weights()
        np.testing.assert_array_equal(got[0], k, err_msg=f"layer {name} kernel")
        np.testing.assert_array_equal(got[1], b, err_msg=f"layer {name} bias")
    # Same weights; TensorFlow's kernels may sum in another order for another batch size.
    out = model(reference["x"][:1], training=False).numpy()
    assert_close(out, reference["probs"][:1], RTOL, ATOL, "Keras model from weights vs keras.applications")

    path = str(tmp_path / "vgg19_full.h5")
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = "{}"
        legacy_h5_format.save_weights_to_hdf5_group(f.create_group("model_weights"), model)
    del model
    gc.collect()
    assert detect_format(path) == "keras-legacy-h5"
    got = load_vgg19_weights(path)
    for name, (k, b) in reference["weights"].items():
        np.testing.assert_array_equal(got[name][0], k, err_msg=f"layer {name} kernel")
        np.testing.assert_array_equal(got[name][1], b, err_msg=f"layer {name} bias")


# --- bad inputs: a clear error naming the file, nothing written -----------------------

def _refused(src, tmp_path, *needles, allow_pickle=False):
    """convert() must raise VGGImportError naming ``src`` and each needle, and leave the
    output directory empty."""
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    with pytest.raises(VGGImportError) as e:
        convert(src, out_dir / "model.npz", allow_pickle=allow_pickle)
    msg = str(e.value)
    assert msg.startswith(str(src)), msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in: {msg}"
    assert os.listdir(out_dir) == [], f"left behind: {os.listdir(out_dir)}"
    return msg


def test_legacy_h5_shapes_only_is_accepted(tmp_path):
    """The shape-only files the bad-input tests break are valid when not broken."""
    path = tmp_path / "ok.h5"
    write_legacy_h5(path, shaped_weights(), vgg_layer_names(), shapes_only=True)
    assert os.path.getsize(path) < 200_000
    w = load_vgg19_weights(path)
    assert list(w) == KERAS_NAMES and not w["fc1"][0].any()


def test_missing_layer(tmp_path):
    weights = shaped_weights()
    del weights["block3_conv4"]
    path = tmp_path / "missing.h5"
    write_legacy_h5(path, weights, vgg_layer_names(), shapes_only=True)
    msg = _refused(path, tmp_path, "missing layer block3_conv4")
    assert "shape" not in msg, msg  # nothing else is wrong


def test_misshapen_layer(tmp_path):
    path = tmp_path / "transposed_fc1.h5"
    write_legacy_h5(path, shaped_weights(), vgg_layer_names(), shapes_only=True,
                    overrides={"fc1": [((4096, 25088), "f4"), ((4096,), "f4")]})
    _refused(path, tmp_path, "layer fc1: kernel shape (4096, 25088), expected (25088, 4096)")


def test_extra_layer_count_dtype_and_nan(tmp_path):
    names = vgg_layer_names()
    path = tmp_path / "extra.h5"
    write_legacy_h5(path, shaped_weights(), names + ["fc9"], shapes_only=True,
                    overrides={"fc9": [((1000, 10), "f4"), ((10,), "f4")]})
    _refused(path, tmp_path, "unknown layer fc9")

    path = tmp_path / "three_arrays.h5"
    write_legacy_h5(path, shaped_weights(), names, shapes_only=True,
                    overrides={"fc2": [((4096, 4096), "f4"), ((4096,), "f4"), ((4096,), "f4")]})
    _refused(path, tmp_path, "layer fc2: 3 arrays, expected 2")

    path = tmp_path / "int.h5"
    write_legacy_h5(path, shaped_weights(), names, shapes_only=True,
                    overrides={"block2_conv1": [((3, 3, 64, 128), "i4"), ((128,), "f4")]})
    _refused(path, tmp_path, "layer block2_conv1: kernel dtype int32, expected floating point")

    bias = np.zeros(512, np.float32)
    bias[7] = np.nan
    path = tmp_path / "nan.h5"
    write_legacy_h5(path, shaped_weights(), names, shapes_only=True,
                    overrides={"block5_conv2": [((3, 3, 512, 512), "f4"), bias]})
    _refused(path, tmp_path, "layer block5_conv2: bias has 1 non-finite values", "(7,)")

    big = np.zeros(1000, np.float64)
    big[3] = 1e300  # finite in float64, inf in float32
    path = tmp_path / "f64.h5"
    write_legacy_h5(path, shaped_weights(), names, shapes_only=True,
                    overrides={"predictions": [((4096, 1000), "f8"), big]})
    _refused(path, tmp_path, "layer predictions: bias has 1 non-finite values in float32")


def test_existing_output_untouched_on_error(tmp_path):
    weights = shaped_weights()
    del weights["fc2"]
    path = tmp_path / "missing.h5"
    write_legacy_h5(path, weights, vgg_layer_names(), shapes_only=True)
    out = tmp_path / "model.npz"
    out.write_bytes(b"previous model")
    with pytest.raises(VGGImportError, match="missing layer fc2"):
        convert(path, out)
    assert out.read_bytes() == b"previous model"
    assert sorted(os.listdir(tmp_path)) == ["missing.h5", "model.npz"]


class _RunsCode:
    """Unpickling this calls os.mkdir(marker): a stand-in for any code a pickle can run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_needs_the_flag(tmp_path):
    small = {"conv1_1": [np.zeros((3, 3, 3, 64), np.float32), np.zeros(64, np.float32)]}
    path = tmp_path / "vgg19.npy"
    np.save(path, small)
    _refused(path, tmp_path, "pickle", "--allow-pickle")
    # with the flag it is read, and then refused as not VGG19
    _refused(path, tmp_path, "missing layers conv1_2", allow_pickle=True)

    # the command lines say the same, without a traceback
    for cmd in (["-m", "prune.vgg_import"], ["-m", "prune.commands", "import"]):
        p = _run(*cmd, str(path), "--out", str(tmp_path / "out" / "model.npz"))
        assert p.returncode == 1 and "--allow-pickle" in p.stderr and str(path) in p.stderr, p.stderr
        assert "Traceback" not in p.stderr, p.stderr
    assert os.listdir(tmp_path / "out") == []


def test_pickle_that_runs_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npy"
    np.save(path, np.array(_RunsCode(str(marker)), dtype=object), allow_pickle=True)
    with open(path, "rb") as f:
        assert b"mkdir" in f.read()
    _refused(path, tmp_path, "pickle", "--allow-pickle")
    assert not marker.exists()
    # even with the flag only NumPy's array builders are resolved
    _refused(path, tmp_path, "mkdir", "only NumPy arrays", allow_pickle=True)
    assert not marker.exists()


def test_npy_that_is_not_a_dict(tmp_path):
    path = tmp_path / "str.npy"
    np.save(path, np.array("not a dict", dtype=object), allow_pickle=True)
    _refused(path, tmp_path, "the pickle holds a str, expected a dict", allow_pickle=True)

    path = tmp_path / "list.npy"
    np.save(path, {"conv1_1": "weights"}, allow_pickle=True)
    _refused(path, tmp_path, "layer conv1_1: holds a str, expected [weights, bias]", allow_pickle=True)

    path = tmp_path / "plain.npy"
    np.save(path, np.zeros((3, 3), np.float32))
    _refused(path, tmp_path, "holds a float32 array of shape (3, 3), not a dict of layers")


@pytest.fixture(scope="module")
def small_keras_files(tmp_path_factory):
    """A VGG19-shaped model too small to be VGG19, and LeNet-5, in the Keras 3 formats."""
    d = tmp_path_factory.mktemp("small_keras")
    small = vgg19(classes=10, input_shape=(32, 32, 3), fc_units=16, width=1 / 16)
    small.save_weights(d / "small.weights.h5")
    small.save(d / "small.keras")
    lenet5().save_weights(d / "lenet5.weights.h5")
    return d


def test_not_vgg19_keras_files(small_keras_files, tmp_path):
    d = small_keras_files
    _refused(d / "lenet5.weights.h5", tmp_path, "missing layers block1_conv1", "unknown layers conv1, conv2",
             "layer fc1: kernel shape (800, 500), expected (25088, 4096)")
    _refused(d / "small.weights.h5", tmp_path, "layer block1_conv1: kernel shape (3, 3, 3, 4), "
             "expected (3, 3, 3, 64)")
    msg = _refused(d / "small.keras", tmp_path, "(model.weights.h5): not VGG19 weights",
                   "layer block2_conv1: kernel shape (3, 3, 4, 8), expected (3, 3, 64, 128)")
    assert "and " in msg and "more" in msg  # long lists are cut short

    # Keras 3 files without the layers' name attributes: mapped by Keras' per-class keys
    path = tmp_path / "unnamed.weights.h5"
    shutil.copy(d / "small.weights.h5", path)
    with h5py.File(path, "r+") as f:
        for g in f["layers"].values():
            if "vars" in g and "name" in g["vars"].attrs:
                del g["vars"].attrs["name"]
    _refused(path, tmp_path, "layer block1_conv2: kernel shape (3, 3, 4, 4), expected (3, 3, 64, 64)",
             "layer block3_conv2: kernel shape (3, 3, 16, 16), expected (3, 3, 256, 256)")

    path = tmp_path / "other.zip"
    import zipfile
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", "{}")
    _refused(path, tmp_path, "without model.weights.h5")

    path = tmp_path / "random.bin"
    path.write_bytes(b"\x00" * 100)
    _refused(path, tmp_path, "not a VGG19 weight file")
    path = tmp_path / "text.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    _refused(path, tmp_path, "no 'layer_names' attribute", "no 'layers' group")


def _truncated(src, dst, fraction=0.5):
    data = open(src, "rb").read()
    with open(dst, "wb") as f:
        f.write(data[:int(len(data) * fraction)])
    return dst


def test_truncated_files(small_keras_files, tmp_path):
    d = small_keras_files
    _refused(_truncated(d / "small.weights.h5", tmp_path / "cut.weights.h5"), tmp_path,
             "cannot open as HDF5 (truncated or corrupt?)")
    _refused(_truncated(d / "small.keras", tmp_path / "cut.keras"), tmp_path,
             "not a readable .keras (zip) archive")

    path = tmp_path / "legacy.h5"
    write_legacy_h5(path, {"fc1": [np.ones((8, 4), np.float32), np.ones(4, np.float32)]}, ["fc1"])
    _refused(_truncated(path, tmp_path / "cut.h5"), tmp_path, "cannot open as HDF5")

    path = tmp_path / "vgg19.npy"
    np.save(path, {"conv1_1": [np.zeros((3, 3, 3, 64), np.float32), np.zeros(64, np.float32)]})
    _refused(_truncated(path, tmp_path / "cut.npy"), tmp_path, "truncated or corrupt", allow_pickle=True)
    _refused(_truncated(path, tmp_path / "head.npy", 0.005), tmp_path, "not a readable .npy file")

    # a flipped byte inside the stored weights member: the zip's CRC catches it
    data = bytearray(open(d / "small.keras", "rb").read())
    at = data.find(b"\x89HDF") + 5000
    data[at] ^= 0xFF
    path = tmp_path / "flipped.keras"
    path.write_bytes(bytes(data))
    _refused(path, tmp_path, "(model.weights.h5): cannot extract")
