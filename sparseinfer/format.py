"""Writer of the sparseinfer model file (see docs/format.md).

The runtime's reader is in C (kernels/si_loader.c). This module only writes, plus the two
small helpers that both the writer and the pruner need: kernel layout conversion and CSR.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

FORMAT_NAME = "sparseinfer-model"
FORMAT_VERSION = (1, 0)
# Files with int8 layers (a "quant" key, issue 12): a reader of 1.x cannot run them, so they
# carry the next major version; float files stay 1.0 for older runtimes.
FORMAT_VERSION_INT8 = (2, 0)
# Files with compact weights or deflated members (issue 15): readers before 2.1 would refuse
# them with a less helpful message, so the minor says so.
FORMAT_VERSION_COMPACT = (2, 1)

LAYER_TYPES = ("conv2d", "dense", "maxpool2d", "relu", "softmax", "flatten")
ACTIVATIONS = ("linear", "relu", "softmax")
STORAGE = ("auto", "dense", "csr", "compact")


class ModelFormatError(ValueError):
    """A model description that cannot be written as a valid model file."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether paths a and b name one existing file (by device and inode: links and relative
    paths included), for the commands that write a model read from another one."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either one missing
        return False


def conv_kernel_to_matrix(kernel_hwio: np.ndarray) -> np.ndarray:
    """TensorFlow HWIO kernel -> (filters, kh*kw*cin) matrix, one row per filter."""
    k = np.asarray(kernel_hwio, dtype=np.float32)
    if k.ndim != 4:
        raise ModelFormatError(f"conv kernel must be 4-D HWIO, got shape {k.shape}")
    kh, kw, cin, cout = k.shape
    return np.ascontiguousarray(k.reshape(kh * kw * cin, cout).T)


def matrix_to_conv_kernel(matrix: np.ndarray, kh: int, kw: int, cin: int) -> np.ndarray:
    """Inverse of conv_kernel_to_matrix."""
    m = np.asarray(matrix, dtype=np.float32)
    return np.ascontiguousarray(m.T.reshape(kh, kw, cin, m.shape[0]))


# Column indices are stored as uint16 up to this many columns, else int32. The C side's copy
# is SI_FILE_COL16_MAX_COLS in kernels/si_internal.h (tests/test_format_storage.py holds the
# two equal, and the byte counts of both sides).
COL16_MAX_COLS = 65536


def csr_index_dtype(cols: int) -> type:
    return np.uint16 if cols <= COL16_MAX_COLS else np.int32


def dense_to_csr(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical CSR of a 2-D array in the file's compact dtypes: data float32 (int8 for an
    int8 matrix), indices uint16 when the column count allows (else int32), indptr int32
    (int64 past 2^31 - 1)."""
    w = np.asarray(w)
    w = w if w.dtype == np.int8 else w.astype(np.float32)
    if w.ndim != 2:
        raise ModelFormatError(f"CSR needs a 2-D matrix, got shape {w.shape}")
    rows, cols = np.nonzero(w)  # row-major order: rows sorted, columns increasing
    indptr = np.zeros(w.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=indptr[1:])
    index_dtype = csr_index_dtype(w.shape[1])
    ptr_dtype = np.int32 if indptr[-1] < 2**31 else np.int64
    return w[rows, cols], cols.astype(index_dtype), indptr.astype(ptr_dtype)


def csr_bytes(nnz: int, rows: int, cols: int, value_bytes: int = 4) -> int:
    """Bytes of a CSR matrix as written: float32 (or int8: value_bytes 1) values, uint16 (or
    int32) column indices, int32 (or int64) row pointers, and the 2 x int64 shape."""
    index = np.dtype(csr_index_dtype(cols)).itemsize
    ptr = 4 if nnz < 2**31 else 8
    return (value_bytes + index) * nnz + ptr * (rows + 1) + 16


def pair_max(w: np.ndarray) -> int:
    """The largest magnitude of the sum of the positive, or of the negative, weights of a pair
    of inputs (2t, 2t + 1) of one row of int8 w: what vpmaddubsw's int16 sums bound (docs/format.md)."""
    if not w.size:
        return 0
    W = w.astype(np.int32)
    if W.shape[1] % 2:
        W = np.pad(W, ((0, 0), (0, 1)))
    pos = np.maximum(W[:, 0::2], 0) + np.maximum(W[:, 1::2], 0)
    neg = np.maximum(-W[:, 0::2], 0) + np.maximum(-W[:, 1::2], 0)
    return int(max(pos.max(), neg.max()))


def _qparams(lname: str, which: str, v: Any) -> dict:
    """{"scale", "zero_point"} of an activation's uint8 quantization, checked."""
    try:
        scale, zero = float(np.float32(v[0])), int(v[1])
    except (TypeError, ValueError, IndexError) as e:
        raise ModelFormatError(f"layer {lname!r}: quant {which} must be (scale, zero_point), got {v!r}") from e
    if not (np.isfinite(scale) and scale > 0) or not 0 <= zero <= 255 or int(v[1]) != v[1]:
        raise ModelFormatError(f"layer {lname!r}: quant {which} needs a finite scale > 0 and an integer zero point "
                               f"in [0, 255], got {v!r}")
    return {"scale": scale, "zero_point": zero}


def _check_pair(layer: Mapping[str, Any], key: str) -> list[int]:
    v = layer.get(key)
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(isinstance(x, (int, np.integer)) and x > 0 for x in v)):
        raise ModelFormatError(f"layer {layer.get('name')!r}: {key} must be two positive ints, got {v!r}")
    return [int(x) for x in v]


def write_model(path: str | os.PathLike, layers: Sequence[Mapping[str, Any]],
                input_spec: Mapping[str, Any], classes: Iterable[str] | None = None,
                name: str = "model", storage: str = "auto", compact: Mapping[str, str] | None = None,
                deflate: bool = False) -> dict:
    """Write a model file and return its manifest.

    ``layers``: dicts with ``name``, ``type`` and the hyper-parameters of docs/format.md;
    ``conv2d`` and ``dense`` also carry ``W`` (matrix, one row per output; see
    conv_kernel_to_matrix) and ``b`` (bias or None). ``storage``: per weight, ``auto``
    stores CSR where it takes fewer bytes than dense, ``dense``/``csr`` force one; a layer's
    own ``storage`` key overrides it for that layer. ``compact`` storage (float layers only;
    docs/format.md, "Compact storage") takes ``compact={"values": ..., "index": ...}`` (see
    sparseinfer.compact.compress; a layer's own ``compact`` key overrides it). ``deflate``:
    deflate every ZIP member (numpy.savez_compressed). Either makes the file version 2.1.
    The file appears whole or not at all (written to a temporary file, then renamed).
    """
    if storage not in STORAGE:
        raise ModelFormatError(f"storage must be one of {STORAGE}, got {storage!r}")
    arrays: dict[str, np.ndarray] = {}
    out_layers: list[dict] = []
    seen: set[str] = set()
    for i, layer in enumerate(layers):
        lname = str(layer.get("name") or f"layer{i}")
        if lname in seen:
            raise ModelFormatError(f"duplicate layer name {lname!r}")
        seen.add(lname)
        ltype = layer.get("type")
        if ltype not in LAYER_TYPES:
            raise ModelFormatError(f"layer {lname!r}: unknown type {ltype!r} (known: {LAYER_TYPES})")
        entry: dict[str, Any] = {"name": lname, "type": ltype}
        if ltype in ("conv2d", "dense"):
            act = layer.get("activation", "linear")
            if act not in ACTIVATIONS:
                raise ModelFormatError(f"layer {lname!r}: activation {act!r} not in {ACTIVATIONS}")
            quant = layer.get("quant")
            if quant is not None:  # an int8 layer: W int8 in [-127, 127], b int32 (docs/format.md)
                w = np.asarray(layer["W"])
                if w.dtype != np.int8 or w.ndim != 2:
                    raise ModelFormatError(f"layer {lname!r}: an int8 layer's W must be a 2-D int8 array, got "
                                           f"{w.dtype} {w.shape}")
                if w.size and int(w.min()) == -128:
                    raise ModelFormatError(f"layer {lname!r}: int8 weights are symmetric, in [-127, 127]")
            else:
                w = np.asarray(layer["W"], dtype=np.float32)
            if w.ndim != 2:
                raise ModelFormatError(f"layer {lname!r}: W must be 2-D, got {w.shape}")
            if quant is None and not np.isfinite(w).all():
                raise ModelFormatError(f"layer {lname!r}: W has non-finite values")
            if ltype == "conv2d":
                entry["filters"] = int(w.shape[0])
                entry["kernel"] = _check_pair(layer, "kernel")
                entry["strides"] = _check_pair({**layer, "strides": layer.get("strides", [1, 1])}, "strides")
                entry["padding"] = layer.get("padding", "valid")
            else:
                entry["units"] = int(w.shape[0])
            entry["activation"] = act
            nnz = int(np.count_nonzero(w))
            layer_storage = layer.get("storage", storage)
            if layer_storage not in STORAGE:
                raise ModelFormatError(f"layer {lname!r}: storage must be one of {STORAGE}, got {layer_storage!r}")
            use_csr = layer_storage == "csr" or (
                layer_storage == "auto" and csr_bytes(nnz, w.shape[0], w.shape[1], w.itemsize) < w.nbytes)
            key = f"{lname}.W"
            if layer_storage == "compact":
                if quant is not None:
                    raise ModelFormatError(f"layer {lname!r}: an int8 layer cannot have compact storage")
                from .compact import encode_compact
                opts = {**(compact or {}), **layer.get("compact", {})}
                entry["weight"], members = encode_compact(lname, w, opts.get("values", "auto"),
                                                          opts.get("index", "auto"), prefix=key)
                arrays.update(members)
            elif use_csr:
                data, indices, indptr = dense_to_csr(w)
                arrays[key + ".data"] = data
                arrays[key + ".indices"] = indices
                arrays[key + ".indptr"] = indptr
                arrays[key + ".shape"] = np.array(w.shape, dtype=np.int64)
                entry["weight"] = {"format": "csr", "prefix": key}
            else:
                arrays[key] = np.ascontiguousarray(w)
                entry["weight"] = {"format": "dense", "array": key}
            if quant is not None:
                ws = np.asarray(quant["weight_scale"], dtype=np.float32).reshape(-1)
                if ws.shape[0] != w.shape[0] or not (np.isfinite(ws).all() and (ws > 0).all()):
                    raise ModelFormatError(f"layer {lname!r}: weight_scale needs {w.shape[0]} finite values > 0")
                arrays[f"{lname}.W.scale"] = ws
                out_q = quant.get("output")
                if out_q is not None and act == "softmax":
                    raise ModelFormatError(f"layer {lname!r}: a softmax output cannot be quantized")
                entry["quant"] = {"input": _qparams(lname, "input", quant["input"]),
                                  "output": None if out_q is None else _qparams(lname, "output", out_q),
                                  "weight_scale": f"{lname}.W.scale"}
                wr = quant.get("weight_range")
                if wr is not None:  # a claim the reader checks: every |weight| <= weight_range
                    if isinstance(wr, bool) or not isinstance(wr, (int, np.integer)) or not 1 <= wr <= 127:
                        raise ModelFormatError(f"layer {lname!r}: weight_range must be an integer in [1, 127], "
                                               f"got {wr!r}")
                    if w.size and int(np.abs(w.astype(np.int16)).max()) > wr:
                        raise ModelFormatError(f"layer {lname!r}: weights up to {int(np.abs(w.astype(np.int16)).max())}"
                                               f" in magnitude, past its weight_range {int(wr)}")
                    entry["quant"]["weight_range"] = int(wr)
                pm = quant.get("weight_pair_max")
                if pm is not None:  # a claim the reader checks: no pair (2t, 2t + 1) of one sign sums past it
                    if isinstance(pm, bool) or not isinstance(pm, (int, np.integer)) or not 1 <= pm <= 254:
                        raise ModelFormatError(f"layer {lname!r}: weight_pair_max must be an integer in [1, 254], "
                                               f"got {pm!r}")
                    worst = pair_max(w)
                    if worst > pm:
                        raise ModelFormatError(f"layer {lname!r}: a pair of weights of one sign sums to {worst} in "
                                               f"magnitude, past its weight_pair_max {int(pm)}")
                    entry["quant"]["weight_pair_max"] = int(pm)
            b = layer.get("b")
            if b is not None and quant is not None:
                b = np.asarray(b)
                if b.dtype != np.int32 or b.reshape(-1).shape[0] != w.shape[0]:
                    raise ModelFormatError(f"layer {lname!r}: an int8 layer's bias must be {w.shape[0]} int32 values")
                arrays[f"{lname}.b"] = b.reshape(-1)
                entry["bias"] = f"{lname}.b"
            elif b is not None:
                b = np.asarray(b, dtype=np.float32).reshape(-1)
                if b.shape[0] != w.shape[0]:
                    raise ModelFormatError(f"layer {lname!r}: bias has {b.shape[0]} values for {w.shape[0]} outputs")
                arrays[f"{lname}.b"] = b
                entry["bias"] = f"{lname}.b"
            else:
                entry["bias"] = None
        elif ltype == "maxpool2d":
            entry["pool"] = _check_pair(layer, "pool")
            entry["strides"] = _check_pair({**layer, "strides": layer.get("strides", entry["pool"])}, "strides")
            entry["padding"] = layer.get("padding", "valid")
        if entry.get("padding", "valid") not in ("valid", "same"):
            raise ModelFormatError(f"layer {lname!r}: padding must be 'valid' or 'same'")
        out_layers.append(entry)

    spec = dict(input_spec)
    shape = spec.get("shape")
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(int(s) > 0 for s in shape)):
        raise ModelFormatError(f"input shape must be [h, w, c], got {shape!r}")
    spec["shape"] = [int(s) for s in shape]
    c = spec["shape"][2]
    spec.setdefault("color", "gray" if c == 1 else "rgb")
    spec.setdefault("resize", {"mode": "stretch", "size": spec["shape"][:2]})
    spec.setdefault("crop", None)
    for key, default in (("mean", 0.0), ("std", 1.0)):
        v = np.broadcast_to(np.asarray(spec.get(key, default), np.float64), (c,))
        # One value stands for all channels (a flat input may have thousands).
        spec[key] = [float(v[0])] if np.all(v == v[0]) else [float(x) for x in v]
    if any(s == 0 for s in spec["std"]):
        raise ModelFormatError("input std must be non-zero")
    spec.setdefault("invert", False)
    version = FORMAT_VERSION_INT8 if any("quant" in e for e in out_layers) else FORMAT_VERSION
    if deflate or any(e.get("weight", {}).get("format") == "compact" for e in out_layers):
        version = FORMAT_VERSION_COMPACT
    manifest: dict[str, Any] = {"format": FORMAT_NAME, "version": list(version),
                                "name": name, "input": spec, "layers": out_layers}
    if classes is not None:
        manifest["classes"] = [str(s) for s in classes]
    arrays["model.json"] = np.frombuffer(json.dumps(manifest, indent=1).encode("utf-8"), dtype=np.uint8)

    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".sparseinfer-", suffix=".npz", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if deflate else np.savez)(f, **arrays)
        umask = os.umask(0)  # mkstemp made it 0600; give it the mode a plain open() would
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return manifest


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a model file, read with NumPy (no pickle). For tools; the runtime
    reads files with its own C loader."""
    with np.load(path, allow_pickle=False) as z:
        return json.loads(z["model.json"].tobytes().decode("utf-8"))
