"""The `sparseinfer` command line: run, info, eval, config, each checked against an
independent computation (TensorFlow on the same weights, NumPy on the file)."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import sparseinfer
from sparseinfer.cli import imagenet_class_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET = os.path.join(ROOT, "models", "lenet5.npz")
DIGITS = sorted(glob.glob(os.path.join(ROOT, "tests", "data", "digits", "*.png")))


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "sparseinfer.cli", *args], capture_output=True, text=True,
                       timeout=300)
    if check:
        assert p.returncode == 0, f"sparseinfer {' '.join(args)} failed ({p.returncode}):\n{p.stderr}"
    return p


def test_run_digits_match_tensorflow():
    tf = pytest.importorskip("tensorflow")
    import cv2

    from prune.keras_io import keras_from_model_file

    assert len(DIGITS) == 10
    keras_model = keras_from_model_file(LENET)
    for path in DIGITS:
        out = json.loads(cli("run", LENET, path, "--json", "--top", "10").stdout)
        x = cv2.imread(path, cv2.IMREAD_GRAYSCALE).astype(np.float32)[None, :, :, None] / 255.0
        ref = keras_model(tf.constant(x), training=False).numpy()[0]
        top = out["top"]
        assert [t["index"] for t in top][0] == int(ref.argmax()), f"{path}: top-1 differs from TensorFlow"
        got = np.array([t["probability"] for t in sorted(top, key=lambda t: t["index"])])
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7, err_msg=path)
        assert [t["name"] for t in top][0] == str(int(ref.argmax()))
    # The digits are labelled in their names; the model gets 9 of 10 (idx18, a 3, it reads as 8,
    # and so does TensorFlow: it is one of the model's 77 test errors).
    labels = [int(os.path.basename(p).split("_")[1]) for p in DIGITS]
    preds = [json.loads(cli("run", LENET, p, "--json", "--top", "1").stdout)["top"][0]["index"] for p in DIGITS]
    assert sum(a == b for a, b in zip(labels, preds)) >= 9


def test_run_text_output():
    out = cli("run", LENET, DIGITS[0], "--top", "3").stdout.strip().splitlines()
    assert len(out) == 4 and out[-1].startswith("run ") and " ms" in out[-1], out


def test_run_vgg_style_model_prints_imagenet_names(tmp_path):
    """A 224x224x3, 1000-class VGG19 (narrow, generated weights) on scikit-image's photos:
    five ImageNet names, probabilities equal to TensorFlow's on an independently
    preprocessed image (shorter side 256, centre crop 224, BGR minus the caffe means)."""
    tf = pytest.importorskip("tensorflow")
    import cv2
    import skimage

    from prune.models import vgg19
    from tests.tf_util import randomize_keras

    model = vgg19(width=0.125, fc_units=256)
    randomize_keras(model, seed=3, logit_scale=0.01)
    path = tmp_path / "vgg_small.npz"
    sparseinfer.export_keras(model, path)
    names = imagenet_class_names()
    for photo in ("chelsea.png", "coffee.png"):
        img_path = os.path.join(os.path.dirname(skimage.__file__), "data", photo)
        out = json.loads(cli("run", str(path), img_path, "--json").stdout)
        assert len(out["top"]) == 5
        assert all(t["name"] == names[t["index"]] for t in out["top"])
        bgr = cv2.imread(img_path, cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2]
        s = 256 / min(h, w)
        bgr = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        t, l = (bgr.shape[0] - 224) // 2, (bgr.shape[1] - 224) // 2
        x = bgr[t:t + 224, l:l + 224].astype(np.float32) - np.array([103.939, 116.779, 123.68], np.float32)
        ref = model(tf.constant(x[None]), training=False).numpy()[0]
        assert [t["index"] for t in out["top"]] == list(np.argsort(-ref, kind="stable")[:5]), photo
        np.testing.assert_allclose([t["probability"] for t in out["top"]], np.sort(ref)[::-1][:5], rtol=1e-4, atol=1e-7,
                                   err_msg=photo)


def _file_counts(path):
    """Per-layer (dense weight count, non-zeros) straight from the file with NumPy."""
    with np.load(path, allow_pickle=False) as z:
        manifest = json.loads(z["model.json"].tobytes())
        counts = {}
        for l in manifest["layers"]:
            if "weight" not in l:
                continue
            w = l["weight"]
            if w["format"] == "dense":
                a = z[w["array"]]
                counts[l["name"]] = (a.size, int(np.count_nonzero(a)))
            else:
                shape = z[w["prefix"] + ".shape"]
                counts[l["name"]] = (int(shape[0] * shape[1]), int(z[w["prefix"] + ".data"].size))
    return counts


def test_info_json_matches_file(tmp_path):
    from sparseinfer.format import read_manifest, write_model

    # A copy of the shipped model with fc1 pruned to 8% and stored as CSR.
    with np.load(LENET, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    manifest = read_manifest(LENET)
    layers = []
    for l in manifest["layers"]:
        l = dict(l)
        if "weight" in l:
            l["W"] = arrays[l.pop("weight")["array"]]
            l["b"] = arrays[l.pop("bias")]
            if l["name"] == "fc1":
                thr = np.quantile(np.abs(l["W"]), 0.92)
                l["W"] = np.where(np.abs(l["W"]) >= thr, l["W"], 0)
        layers.append(l)
    pruned = tmp_path / "lenet5_fc1_csr.npz"
    write_model(pruned, layers, manifest["input"], manifest.get("classes"), name="lenet5")
    for path in (LENET, str(pruned)):
        info = json.loads(cli("info", path, "--json").stdout)
        counts = _file_counts(path)
        for l in info["layers"]:
            if l["name"] in counts:
                dense, nnz = counts[l["name"]]
                assert l["weight_shape"][0] * l["weight_shape"][1] == dense, l["name"]
                assert l["nnz"] == nnz, f"{path} layer {l['name']}: info nnz {l['nnz']} != file {nnz}"
        assert info["file_bytes"] == os.path.getsize(path)
    info = json.loads(cli("info", str(pruned), "--json").stdout)
    fc1 = next(l for l in info["layers"] if l["name"] == "fc1")
    assert fc1["storage"] == "csr" and fc1["nnz"] == 32000
    assert info["total"]["bytes"] < json.loads(cli("info", LENET, "--json").stdout)["total"]["bytes"]
    text = cli("info", str(pruned)).stdout
    assert "fc1" in text and "csr" in text and "total" in text


def test_eval_matches_tensorflow():
    """The shipped LeNet-5 on all 10,000 MNIST test images: the runtime's accuracy equals
    TensorFlow's on the same weights, and is at least 99.1%."""
    tf = pytest.importorskip("tensorflow")
    from prune.keras_io import keras_from_model_file
    from sparseinfer.datasets import load_mnist

    r = json.loads(cli("eval", LENET, "--mnist", "--json").stdout)
    assert r["images"] == 10000
    _, _, x_test, y_test = load_mnist()
    keras_model = keras_from_model_file(LENET)
    x = x_test.astype(np.float32)[..., None] / 255.0
    tf_pred = np.concatenate([keras_model(tf.constant(x[i:i + 1000]), training=False).numpy().argmax(1)
                              for i in range(0, 10000, 1000)])
    tf_correct = int((tf_pred == y_test).sum())
    assert r["correct"] == tf_correct, f"runtime {r['correct']} correct, TensorFlow {tf_correct}"
    assert r["accuracy"] >= 0.991


def test_config_flags():
    flags = cli("config", "--cflags", "--libs").stdout.split()
    inc = next(f[2:] for f in flags if f.startswith("-I"))
    lib = next(f[2:] for f in flags if f.startswith("-L"))
    assert os.path.isfile(os.path.join(inc, "sparseinfer.h"))
    assert os.path.isfile(os.path.join(lib, "libsparseinfer.so"))
    assert "-lsparseinfer" in flags


def test_prune_eval_folder(tmp_path, capsys):
    """``sparseinfer-prune eval MODEL DIR`` gives top-1/top-5 by TensorFlow and by the
    runtime on an ImageNet-style folder; both agree with a NumPy count on the runtime's
    own probabilities."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("skimage")
    from prune.models import vgg19
    from prune.commands import main
    from prune.sample_data import make_photo_folder
    from sparseinfer.export import default_input_spec, export_keras
    from sparseinfer.preprocess import load_image
    make_photo_folder(tmp_path / "photos", per_class=2, seed=3)
    import keras
    keras.utils.set_random_seed(4)
    path = tmp_path / "small.npz"
    model = vgg19(width=1 / 16, fc_units=32)
    from prune.imagefolder import imagenet_synsets
    index = {s: i for i, s in enumerate(imagenet_synsets())}
    k, b = model.get_layer("predictions").get_weights()
    b[[index[s] for s in sorted(os.listdir(tmp_path / "photos"))]] += 6.0  # the folder's classes in the top 5
    model.get_layer("predictions").set_weights([k, b])
    export_keras(model, path, input_spec=default_input_spec((224, 224, 3)))
    capsys.readouterr()
    assert main(["eval", str(path), str(tmp_path / "photos"), "--json", "--quiet"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["images"] == 8 and r["tf"] == r["runtime"], r
    assert 0 < r["runtime"]["top1_correct"] < r["runtime"]["top5_correct"], r  # neither count trivial
    # independent count: the runtime's probabilities on load_image inputs, ImageNet indices of the synsets
    files = sorted(glob.glob(str(tmp_path / "photos" / "*" / "*.png")))
    x = np.stack([load_image(f, default_input_spec((224, 224, 3))) for f in files])
    y = np.array([index[os.path.basename(os.path.dirname(f))] for f in files])
    p = sparseinfer.load(str(path)).predict(x)
    top5 = np.argsort(-p, axis=1, kind="stable")[:, :5]
    assert r["runtime"]["top1_correct"] == int((p.argmax(1) == y).sum())
    assert r["runtime"]["top5_correct"] == int((top5 == y[:, None]).any(1).sum())
    assert main(["eval", str(path)]) == 2


@pytest.mark.parametrize("argv, forwarded", [
    # issue 13 item 8: options before the model took their values for the model ("2")
    (["eval", "--threads", "2", "model.npz", "--folder", "d"], ["model.npz", "d", "--threads", "2"]),
    (["eval", "--folder", "d", "--threads", "2", "model.npz"], ["model.npz", "d", "--threads", "2"]),
    (["eval", "--batch", "4", "model.npz", "--folder=d", "--json", "--quiet"],
     ["model.npz", "d", "--batch", "4", "--json", "--quiet"]),
    (["eval", "model.npz", "--split", "test", "--sizes", "3", "1", "rest", "--seed", "5", "--folder", "d"],
     ["model.npz", "d", "--split", "test", "--seed", "5", "--sizes", "3", "1", "rest"]),
])
def test_eval_folder_arguments_parsed(capsys, argv, forwarded):
    """``sparseinfer eval ... --folder DIR`` is parsed by the argument parser, whatever the
    order, and answered with the pruner's command for it, MODEL DIR [options] (sparseinfer
    never imports prune/); usage status 2."""
    import shlex

    from sparseinfer.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert shlex.join(["sparseinfer-prune", "eval", *forwarded]) in err, f"{argv}: {err}"


@pytest.mark.parametrize("argv", [["eval", "model.npz", "--folder"], ["eval", "model.npz", "--mnist", "--folder", "d"],
                                  ["eval", "--threads", "2", "--folder", "d"], ["eval", "model.npz"],
                                  ["eval", "model.npz", "--folder", "d", "--exec", "dense"],
                                  ["eval", "model.npz", "--mnist", "--split", "test"]])
def test_eval_bad_arguments(capsys, argv):
    """Wrong eval arguments exit 2 with a usage error, before anything is loaded."""
    from sparseinfer.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "sparseinfer-prune eval" not in err


def test_runtime_never_imports_the_pruner():
    """Issue 14: no import from sparseinfer/ into prune/, not even lazily: no import statement
    names it in any module of the package, and the commands run without loading it."""
    import ast
    import glob

    pkg = os.path.join(ROOT, "sparseinfer")
    for path in sorted(glob.glob(os.path.join(pkg, "*.py"))):
        for node in ast.walk(ast.parse(open(path).read(), path)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n == "prune" or n.startswith("prune.") for n in names), \
                f"{os.path.relpath(path, ROOT)}:{node.lineno} imports {names}"
    for path in glob.glob(os.path.join(pkg, "*.pyx")) + glob.glob(os.path.join(pkg, "*.pxd")):
        for i, line in enumerate(open(path), 1):
            assert not line.lstrip().startswith(("import prune", "from prune")), f"{path}:{i}"
    lenet = os.path.join(ROOT, "models", "lenet5.npz")
    code = ("import sys; from sparseinfer.cli import main; "
            f"codes = [main(['info', {lenet!r}]), main(['bench', {lenet!r}, '--time', '0.05']), main(['prune', 'x']), "
            "main(['import', 'x.npy'])]; "
            "assert codes == [0, 0, 2, 2], codes; "
            "assert not [m for m in sys.modules if m == 'prune' or m.startswith('prune.')], 'prune was imported'; "
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "sparseinfer-prune" in p.stderr
