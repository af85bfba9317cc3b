"""ImageNet-style labelled image folders, deterministic splits and tf.data pipelines.

    from prune.imagefolder import scan_folder, split_images, make_dataset
    images = scan_folder("data/imagenet/train")            # one sub-folder per class
    parts = split_images(images, train=30, val=10, test=10, seed=0)
    spec = sparseinfer.load("vgg19.npz").input_spec          # or export.default_input_spec
    train_ds = make_dataset(parts["train"], spec, batch_size=32, training=True, flip=True, seed=0)
    val_ds = make_dataset(parts["val"], spec, batch_size=64)

Two layouts (docs/imagenet_data.md):

* class folders: ``ROOT/<class>/**/<image>``. If every folder name is an ImageNet-1k synset
  id (``n01440764``), labels are ImageNet-1k indices (the order of
  ``sparseinfer/data/imagenet_classes.tsv``), so a 1000-output model's outputs line up even
  when only some classes are present; otherwise the folder names sorted are the classes.
* a flat folder plus a label list (Caffe's ``val.txt``): lines ``<file> <label>``, the label
  an index or a synset id.

Files: names starting with ``.`` (``.DS_Store``, ``._x.jpg``, ``.git``) are ignored; other
files are images when their extension is in IMAGE_EXTENSIONS (any case), and anything else
(``README.txt``, ``Thumbs.db``) is skipped with one log line. A file that has an image
extension but is empty, not decodable or too small is an error naming the file, never
skipped.

Preprocessing is exactly the runtime's (sparseinfer.preprocess): evaluation samples are
``load_image(path, spec)`` itself, called through ``tf.numpy_function`` in a parallel map;
training samples are the same decode and resize followed by a random crop of the spec's
crop size (and an optional horizontal flip) instead of the centre crop.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from sparseinfer.preprocess import ImageError, preprocess, read_image

__all__ = ["ImageSet", "ImageError", "IMAGE_EXTENSIONS", "MAX_UPSCALE", "imagenet_synsets",
           "scan_folder", "scan_label_list", "load_images", "split_images", "verify_images",
           "resized_size", "make_dataset", "image_errors"]

log = logging.getLogger(__name__)

#: extensions (lower case) of the files taken as images; OpenCV decodes all of them
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".ppm", ".pgm", ".pbm",
                    ".pnm", ".tif", ".tiff", ".webp")

#: default limit on how much preprocessing may enlarge an image (per side); beyond it the
#: image is refused as too small (a 20x17 thumbnail blown up to 256 pixels)
MAX_UPSCALE = 8.0

_SYNSET = re.compile(r"n\d{8}")
_SPLITS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Labelled images: ``paths[i]`` has label ``labels[i]``, an index into ``classes``.

    ``classes`` has one name per model output (all 1000 ImageNet-1k synsets for a synset
    folder, even if only some are present); ``order`` says how labels were assigned
    (``imagenet``, ``sorted``, ``given`` or ``list``); ``skipped``: files ignored as not
    images by extension.
    """

    root: str
    paths: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    order: str
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: Sequence[int] | np.ndarray) -> "ImageSet":
        """The images at ``index`` (in that order), same classes."""
        idx = np.asarray(index, dtype=np.int64)
        return ImageSet(self.root, tuple(self.paths[i] for i in idx), self.labels[idx].copy(),
                        self.classes, self.order, self.skipped)

    def counts(self) -> np.ndarray:
        """Images per class, one count per entry of ``classes``."""
        return np.bincount(self.labels, minlength=len(self.classes))

    def describe(self) -> str:
        present = int((self.counts() > 0).sum())
        how = {"imagenet": "ImageNet-1k order", "sorted": "sorted folder names",
               "given": "the given class list", "list": "label list"}[self.order]
        return (f"{len(self):,} images of {present} classes ({len(self.classes)} outputs, "
                f"labels by {how}) in {self.root}")


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k synset ids in index order (sparseinfer/data/imagenet_classes.tsv)."""
    text = resources.files("sparseinfer").joinpath("data/imagenet_classes.tsv").read_text("utf-8")
    ids = [line.split("\t", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
    if len(ids) != 1000 or not all(_SYNSET.fullmatch(s) for s in ids):
        raise RuntimeError("packaged imagenet_classes.tsv is damaged")
    return ids


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _class_files(folder: str, skipped: list[str]) -> list[str]:
    """Image files under ``folder`` (recursively, sorted, hidden entries ignored)."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            if _is_hidden(name):
                continue
            p = os.path.join(dirpath, name)
            (out if _is_image_name(name) else skipped).append(p)
    return out


def _log_skipped(root: str, skipped: Sequence[str]) -> None:
    if skipped:
        eg = ", ".join(os.path.relpath(p, root) for p in skipped[:3])
        log.warning("%s: skipped %d file(s) that are not images by extension (e.g. %s)",
                    root, len(skipped), eg)


def _check_root(root: str | os.PathLike) -> str:
    r = os.fspath(root)
    if not os.path.exists(r):
        raise FileNotFoundError(f"{r}: no such folder")
    if not os.path.isdir(r):
        raise NotADirectoryError(f"{r}: not a folder")
    return r


def _check_nonempty(paths: Sequence[str]) -> None:
    empty = [p for p in paths if os.path.getsize(p) == 0]
    if empty:
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        raise ImageError(f"{', '.join(empty[:5])}{more}: empty file{'s' if len(empty) > 1 else ''}")


def scan_folder(root: str | os.PathLike, classes: Sequence[str] | None = None,
                order: str = "auto") -> ImageSet:
    """Scan ``root/<class>/...`` (one sub-folder per class) into an ImageSet.

    ``classes``: the model's class names; each folder must be one of them and its label is
    the name's index. Otherwise ``order``: ``auto`` (ImageNet-1k order if every folder name
    is an ImageNet-1k synset id, else sorted names), ``imagenet`` or ``sorted``.
    Raises FileNotFoundError / NotADirectoryError for the root, ValueError naming the folder
    for an empty root, image files beside the class folders, a class folder without images
    or unknown class names, ImageError for empty image files.
    """
    r = _check_root(root)
    if order not in ("auto", "imagenet", "sorted"):
        raise ValueError(f"order must be 'auto', 'imagenet' or 'sorted', got {order!r}")
    entries = sorted(e.name for e in os.scandir(r) if not _is_hidden(e.name))
    names = [n for n in entries if os.path.isdir(os.path.join(r, n))]
    loose = [n for n in entries if n not in names and _is_image_name(n)]
    if not names:
        hint = (f"; {len(loose)} images directly in it: for a flat folder pass a label list"
                if loose else "")
        raise ValueError(f"{r}: no class folders (expected one sub-folder per class{hint})")
    if loose:
        raise ValueError(f"{r}: image files beside the class folders ({', '.join(loose[:3])}"
                         f"{', ...' if len(loose) > 3 else ''}); move them into a class folder")
    skipped = [os.path.join(r, n) for n in entries if n not in names]

    if classes is not None:
        all_classes = [str(c) for c in classes]
        unknown = [n for n in names if n not in all_classes]
        if unknown:
            raise ValueError(f"{r}: class folder(s) {unknown[:5]} are not among the "
                             f"{len(all_classes)} given class names")
        how = "given"
    else:
        synsets = imagenet_synsets()
        known = set(synsets)
        if order == "auto":
            order = "imagenet" if all(n in known for n in names) else "sorted"
            looks = [n for n in names if _SYNSET.fullmatch(n)]
            if order == "sorted" and looks:
                log.warning("%s: %d of %d folder names look like synset ids but %s not in "
                            "ImageNet-1k: labels follow the sorted folder names", r, len(looks),
                            len(names), [n for n in names if n not in known][:3])
        if order == "imagenet":
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"{r}: folder(s) {unknown[:5]} are not ImageNet-1k synset ids")
            all_classes = synsets
        else:
            all_classes = names
        how = order
    index = {c: i for i, c in enumerate(all_classes)}

    paths: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for n in names:
        files = _class_files(os.path.join(r, n), skipped)
        if not files:
            empty.append(os.path.join(r, n))
        paths += files
        labels += [index[n]] * len(files)
    if empty:
        raise ValueError(f"class folder(s) without images: {', '.join(empty[:5])}"
                         f"{f' and {len(empty) - 5} more' if len(empty) > 5 else ''} "
                         f"(image extensions: {' '.join(IMAGE_EXTENSIONS)})")
    _check_nonempty(paths)
    _log_skipped(r, skipped)
    return ImageSet(r, tuple(paths), np.asarray(labels, dtype=np.int64), tuple(all_classes),
                    how, tuple(skipped))


def scan_label_list(root: str | os.PathLike, label_file: str | os.PathLike,
                    classes: Sequence[str] | None = None) -> ImageSet:
    """A flat folder of images and a label list: lines ``<file> <label>``.

    ``<file>`` is relative to ``root`` (it may contain spaces: the label is the last field);
    ``<label>`` an index into ``classes`` or a class name (a synset id for ImageNet).
    ``classes``: the model's class names; None for the 1000 ImageNet-1k synsets. Blank lines
    and lines starting with ``#`` are ignored; images not in the list are not used.
    Raises ValueError naming ``label_file:line`` for a malformed line, an out-of-range or
    unknown label, a duplicate, a missing file or a file that is not an image by extension.
    """
    r = _check_root(root)
    lf = os.fspath(label_file)
    all_classes = imagenet_synsets() if classes is None else [str(c) for c in classes]
    index = {c: i for i, c in enumerate(all_classes)}
    try:
        with open(lf, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{lf}: no such label list") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{lf}: not a UTF-8 text file ({e})") from None
    paths: list[str] = []
    labels: list[int] = []
    seen: dict[str, int] = {}
    missing: list[str] = []
    for no, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.rsplit(None, 1)
        where = f"{lf}:{no}"
        if len(fields) != 2:
            raise ValueError(f"{where}: expected '<file> <label>', got {text!r}")
        name, lab = fields
        if re.fullmatch(r"[+-]?\d+", lab):
            label = int(lab)
            if not 0 <= label < len(all_classes):
                raise ValueError(f"{where}: label {label} for {name!r} is out of range "
                                 f"[0, {len(all_classes)})")
        elif lab in index:
            label = index[lab]
        else:
            raise ValueError(f"{where}: label {lab!r} for {name!r} is neither an index nor one "
                             f"of the {len(all_classes)} class names")
        if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
            raise ValueError(f"{where}: {name!r} must be a path inside {r}")
        if name in seen:
            raise ValueError(f"{where}: {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = no
        if _is_hidden(os.path.basename(name)) or not _is_image_name(name):
            raise ValueError(f"{where}: {name!r} is not an image file by extension "
                             f"({' '.join(IMAGE_EXTENSIONS)})")
        p = os.path.join(r, name)
        if not os.path.isfile(p):
            missing.append(f"{where}: {p}")
        paths.append(p)
        labels.append(label)
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ValueError(f"no such image file: {'; '.join(missing[:5])}{more}")
    if not paths:
        raise ValueError(f"{lf}: no images listed")
    _check_nonempty(paths)
    return ImageSet(r, tuple(paths), np.asarray(labels, dtype=np.int64), tuple(all_classes), "list")


def load_images(root: str | os.PathLike, label_file: str | os.PathLike | None = None,
                classes: Sequence[str] | None = None) -> ImageSet:
    """scan_label_list(root, label_file, classes) if a label list is given, else scan_folder."""
    if label_file is not None:
        return scan_label_list(root, label_file, classes)
    return scan_folder(root, classes)


# ---------------------------------------------------------------- splits


def _part_count(v: int | float | None, n: int) -> int | None:
    if v is None:
        return None
    if isinstance(v, float):
        return int(math.floor(v * n + 1e-9))
    return v


def _check_part(name: str, v: Any) -> None:
    ok = v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0) or \
        (isinstance(v, float) and 0.0 <= v <= 1.0)
    if not ok:
        raise ValueError(f"split {name} must be a count >= 0 per class, a fraction in [0, 1] or "
                         f"None (the rest), got {v!r}")


def _rank_key(seed: int, root: str, path: str) -> tuple[bytes, str]:
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    return hashlib.blake2b(f"{seed}\0{rel}".encode("utf-8"), digest_size=16).digest(), rel


def split_images(images: ImageSet, train: int | float | None = 30, val: int | float | None = 10,
                 test: int | float | None = 10, seed: int = 0) -> dict[str, ImageSet]:
    """Split each class into disjoint train / val / test parts: ``{"train", "val", "test"}``.

    Each size is a count per class (int), a fraction of each class (float, rounded down)
    or None for the rest of the class (at most one). Within a class, files are ranked by a
    hash of ``(seed, path relative to root)``; test takes the first ranks, then val, then
    train. So the split depends only on the seed and the class's own files: adding files to
    other classes changes nothing, and the test part does not depend on the train and val
    sizes. Images beyond the requested counts are left out. A class too small for the
    requested counts (or whose fraction rounds to no image) raises ValueError naming it.
    Each part keeps class-major order; shuffle for training (make_dataset does).
    """
    sizes = {"train": train, "val": val, "test": test}
    for k, v in sizes.items():
        _check_part(k, v)
    if sum(v is None for v in sizes.values()) > 1:
        raise ValueError("at most one split size may be None (the rest of each class)")
    fsum = sum(v for v in sizes.values() if isinstance(v, float))
    if fsum > 1.0 + 1e-9:
        raise ValueError(f"split fractions add up to {fsum:g} > 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    want = " / ".join(f"{k} {'rest' if v is None else v}" for k, v in sizes.items())

    parts: dict[str, list[int]] = {k: [] for k in _SPLITS}
    short: list[str] = []
    by_label = np.argsort(images.labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(images.counts())])
    for c in np.flatnonzero(images.counts()):
        idx = by_label[bounds[c]:bounds[c + 1]]
        n = len(idx)
        counts = {k: _part_count(v, n) for k, v in sizes.items()}
        fixed = sum(v for v in counts.values() if v is not None)
        rest = n - fixed
        too_few = rest < 0 or any(counts[k] == 0 and sizes[k] not in (0, 0.0) for k in _SPLITS) \
            or (None in counts.values() and rest < 1)
        if too_few:
            where = "" if images.order == "list" else f", in {os.path.join(images.root, images.classes[c])}"
            short.append(f"{images.classes[c]!r} ({n} images{where})")
            continue
        for k in _SPLITS:
            if counts[k] is None:
                counts[k] = rest
        ranked = sorted(idx, key=lambda i: _rank_key(int(seed), images.root, images.paths[i]))
        start = 0
        for k in ("test", "val", "train"):
            parts[k] += sorted(ranked[start:start + counts[k]])
            start += counts[k]
    if short:
        more = f" and {len(short) - 10} more" if len(short) > 10 else ""
        raise ValueError(f"split {want} per class: too few images in {len(short)} "
                         f"class{'es' if len(short) > 1 else ''}: {'; '.join(short[:10])}{more}")
    return {k: images.subset(parts[k]) for k in _SPLITS}


# ---------------------------------------------------------------- decoding


def resized_size(h: int, w: int, spec: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) of an h x w image after the spec's resize (sparseinfer.preprocess's rule)."""
    shape = [int(s) for s in spec["shape"]]
    resize = spec.get("resize") or {"mode": "stretch", "size": shape[:2]}
    if resize["mode"] == "stretch":
        th, tw = (int(v) for v in resize["size"])
        return th, tw
    if resize["mode"] == "shorter":
        s = int(resize["size"])
        return (s, max(1, round(w * s / h))) if h <= w else (max(1, round(h * s / w)), s)
    raise ImageError(f"resize mode {resize['mode']!r} is not 'stretch' or 'shorter'")


def _read_checked(path: str, spec: Mapping[str, Any], max_upscale: float | None) -> np.ndarray:
    img = read_image(path)  # its errors name the file
    h, w = img.shape[:2]
    if max_upscale is not None:
        th, tw = resized_size(h, w, spec)
        up = max(th / h, tw / w)
        if up > max_upscale:
            raise ImageError(f"{path}: image is {h}x{w} pixels, too small: resizing it to {th}x{tw} "
                             f"would enlarge it {up:.1f}x, more than max_upscale {max_upscale:g}")
    return img


def _named(path: str, e: Exception) -> ImageError:
    msg = str(e)
    return ImageError(msg if path in msg else f"{path}: {msg}")


def _eval_sample(path: str, spec: Mapping[str, Any], max_upscale: float | None) -> np.ndarray:
    """sparseinfer.preprocess.load_image(path, spec), after the size check."""
    import cv2

    try:
        return preprocess(_read_checked(path, spec, max_upscale), spec)
    except (ImageError, cv2.error, OSError, ValueError) as e:
        raise _named(path, e) from None


def _train_sample(path: str, spec: Mapping[str, Any], max_upscale: float | None, draw: int,
                  flip: bool) -> np.ndarray:
    """The eval preprocessing with a random crop window (and flip) drawn from ``draw``.

    preprocess() without the crop gives the whole resized image minus the mean over std;
    those are per-pixel operations, so any window of it equals preprocessing that window,
    and the centre window is exactly load_image(path, spec).
    """
    import cv2

    try:
        img = _read_checked(path, spec, max_upscale)
        crop = spec.get("crop")
        rng = np.random.default_rng(draw & 0xFFFFFFFFFFFFFFFF)
        if crop:
            ch, cw = int(crop[0]), int(crop[1])
            th, tw = resized_size(img.shape[0], img.shape[1], spec)
            full_spec = dict(spec, shape=[th, tw, int(spec["shape"][2])], crop=None)
            full = preprocess(img, full_spec)
            if ch > th or cw > tw:
                raise ImageError(f"crop {ch}x{cw} is larger than the resized image {th}x{tw}")
            top = int(rng.integers(0, th - ch + 1))
            left = int(rng.integers(0, tw - cw + 1))
            x = full[top:top + ch, left:left + cw]
        else:
            x = preprocess(img, spec)
        if flip and rng.random() < 0.5:
            x = x[:, ::-1]
        return np.ascontiguousarray(x)
    except (ImageError, cv2.error, OSError, ValueError) as e:
        raise _named(path, e) from None


def verify_images(images: ImageSet, spec: Mapping[str, Any], max_upscale: float | None = MAX_UPSCALE,
                  threads: int = 2) -> None:
    """Decode and preprocess every image once; raise ImageError listing every bad file.

    Optional before a long run (it costs one decode per image): make_dataset reports a bad
    file only when the pipeline reaches it.
    """
    def check(p: str) -> str | None:
        try:
            _eval_sample(p, spec, max_upscale)
        except ImageError as e:
            return str(e)
        return None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        bad = [m for m in pool.map(check, images.paths) if m is not None]
    if bad:
        more = f"\n... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ImageError(f"{len(bad)} of {len(images)} images cannot be used:\n" + "\n".join(bad[:10]) + more)


# ---------------------------------------------------------------- tf.data


def make_dataset(images: ImageSet, spec: Mapping[str, Any], *, batch_size: int = 32,
                 training: bool = False, flip: bool = False, seed: int = 0,
                 max_upscale: float | None = MAX_UPSCALE, with_paths: bool = False,
                 drop_remainder: bool = False) -> Any:
    """A ``tf.data.Dataset`` of ``(x, y)`` batches (``(x, y, path)`` with ``with_paths``).

    ``x``: float32 ``(batch, h, w, c)`` with ``(h, w, c) = spec["shape"]``; ``y``: int64
    labels. ``spec``: the model's input spec (``Model.input_spec``, a manifest's ``input``).

    Evaluation (``training=False``): images in ``images`` order, each exactly
    ``sparseinfer.preprocess.load_image(path, spec)``.
    Training: order reshuffled every epoch (every new iterator), and each image gets the
    same decode and resize, then a uniformly random window of the spec's crop size instead
    of the centre one, flipped left-right with probability 1/2 if ``flip``; then
    ``(pixel - mean) / std``. Shuffle order, windows and flips follow from ``seed``: two
    datasets made with the same arguments give the same batches, epoch by epoch.

    Decoding runs in a parallel map (``num_parallel_calls=AUTOTUNE``, order kept). A bad
    file stops iteration with a TensorFlow error whose message starts with
    ``ImageError: <path>: ...``; iterate under ``image_errors()`` to get ImageError itself.
    """
    import tensorflow as tf

    if len(images) == 0:
        raise ValueError(f"{images.root}: no images to make a dataset of")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    spec = dict(spec)
    shape = [int(s) for s in spec["shape"]]
    seed = int(seed)

    paths = tf.constant(list(images.paths), dtype=tf.string)
    labels = tf.constant(images.labels, dtype=tf.int64)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))

    if training:
        ds = ds.shuffle(len(images), seed=2 * seed, reshuffle_each_iteration=True)
        draws = tf.data.Dataset.random(seed=2 * seed + 1, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, draws))

        def load(pl: Any, draw: Any) -> Any:
            p, y = pl
            x = tf.numpy_function(
                lambda b, d: _train_sample(b.decode("utf-8"), spec, max_upscale, int(d), flip),
                [p, draw], tf.float32, stateful=False)
            x.set_shape(shape)
            return (x, y, p) if with_paths else (x, y)
    else:
        def load(p: Any, y: Any) -> Any:
            x = tf.numpy_function(lambda b: _eval_sample(b.decode("utf-8"), spec, max_upscale),
                                  [p], tf.float32, stateful=False)
            x.set_shape(shape)
            return (x, y, p) if with_paths else (x, y)

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


_TF_IMAGE_ERROR = re.compile(r"ImageError: ([^\n]*)")


@contextlib.contextmanager
def image_errors() -> Iterator[None]:
    """Turn a TensorFlow error raised by a bad image inside make_dataset's pipeline back into
    the ImageError naming the file (other errors pass through unchanged)."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as e:
        m = _TF_IMAGE_ERROR.search(e.message or "")
        if m is None:
            raise
        raise ImageError(m.group(1)) from None
