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


__all__ = ["load", "quantize", "compress", "export_keras", "Model", "SparseInferError", "cpu", "isa", "int8_isa", "set_isa",
           "__version__"]

# Samples per C call in Model.predict: 64, or 8 for VGG-sized inputs (see _core.pyx). The
# planner times the "batch > 1" regime at the batch the model will mostly run.
_LARGE_INPUT = 50000


def load(path: str | os.PathLike, *, threads: int | None = None, exec: str = "auto",
         sparse: str = "auto", plan: str = "measure", plan_batch: int | None = None,
         cache: str | os.PathLike | None = None, max_memory_bytes: int | None = None,
         max_batch: int | None = None) -> "Model":
    """Load a model file with the C runtime (every file is treated as untrusted).

    ``exec``: ``auto`` lets the planner pick, per layer and batch regime, the fastest
    algorithm it measures on this CPU; ``dense`` / ``sparse`` force one kind everywhere.
    ``sparse``: which sparse kernels: ``auto``/``own`` (the runtime's) or ``mkl``
    (MKL's inspector-executor sparse BLAS).
    ``plan``: ``measure`` (time what the cache lacks), ``nomeasure`` (the cache, else a
    conservative default) or ``remeasure`` (time everything again).
    ``plan_batch``: the batch the "batch > 1" regime is timed at (default: the chunk
    ``predict`` runs, 64, or 8 for inputs over 50,000 values).
    ``cache``: the planner's cache file ("" for none; default: ``$SPARSEINFER_CACHE``, else
    ``~/.cache/sparseinfer/plan.tsv``).
    ``max_memory_bytes``: what the load may allocate, the weights' derived forms included
    (default None: 256 MB + 64 x the file's bytes; a candidate algorithm whose forms would
    pass it is left out of the plan, and a model whose needed forms pass it is refused with
    an error naming the layer).
    ``max_batch``: 1 plans batch 1 alone and holds only the weight forms its algorithms read
    (a larger batch still runs, one sample at a time): the least memory for batch-1 serving
    (VGG19 fp32: 1,390 -> 895 MB loaded; docs/performance.md). None or above 1: any batch."""
    from ._core import Model
    if plan_batch is None:
        plan_batch = _default_plan_batch(os.fspath(path))
    return Model(os.fspath(path), threads=threads, exec=exec, sparse=sparse, plan=plan, plan_batch=plan_batch,
                 cache=None if cache is None else os.fspath(cache), max_memory_bytes=max_memory_bytes,
                 max_batch=max_batch)


def _default_plan_batch(path: str) -> int:
    """predict's chunk for this model's input size, read from the manifest without loading
    weights; 0 (the C default) if the file cannot be read here (the loader will say why)."""
    from .format import read_manifest
    try:
        shape = read_manifest(path)["input"]["shape"]
        n = int(shape[0]) * int(shape[1]) * int(shape[2])
    except Exception:  # noqa: BLE001 - any failure is the C loader's to report
        return 0
    return 8 if n >= _LARGE_INPUT else 64


def quantize(in_path: str | os.PathLike, out_path: str | os.PathLike, calibration: Any, **kwargs: Any) -> dict:
    """Write an int8 copy of a float model file (post-training quantization): weights int8
    per output channel, activations uint8 per tensor, calibrated by running the model on
    ``calibration``, an NHWC float32 batch already preprocessed. No TensorFlow. See
    sparseinfer.quantization.quantize for the options (method, keep_fp32, storage,
    reduce_range)."""
    from .quantization import quantize as _quantize
    return _quantize(os.fspath(in_path), os.fspath(out_path), calibration, **kwargs)


def compress(in_path: str | os.PathLike, out_path: str | os.PathLike, values: str = "auto", index: str = "auto",
             zlib: bool = True) -> dict:
    """Write a compact copy of a model file (docs/format.md, "Compact storage"): per layer
    the smallest of 4-bit deltas, 8-bit deltas and a bitmap for the positions, values as a
    codebook (``auto``: lossless only), ``float32``, ``int8`` or ``kmeans:K`` shared values,
    members deflated with ``zlib``. No TensorFlow. See sparseinfer.compact.compress."""
    from .compact import compress as _compress
    return _compress(in_path, out_path, values=values, index=index, zlib=zlib)


def cpu() -> str:
    """This CPU: vendor, family, model and brand string (the planner's cache key)."""
    from ._core import cpu as _cpu
    return _cpu()


def isa() -> str:
    """The instruction set the kernels use now: "portable", "avx2" or "avx512"."""
    from ._core import isa as _isa
    return _isa()


def int8_isa() -> str:
    """The int8 dot product the dense int8 GEMM uses now, as the ISA cap and
    SPARSEINFER_DISABLE leave it: "avx512_vnni", "avx_vnni", "avx2" (no VNNI: weights
    quantized with reduce_range run twice as fast) or "portable"."""
    from ._core import int8_isa as _int8_isa
    return _int8_isa()


def set_isa(name: str) -> None:
    """Cap the kernels' instruction set for this process ("auto", "portable", "avx2",
    "avx512"); the environment's SPARSEINFER_ISA sets it at start-up."""
    from ._core import set_isa as _set_isa
    _set_isa(name)


def export_keras(model: Any, path: str | os.PathLike, **kwargs: Any) -> dict:
    """Write a Keras model (a chain of Conv2D, Dense, MaxPooling2D, Flatten, ReLU/softmax,
    Dropout) as a model file. See sparseinfer.export.export_keras."""
    from .export import export_keras as _export
    return _export(model, path, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("Model", "SparseInferError"):
        from . import _core
        return getattr(_core, name)
    if name == "__version__":  # the C library's: kernels/sparseinfer.h, the one place it is written
        from ._core import version
        return version()
    raise AttributeError(f"module 'sparseinfer' has no attribute {name!r}")
