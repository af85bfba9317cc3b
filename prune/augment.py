"""Training-time data augmentation for small images (NumPy, seeded, no TensorFlow).

    x_aug = random_shift(x, max_shift=2, rng=np.random.default_rng(seed))

MNIST digits are centred by their centre of mass in a 20x20 box inside 28x28 images, so a
network trained only on the originals learns that exact placement; shifting each training
image by up to ``max_shift`` pixels in x and y (zero fill, which is the background after the
LeNet-5 preprocessing ``x / 255``) is the classic remedy (Simard et al. 2003; LeCun et al.
1998 used distortions to the same end). Validation and test images are never augmented.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["random_shift", "Augment"]


def random_shift(x: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Each image of ``x`` (N, H, W[, C]) moved by its own integer (dy, dx), uniform in
    ``[-max_shift, max_shift]``, with zero fill. Returns a new array; ``x`` is untouched."""
    if isinstance(max_shift, bool) or not isinstance(max_shift, (int, np.integer)) or max_shift < 0:
        raise ValueError(f"max_shift must be a non-negative integer, got {max_shift!r}")
    if x.ndim not in (3, 4):
        raise ValueError(f"random_shift wants images (N, H, W[, C]), got shape {x.shape}")
    n, h, w = x.shape[:3]
    if max_shift == 0 or n == 0:
        return x.copy()
    if max_shift >= min(h, w):
        raise ValueError(f"max_shift {max_shift} must be smaller than the image ({h}x{w})")
    s = int(max_shift)
    pad = [(0, 0), (s, s), (s, s)] + [(0, 0)] * (x.ndim - 3)
    padded = np.pad(x, pad)
    dy = rng.integers(-s, s + 1, size=n)
    dx = rng.integers(-s, s + 1, size=n)
    out = np.empty_like(x)
    # one slice per (dy, dx) pair: (2s+1)^2 vectorised copies instead of N small ones
    for a in range(-s, s + 1):
        for b in range(-s, s + 1):
            idx = np.nonzero((dy == a) & (dx == b))[0]
            if idx.size:
                # output pixel (i, j) reads input pixel (i - a, j - b): the content moves by (a, b)
                out[idx] = padded[idx, s - a:s - a + h, s - b:s - b + w]
    return out


class Augment:
    """What to do to training images each epoch; validated, round-trips through a config.

    ``shift``: maximum translation in pixels (0: none).
    """

    KEYS = ("shift",)

    def __init__(self, shift: int = 0):
        if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 8:
            raise ValueError(f"augment shift must be an integer from 0 to 8, got {shift!r}")
        self.shift = shift

    def __bool__(self) -> bool:
        return self.shift > 0

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return random_shift(x, self.shift, rng) if self.shift else x

    def to_config(self) -> dict:
        return {"shift": self.shift}

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> "Augment":
        if config is None:
            return cls()
        if not isinstance(config, Mapping):
            raise ValueError(f"augment must be an object like {{\"shift\": 2}} or null, got {config!r}")
        unknown = sorted(set(config) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"augment: unknown keys {unknown} (allowed: {list(cls.KEYS)})")
        return cls(**dict(config))

    def __repr__(self) -> str:
        return f"Augment(shift={self.shift})"
