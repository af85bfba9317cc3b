"""prune.evaluate: top-1 / top-5 on a labelled folder by TensorFlow and by the runtime.

A small VGG19 (width 1/16, fc 32, the real 224x224x3 input and ImageNet preprocessing) with
random weights is exported with export_keras. The references are independent of
prune.evaluate and of the tf.data pipeline: each image through
sparseinfer.preprocess.load_image, the Keras model and the runtime, and top-k counted by
rank (how many outputs are larger than the label's) in NumPy.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import sparseinfer  # noqa: E402
from prune.evaluate import evaluate, main, model_classes, topk_hits  # noqa: E402
from prune.imagefolder import scan_folder, split_images  # noqa: E402
from prune.models import vgg19  # noqa: E402
from sparseinfer.preprocess import load_image  # noqa: E402
from tests.test_imagefolder import PHOTOS, _imagenet_ids, write_class  # noqa: E402
from tests.tf_util import randomize_keras  # noqa: E402

SYNSETS = ["n03063599", "n01440764", "n02123045"]  # coffee mug, tench, tabby cat


def _rank_topk(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Label within the top k by rank: outputs strictly larger, plus equal ones at a lower index."""
    p_label = probs[np.arange(len(labels)), labels]
    larger = (probs > p_label[:, None]).sum(1)
    ties_before = np.array([(probs[i, :labels[i]] == p_label[i]).sum() for i in range(len(labels))])
    return larger + ties_before < k


def test_topk_hits_against_rank():
    rng = np.random.default_rng(0)
    probs = rng.random((200, 12)).astype(np.float32)
    probs[:20, 3] = probs[:20, 7] = 0.99  # ties: the lower index counts first
    labels = rng.integers(0, 12, 200)
    labels[:10] = 7
    for k in (1, 3, 5, 12):
        np.testing.assert_array_equal(topk_hits(probs, labels, k), _rank_topk(probs, labels, k), err_msg=f"k={k}")


@pytest.fixture(scope="module")
def model_and_folder(tmp_path_factory):
    """A 1000-output model that favours 8 classes (the 3 of the folder and 5 others), so
    top-1 and top-5 are neither 0 nor 1, and a synset folder of 3 classes x 6 images."""
    tmp = tmp_path_factory.mktemp("eval")
    model = vgg19(classes=1000, width=1 / 16, fc_units=32)
    randomize_keras(model, seed=2, logit_scale=0.5)
    ids = _imagenet_ids()
    w, b = model.get_layer("predictions").get_weights()
    favoured = [ids.index(s) for s in SYNSETS] + [1, 2, 500, 998, 999]
    b[favoured] += 12.0
    model.get_layer("predictions").set_weights([w, b])
    path = str(tmp / "vgg_small.npz")
    sparseinfer.export_keras(model, path)
    root = tmp / "imagenet"
    for k, s in enumerate(SYNSETS):
        write_class(str(root / s), PHOTOS[k], 6, seed=10 + k)
    return model, path, str(root)


def _reference(model, path, images):
    x = np.stack([load_image(p, sparseinfer.load(path).input_spec) for p in images.paths])
    return model(x, training=False).numpy(), sparseinfer.load(path).predict(x)


def test_evaluate_matches_independent_reference(model_and_folder):
    model, path, root = model_and_folder
    images = scan_folder(root)
    assert images.order == "imagenet"
    lines = []
    r = evaluate(path, images, batch_size=4, progress=lines.append, progress_every=0.0)
    p_tf, p_rt = _reference(model, path, images)
    y = images.labels
    assert r["images"] == 18 and r["k"] == 5 and r["classes"] == 1000
    for name, p in (("tf", p_tf), ("runtime", p_rt)):
        c1, c5 = int(_rank_topk(p, y, 1).sum()), int(_rank_topk(p, y, 5).sum())
        assert (r[name]["top1_correct"], r[name]["top5_correct"]) == (c1, c5), name
        assert r[name]["top1"] == c1 / 18 and r[name]["top5"] == c5 / 18
    assert 0 < r["tf"]["top1_correct"] < r["tf"]["top5_correct"] < 18, r["tf"]  # not a trivial test
    assert r["runtime"] == r["tf"]
    assert r["top1_differ"] == int((p_tf.argmax(1) != p_rt.argmax(1)).sum()) == 0
    assert r["top5_differ"] == 0
    assert r["max_abs_diff"] <= 1e-4
    assert len(lines) == 5 and lines[-1].startswith("18/18 images (100.0%)"), lines


def test_evaluate_cli(model_and_folder):
    model, path, root = model_and_folder
    images = scan_folder(root)
    test_part = split_images(images, train=3, val=1, test=2, seed=5)["test"]
    p_tf, p_rt = _reference(model, path, test_part)
    out, err = io.StringIO(), io.StringIO()
    rc = main([path, root, "--split", "test", "--sizes", "3", "1", "2", "--seed", "5", "--json"],
              stdout=out, stderr=err)
    assert rc == 0, err.getvalue()
    r = json.loads(out.getvalue())
    assert r["images"] == 6 and r["split"] == "test" and r["seed"] == 5
    assert r["tf"]["top1_correct"] == int(_rank_topk(p_tf, test_part.labels, 1).sum())
    assert r["runtime"]["top5_correct"] == int(_rank_topk(p_rt, test_part.labels, 5).sum())
    assert "test split (sizes 3 1 2 per class, seed 5): 6 images of 3 classes" in err.getvalue()
    out = io.StringIO()
    assert main([path, root, "--quiet"], stdout=out, stderr=io.StringIO()) == 0
    table = out.getvalue().splitlines()
    assert table[0].split() == ["images", "top-1", "top-5"]
    assert table[1].startswith("TensorFlow") and table[2].startswith("runtime")
    assert table[3].startswith("predictions differ: top-1 on 0 of 18 images, top-5 sets on 0")


def test_evaluate_cli_errors(model_and_folder, tmp_path):
    _, path, root = model_and_folder
    err = io.StringIO()
    write_class(str(tmp_path / "cat"), "chelsea.png", 2, seed=0)
    assert main([path, str(tmp_path), "--quiet"], stdout=io.StringIO(), stderr=err) == 1
    assert "labels index 1 classes" in err.getvalue() and "has 1000 outputs" in err.getvalue()
    err = io.StringIO()
    (tmp_path / "val.txt").write_text("cat/img_000.jpg n02123045\ncat/gone.jpg 3\n")
    assert main([path, str(tmp_path), "--labels", str(tmp_path / "val.txt")],
                stdout=io.StringIO(), stderr=err) == 1
    assert f"val.txt:2: {tmp_path / 'cat' / 'gone.jpg'}" in err.getvalue()
    err = io.StringIO()
    (tmp_path / "cat" / "img_001.png").write_bytes(b"\x89PNG but not really")
    (tmp_path / "val.txt").write_text("cat/img_000.jpg n02123045\ncat/img_001.png 3\n")
    assert main([path, str(tmp_path), "--labels", str(tmp_path / "val.txt"), "--quiet"],
                stdout=io.StringIO(), stderr=err) == 1
    assert err.getvalue().strip().endswith(f"error: {tmp_path / 'cat' / 'img_001.png'}: not an image OpenCV can decode")


def test_model_classes(model_and_folder, tmp_path):
    from sparseinfer.cli import imagenet_class_names

    model, path, root = model_and_folder
    assert model_classes(path) is None  # no names: synset folders by ImageNet-1k order
    named = str(tmp_path / "named.npz")
    sparseinfer.export_keras(model, named, classes=imagenet_class_names())
    assert model_classes(named) is None  # ImageNet's own names: the same
    own = [f"c{i}" for i in range(1000)]
    sparseinfer.export_keras(model, named, classes=own)
    assert model_classes(named) == own
    err = io.StringIO()
    assert main([named, root, "--quiet"], stdout=io.StringIO(), stderr=err) == 1
    assert "are not among the 1000 given class names" in err.getvalue()
