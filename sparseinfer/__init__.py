"""sparseinfer: run pruned CNNs fast on CPUs.

    import sparseinfer
    m = sparseinfer.load("models/lenet5.npz")
    probs = m.predict(x)          # x: NHWC float32 batch

The runtime is a C library (kernels/) on Intel MKL; this package is a thin skin over it.
TensorFlow is only needed to export Keras models (``pip install sparseinfer[prune]``).
"""
from __future__ import annotations

import os
from typing import Any

__version__ = "0.1.0"

__all__ = ["load", "export_keras", "Model", "SparseInferError", "__version__"]


def load(path: str | os.PathLike, *, threads: int | None = None, exec: str = "auto",
         sparse: str = "auto") -> "Model":
    """Load a model file with the C runtime (every file is treated as untrusted).

    ``exec``: ``auto`` lets the runtime choose dense or sparse execution per layer and
    batch regime; ``dense`` / ``sparse`` force one everywhere (for comparisons).
    ``sparse``: which sparse kernels: ``auto``/``own`` (the runtime's) or ``mkl``
    (MKL's inspector-executor sparse BLAS)."""
    from ._core import Model
    return Model(os.fspath(path), threads=threads, exec=exec, sparse=sparse)


def export_keras(model: Any, path: str | os.PathLike, **kwargs: Any) -> dict:
    """Write a Keras model (a chain of Conv2D, Dense, MaxPooling2D, Flatten, ReLU/softmax,
    Dropout) as a model file. See sparseinfer.export.export_keras."""
    from .export import export_keras as _export
    return _export(model, path, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("Model", "SparseInferError"):
        from . import _core
        return getattr(_core, name)
    raise AttributeError(f"module 'sparseinfer' has no attribute {name!r}")
