"""Sample inputs for trying VGG19 pruning end to end on a machine with no ImageNet and no
pretrained weights: a tiny ImageNet-style folder made from photos that Python packages ship,
and a VGG19 model file with generated weights.

    python -m prune.sample_data folder OUT_DIR [--per-class 6]
    python -m prune.sample_data vgg19 OUT.npz [--seed 0]

The folder has one sub-folder per ImageNet synset (so a 1000-output model's outputs line
up, prune.imagefolder): scikit-image's chelsea.png (tabby), coffee.png (espresso) and
rocket.jpg (projectile), and matplotlib's grace_hopper.jpg (military uniform), each as
``per_class`` different crops, flips and scales. The generated VGG19 has He-scaled random
weights: its predictions mean nothing, but its shapes, sizes and run times are VGG19's.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np

__all__ = ["PHOTO_CLASSES", "photo_path", "make_photo_folder", "vgg19_he_weights", "make_vgg19_file"]

#: synset id -> the shipped photo that shows it
PHOTO_CLASSES = {"n02123045": "chelsea.png", "n07920052": "coffee.png", "n04008634": "rocket.jpg",
                 "n03763968": "grace_hopper.jpg"}


def photo_path(name: str) -> str:
    """Where a shipped photo is: scikit-image's data directory, or matplotlib's sample data."""
    if name == "grace_hopper.jpg":
        import matplotlib.cbook
        return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    try:
        import skimage
    except ImportError as e:
        raise RuntimeError(f"{name} comes with scikit-image: pip install scikit-image") from e
    path = os.path.join(skimage.data_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not in this scikit-image installation")
    return path


def make_photo_folder(out: str | os.PathLike, per_class: int = 6, seed: int = 0,
                      classes: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Write ``out/<synset>/<photo>_<i>.png`` for each class: image 0 is the photo itself,
    the others random crops (60-95% of each side), some mirrored and rescaled. Returns
    synset -> written paths."""
    import cv2

    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    rng = np.random.default_rng(seed)
    written: dict[str, list[str]] = {}
    for synset in classes or sorted(PHOTO_CLASSES):
        photo = PHOTO_CLASSES[synset]
        img = cv2.imread(photo_path(photo), cv2.IMREAD_COLOR)
        if img is None:
            raise RuntimeError(f"{photo_path(photo)}: OpenCV cannot read it")
        h, w = img.shape[:2]
        d = os.path.join(os.fspath(out), synset)
        os.makedirs(d, exist_ok=True)
        written[synset] = []
        for i in range(per_class):
            v = img
            if i:
                ch, cw = int(h * rng.uniform(0.6, 0.95)), int(w * rng.uniform(0.6, 0.95))
                y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
                v = img[y:y + ch, x:x + cw]
                if rng.random() < 0.5:
                    v = v[:, ::-1]
                s = rng.uniform(0.8, 1.2)
                v = cv2.resize(np.ascontiguousarray(v), (max(64, int(cw * s)), max(64, int(ch * s))),
                               interpolation=cv2.INTER_AREA)
            p = os.path.join(d, f"{os.path.splitext(photo)[0]}_{i}.png")
            if not cv2.imwrite(p, v):
                raise RuntimeError(f"{p}: could not write")
            written[synset].append(p)
    return written


def vgg19_he_weights(seed: int = 0, logit_scale: float = 0.05,
                     bias_std: float = 0.01) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """VGG19's weights (prune.vgg_import.VGG19_LAYERS: keras.applications names and shapes),
    He-scaled (std sqrt(2 / fan_in)) so activations neither vanish nor explode through 19
    layers, with small random biases; the last layer scaled by ``logit_scale`` so the softmax
    is not one-hot (meaningful top-5 and accuracy differences). Drawn in float32 (the full
    VGG19 in float64 would take 1.1 GB)."""
    from .vgg_import import VGG19_LAYERS

    rng = np.random.default_rng(seed)
    weights = {}
    for name, _, shape in VGG19_LAYERS:
        k = rng.standard_normal(shape, dtype=np.float32)
        k *= np.float32(np.sqrt(2.0 / np.prod(shape[:-1])) * (logit_scale if name == "predictions" else 1.0))
        weights[name] = (k, rng.standard_normal(shape[-1:], dtype=np.float32) * np.float32(bias_std))
    return weights


def make_vgg19_file(out: str | os.PathLike, seed: int = 0, storage: str = "dense") -> dict:
    """A full-size VGG19 (143.7M parameters) with vgg19_he_weights, written as a runtime model
    file with the ImageNet input spec. Returns the manifest."""
    from sparseinfer.export import default_input_spec, export_keras

    from .vgg_import import keras_vgg19_from_weights

    model = keras_vgg19_from_weights(vgg19_he_weights(seed))
    return export_keras(model, out, input_spec=default_input_spec((224, 224, 3)), name="vgg19", storage=storage)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m prune.sample_data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("folder", help="a tiny ImageNet-style folder from the shipped photos")
    f.add_argument("out")
    f.add_argument("--per-class", type=int, default=6)
    f.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("vgg19", help="a VGG19 model file with generated weights (548 MB)")
    v.add_argument("out")
    v.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.what == "folder":
        w = make_photo_folder(a.out, a.per_class, a.seed)
        print(f"wrote {sum(len(x) for x in w.values())} images in {len(w)} class folders under {a.out}")
    else:
        make_vgg19_file(a.out, a.seed)
        print(f"wrote {a.out} ({os.path.getsize(a.out) / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
