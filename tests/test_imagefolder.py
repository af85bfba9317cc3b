"""prune.imagefolder: scanning (class order, label lists), splits, the tf.data pipelines
against sparseinfer.preprocess, and bad input.

Folders are built in tmp_path from the photos shipped with scikit-image and matplotlib
(crops, flips and resizes, saved as PNG and JPEG). Tolerance: none; evaluation samples must
equal sparseinfer.preprocess.load_image bit for bit and training samples must be exact
windows of the resized image minus the means (every step is the same float32 arithmetic).
"""
from __future__ import annotations

import logging
import os
import re
import shutil

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
skimage = pytest.importorskip("skimage")
tf = pytest.importorskip("tensorflow")

from prune.imagefolder import (ImageError, image_errors, make_dataset, scan_folder,  # noqa: E402
                               scan_label_list, split_images, verify_images)
from sparseinfer.export import CAFFE_BGR_MEAN, default_input_spec  # noqa: E402
from prune.sample_data import photo_path  # noqa: E402
from sparseinfer.preprocess import load_image  # noqa: E402

SPEC = default_input_spec((224, 224, 3))
TSV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "sparseinfer", "data", "imagenet_classes.tsv")


def _photo(name: str) -> np.ndarray:
    path = photo_path(name)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img


PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "grace_hopper.jpg"]


def make_variants(photo: str, n: int, seed: int) -> list[np.ndarray]:
    """``n`` different images from one photo: random crop, flip, resize (short side 60..300,
    so some are enlarged by the 256 resize and some reduced); one of them gray."""
    img = _photo(photo)
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    out = []
    for i in range(n):
        ch, cw = int(h * rng.uniform(0.55, 0.95)), int(w * rng.uniform(0.55, 0.95))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        v = img[top:top + ch, left:left + cw]
        if rng.random() < 0.5:
            v = v[:, ::-1]
        short = int(rng.integers(60, 300))
        s = short / min(ch, cw)
        v = cv2.resize(np.ascontiguousarray(v), (max(1, round(cw * s)), max(1, round(ch * s))),
                       interpolation=cv2.INTER_AREA)
        if i == 3:
            v = cv2.cvtColor(v, cv2.COLOR_BGR2GRAY)
        out.append(v)
    return out


def write_class(folder: str, photo: str, n: int, seed: int, start: int = 0) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, v in enumerate(make_variants(photo, n, seed), start=start):
        p = os.path.join(folder, f"img_{i:03d}.{'png' if i % 2 else 'jpg'}")
        assert cv2.imwrite(p, v), p
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """4 classes named by word (sorted order != creation order), 12 images each, plus
    a hidden file, a README and a hidden folder that must be ignored or skipped."""
    root = str(tmp_path_factory.mktemp("words"))
    for k, (name, photo) in enumerate([("rocket", "rocket.jpg"), ("cat", "chelsea.png"),
                                       ("mug", "coffee.png"), ("astronaut", "astronaut.png")]):
        write_class(os.path.join(root, name), photo, 12, seed=k)
    open(os.path.join(root, "cat", ".DS_Store"), "wb").write(b"\0\0\0\1Bud1")
    open(os.path.join(root, "README.txt"), "w").write("not an image\n")
    os.makedirs(os.path.join(root, ".cache"))
    open(os.path.join(root, ".cache", "x.jpg"), "w").write("not an image either")
    return root


def _imagenet_ids() -> list[str]:
    with open(TSV, encoding="utf-8") as f:
        return [l.split("\t")[0] for l in f.read().splitlines() if l and not l.startswith("#")]


# ---------------------------------------------------------------- scanning


def test_scan_sorted_names(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="prune.imagefolder"):
        images = scan_folder(folder)
    assert images.classes == ("astronaut", "cat", "mug", "rocket")
    assert images.order == "sorted"
    assert len(images) == 48
    np.testing.assert_array_equal(images.counts(), [12, 12, 12, 12])
    for p, y in zip(images.paths, images.labels):
        assert os.path.basename(os.path.dirname(p)) == images.classes[y], p
        assert not os.path.basename(p).startswith(".")
    assert images.skipped == (os.path.join(folder, "README.txt"),)
    assert "skipped 1 file" in caplog.text and "README.txt" in caplog.text


def test_scan_imagenet_order(tmp_path):
    ids = _imagenet_ids()
    # three synsets, created in an order that is neither sorted nor ImageNet's on purpose
    chosen = ["n03063599", "n01440764", "n02123045"]  # coffee mug, tench, tabby cat
    for k, s in enumerate(chosen):
        write_class(str(tmp_path / s), PHOTOS[k], 2, seed=k)
    images = scan_folder(tmp_path)
    assert images.order == "imagenet"
    assert list(images.classes) == ids and len(images.classes) == 1000
    for p, y in zip(images.paths, images.labels):
        assert ids.index(os.path.basename(os.path.dirname(p))) == y, p
    assert sorted(set(images.labels.tolist())) == sorted(ids.index(s) for s in chosen)
    # one folder that is not an ImageNet-1k synset: sorted names, and a log line says why
    write_class(str(tmp_path / "n99999999"), PHOTOS[3], 2, seed=9)
    images = scan_folder(tmp_path)
    assert images.order == "sorted" and images.classes == tuple(sorted(chosen + ["n99999999"]))
    with pytest.raises(ValueError, match="n99999999.*not ImageNet-1k"):
        scan_folder(tmp_path, order="imagenet")


def test_scan_given_classes(folder):
    classes = ["mug", "rocket", "dog", "cat", "astronaut"]
    images = scan_folder(folder, classes=classes)
    assert images.classes == tuple(classes) and images.order == "given"
    for p, y in zip(images.paths, images.labels):
        assert classes[y] == os.path.basename(os.path.dirname(p))
    with pytest.raises(ValueError, match=r"\['mug'\] are not among the 3 given"):
        scan_folder(folder, classes=["astronaut", "cat", "rocket"])


def test_label_list(tmp_path):
    ids = _imagenet_ids()
    flat = tmp_path / "val"
    paths = write_class(str(flat), "rocket.jpg", 4, seed=1) + write_class(str(flat), "coffee.png", 2, seed=2, start=4)
    names = [os.path.basename(p) for p in paths]
    labels = [17, "n03063599", 0, 999, "n01440764", 5]
    text = "# Caffe-style val.txt\n\n" + "".join(f"{n} {l}\n" for n, l in zip(names, labels))
    (tmp_path / "val.txt").write_text(text)
    images = scan_label_list(flat, tmp_path / "val.txt")
    assert images.order == "list" and len(images.classes) == 1000
    assert [os.path.basename(p) for p in images.paths] == names
    want = [l if isinstance(l, int) else ids.index(l) for l in labels]
    assert images.labels.tolist() == want
    # own class names: labels are indices into them or the names themselves
    (tmp_path / "own.txt").write_text(f"{names[0]} cat\n{names[1]} 1\n")
    images = scan_label_list(flat, tmp_path / "own.txt", classes=["dog", "cat"])
    assert images.labels.tolist() == [1, 1] and len(images) == 2


@pytest.mark.parametrize("line, match", [
    ("missing.jpg 3", r"bad\.txt:2: .*missing\.jpg"),
    ("{0} 1000", r"bad\.txt:2: label 1000 for '{0}' is out of range \[0, 1000\)"),
    ("{0} -1", r"bad\.txt:2: label -1 .* out of range"),
    ("{0} n99999999", r"bad\.txt:2: label 'n99999999' for '{0}' is neither"),
    ("{0}", r"bad\.txt:2: expected '<file> <label>'"),
    ("{1} 4", r"bad\.txt:2: '{1}' is listed twice \(first on line 1\)"),
    ("notes.txt 4", r"bad\.txt:2: 'notes\.txt' is not an image file by extension"),
    ("../{0} 4", r"bad\.txt:2: .* must be a path inside"),
])
def test_label_list_errors(tmp_path, line, match):
    flat = tmp_path / "val"
    names = [os.path.basename(p) for p in write_class(str(flat), "rocket.jpg", 2, seed=1)]
    (flat / "notes.txt").write_text("x")
    (tmp_path / "bad.txt").write_text(f"{names[1]} 3\n" + line.format(names[0], names[1]) + "\n")
    with pytest.raises(ValueError, match=match.format(names[0], names[1])):
        scan_label_list(flat, tmp_path / "bad.txt")


# ---------------------------------------------------------------- splits


def _parts_ok(images, parts, sizes):
    seen = set()
    for name in ("train", "val", "test"):
        part = parts[name]
        assert part.classes == images.classes
        np.testing.assert_array_equal(part.counts(), [sizes[name]] * len(images.classes), err_msg=name)
        for p, y in zip(part.paths, part.labels):
            assert images.labels[images.paths.index(p)] == y, p
        assert not seen & set(part.paths), f"{name} overlaps an earlier part"
        seen |= set(part.paths)


def test_split_counts_disjoint_deterministic(folder):
    images = scan_folder(folder)
    parts = split_images(images, train=6, val=3, test=3, seed=0)
    _parts_ok(images, parts, {"train": 6, "val": 3, "test": 3})
    again = split_images(images, train=6, val=3, test=3, seed=0)
    assert all(again[k].paths == parts[k].paths for k in parts)
    other = split_images(images, train=6, val=3, test=3, seed=1)
    assert other["test"].paths != parts["test"].paths
    # the test part depends only on the seed and its own size
    assert split_images(images, train=2, val=1, test=3, seed=0)["test"].paths == parts["test"].paths
    # fractions (rounded down) and 'the rest'
    frac = split_images(images, train=0.5, val=0.25, test=0.25, seed=0)
    _parts_ok(images, frac, {"train": 6, "val": 3, "test": 3})
    assert frac["test"].paths == parts["test"].paths
    rest = split_images(images, train=None, val=2, test=2, seed=0)
    _parts_ok(images, rest, {"train": 8, "val": 2, "test": 2})


def test_split_stable_when_other_classes_grow(tmp_path, folder):
    root = tmp_path / "grow"
    shutil.copytree(folder, root)
    before = split_images(scan_folder(root), 6, 3, 3, seed=0)
    write_class(str(root / "mug"), "coffee.png", 5, seed=7, start=100)
    after_images = scan_folder(root)
    assert after_images.counts().tolist() == [12, 12, 17, 12]
    after = split_images(after_images, 6, 3, 3, seed=0)
    mug = after_images.classes.index("mug")
    for k in before:
        keep = [p for p, y in zip(before[k].paths, before[k].labels) if y != mug]
        assert [p for p, y in zip(after[k].paths, after[k].labels) if y != mug] == keep, k


def test_split_too_few(folder):
    images = scan_folder(folder)
    with pytest.raises(ValueError, match=r"30 / val 10 / test 10 per class: too few images in "
                                         r"4 classes: 'astronaut' \(12 images, in .*words0/astronaut\); 'cat'"):
        split_images(images)  # the defaults: 30 / 10 / 10 per class
    with pytest.raises(ValueError, match="too few"):
        split_images(images, 0.9, 0.05, 0.05)  # 5% of 12 rounds to no image
    with pytest.raises(ValueError, match="at most one"):
        split_images(images, None, None, 2)
    with pytest.raises(ValueError, match="add up to 1.2"):
        split_images(images, 0.6, 0.3, 0.3)
    with pytest.raises(ValueError, match="split val must be"):
        split_images(images, 5, -1, 2)


# ---------------------------------------------------------------- pipelines


def test_eval_pipeline_equals_load_image(folder):
    images = scan_folder(folder)
    ds = make_dataset(images, SPEC, batch_size=7, with_paths=True)
    n = 0
    for x, y, p in ds.as_numpy_iterator():
        assert x.dtype == np.float32 and x.shape[1:] == (224, 224, 3)
        for i in range(len(y)):
            path = p[i].decode()
            assert path == images.paths[n] and y[i] == images.labels[n]
            ref = load_image(path, SPEC)
            bad = np.argwhere(x[i] != ref)
            assert bad.size == 0, f"{path}: {len(bad)} elements differ, first at {tuple(bad[0])}: " \
                                  f"{x[i][tuple(bad[0])]} != {ref[tuple(bad[0])]}"
            n += 1
    assert n == len(images)


def _resized_minus_mean(path: str) -> np.ndarray:
    """Independent of prune.imagefolder: OpenCV decode, shorter side 256, BGR - caffe means."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)  # gray files come back as 3 equal channels
    h, w = img.shape[:2]
    th, tw = (256, max(1, round(w * 256 / h))) if h <= w else (max(1, round(h * 256 / w)), 256)
    interp = cv2.INTER_AREA if th < h and tw < w else cv2.INTER_LINEAR
    img = cv2.resize(img, (tw, th), interpolation=interp)
    return img.astype(np.float32) - np.asarray(CAFFE_BGR_MEAN, np.float32)


def _find_window(full: np.ndarray, x: np.ndarray) -> list[tuple[int, int, bool]]:
    """Every (top, left, flipped) where x is that 224x224 window of full (or its mirror)."""
    found = []
    for flipped, target in ((False, x), (True, x[:, ::-1])):
        hits = np.argwhere((full[:full.shape[0] - 223, :full.shape[1] - 223] == target[0, 0]).all(-1))
        for top, left in hits:
            if np.array_equal(full[top:top + 224, left:left + 224], target):
                found.append((int(top), int(left), flipped))
    return found


def test_train_pipeline_windows_and_seeding(folder):
    images = scan_folder(folder).subset(range(0, 48, 3))  # 16 images of all 4 classes
    ds = make_dataset(images, SPEC, batch_size=4, training=True, flip=True, seed=3, with_paths=True)
    epoch1 = list(ds.as_numpy_iterator())
    epoch2 = list(ds.as_numpy_iterator())
    windows = []
    for x, y, p in epoch1:
        for i in range(len(y)):
            path = p[i].decode()
            assert y[i] == images.labels[images.paths.index(path)]
            found = _find_window(_resized_minus_mean(path), x[i])
            assert found, f"{path}: training sample is not a 224x224 window of the resized image"
            windows.append(found[0])
    order1 = [q for b in epoch1 for q in b[2]]
    assert sorted(order1) == sorted(s.encode() for s in images.paths)  # each image once per epoch
    assert order1 != [s.encode() for s in images.paths]  # shuffled
    assert len({(t, l) for t, l, _ in windows}) > 8, windows  # random windows, not the centre
    assert {f for _, _, f in windows} == {False, True}, windows  # both flipped and not
    # a new epoch: another order and other windows
    assert [q for b in epoch2 for q in b[2]] != order1
    # the same seed gives the same batches; another seed others
    same = list(make_dataset(images, SPEC, batch_size=4, training=True, flip=True, seed=3,
                             with_paths=True).as_numpy_iterator())
    for a, b in zip(epoch1, same):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[2], b[2])
    other = next(iter(make_dataset(images, SPEC, batch_size=4, training=True, flip=True, seed=4)))
    assert not np.array_equal(other[0].numpy(), epoch1[0][0])


# ---------------------------------------------------------------- bad input


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):
        scan_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no class folders"):
        scan_folder(tmp_path / "empty")
    root = tmp_path / "root"
    write_class(str(root / "cat"), "chelsea.png", 2, seed=0)
    (root / "dog").mkdir()
    (root / "dog" / ".DS_Store").write_bytes(b"x")
    (root / "dog" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"class folder\(s\) without images: .*root/dog"):
        scan_folder(root)
    shutil.rmtree(root / "dog")
    write_class(str(root), "coffee.png", 1, seed=1)  # an image beside the class folders
    with pytest.raises(ValueError, match=r"root: image files beside the class folders \(img_000\.jpg\)"):
        scan_folder(root)
    flat = tmp_path / "flat"
    write_class(str(flat), "coffee.png", 2, seed=1)
    with pytest.raises(ValueError, match="flat: no class folders .*; 2 images directly in it"):
        scan_folder(flat)


def test_bad_images_name_the_file(tmp_path):
    root = tmp_path / "root"
    write_class(str(root / "cat"), "chelsea.png", 3, seed=0)
    (root / "cat" / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"cat/empty\.png: empty file"):
        scan_folder(root)
    (root / "cat" / "empty.png").unlink()
    bad = root / "cat" / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG\n" * 10)
    small = root / "cat" / "tiny.png"
    cv2.imwrite(str(small), _photo("chelsea.png")[:20, :17])
    images = scan_folder(root)  # cheap scan: decodable is checked when decoding
    with pytest.raises(ImageError) as e:
        verify_images(images, SPEC)
    msg = str(e.value)
    assert msg.startswith("2 of 5 images cannot be used")
    assert f"{bad}: not an image OpenCV can decode" in msg
    assert f"{small}: image is 20x17 pixels, too small" in msg and "more than max_upscale 8" in msg
    # inside tf.data: TensorFlow's error names the file; image_errors() gives ImageError
    only_bad = images.subset([images.paths.index(str(bad))])
    with pytest.raises(tf.errors.OpError, match=f"ImageError: {re.escape(str(bad))}: not an image"):
        list(make_dataset(only_bad, SPEC).as_numpy_iterator())
    no_small = images.subset([i for i, p in enumerate(images.paths) if p != str(small)])
    for training in (False, True):
        with pytest.raises(ImageError, match=f"^{re.escape(str(bad))}: not an image OpenCV can decode$"):
            with image_errors():
                list(make_dataset(no_small, SPEC, batch_size=2, training=training).as_numpy_iterator())
    only_small = images.subset([images.paths.index(str(small))])
    with pytest.raises(ImageError, match=f"^{re.escape(str(small))}: image is 20x17 pixels, too small"):
        with image_errors():
            list(make_dataset(only_small, SPEC).as_numpy_iterator())
    # the limit can be lifted: then the tiny image is what load_image makes of it
    x, _ = next(iter(make_dataset(only_small, SPEC, max_upscale=None)))
    np.testing.assert_array_equal(x[0].numpy(), load_image(small, SPEC))
