"""Image loading and preprocessing as a model's input spec says (docs/format.md).

One implementation for the command line and for anything that wants to feed the runtime
the way `sparseinfer run` does: OpenCV decodes, then resize, centre crop, channel order,
inversion and (pixel - mean) / std, all in float32.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np


class ImageError(ValueError):
    """An image that cannot be read or does not fit the model."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file with OpenCV: HxWx3 uint8 BGR, or HxW for grayscale files."""
    import cv2

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ImageError(f"{p}: no such image file")
    data = np.fromfile(p, dtype=np.uint8)
    if data.size == 0:
        raise ImageError(f"{p}: empty file")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"{p}: not an image OpenCV can decode")
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img / 257.0).round().astype(np.uint8)
        else:
            raise ImageError(f"{p}: pixel type {img.dtype} is not supported (8- or 16-bit images)")
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ImageError(f"{p}: unsupported image layout {img.shape}")
    return img


def preprocess(img: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """An HxW (gray) or HxWx3 (BGR) uint8 image -> one HxWxC float32 sample for the model."""
    import cv2

    shape = [int(s) for s in spec["shape"]]
    color = spec.get("color", "gray" if shape[2] == 1 else "rgb")
    if color == "gray":
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    else:
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if color == "rgb":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif color != "bgr":
            raise ImageError(f"input color {color!r} is not gray, rgb or bgr")
    resize = spec.get("resize") or {"mode": "stretch", "size": shape[:2]}
    h, w = img.shape[:2]
    if resize["mode"] == "stretch":
        th, tw = (int(v) for v in resize["size"])
    elif resize["mode"] == "shorter":
        s = int(resize["size"])
        th, tw = (s, max(1, round(w * s / h))) if h <= w else (max(1, round(h * s / w)), s)
    else:
        raise ImageError(f"resize mode {resize['mode']!r} is not 'stretch' or 'shorter'")
    if (th, tw) != (h, w):
        interp = cv2.INTER_AREA if th < h and tw < w else cv2.INTER_LINEAR
        img = cv2.resize(img, (tw, th), interpolation=interp)
    crop = spec.get("crop")
    if crop:
        ch, cw = int(crop[0]), int(crop[1])
        if ch > img.shape[0] or cw > img.shape[1]:
            raise ImageError(f"crop {ch}x{cw} is larger than the resized image {img.shape[0]}x{img.shape[1]}")
        top, left = (img.shape[0] - ch) // 2, (img.shape[1] - cw) // 2
        img = img[top:top + ch, left:left + cw]
    x = img if img.ndim == 3 else img[:, :, None]
    if x.shape != tuple(shape):
        raise ImageError(f"preprocessed image is {x.shape}, the model expects {tuple(shape)}")
    return np.ascontiguousarray(normalize(x, spec))


def normalize(pixels: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """Pixel values (0-255, channels last) to the model's input as its spec says: inverted
    if ``invert``, then ``(x - mean) / std`` per channel, in float32. The one place this rule
    is written: images (load_image), MNIST (sparseinfer.datasets.mnist_inputs) and the
    pruner's inputs all come through here."""
    x = np.asarray(pixels, np.float32)
    if spec.get("invert"):
        x = np.float32(255.0) - x
    mean = np.asarray(spec.get("mean", 0.0), np.float32)
    std = np.asarray(spec.get("std", 1.0), np.float32)
    return ((x - mean) / std).astype(np.float32, copy=False)


def load_image(path: str | os.PathLike, spec: Mapping[str, Any]) -> np.ndarray:
    """read_image + preprocess: one sample ready for Model.predict."""
    return preprocess(read_image(path), spec)
