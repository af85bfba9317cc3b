"""Compact storage of weight matrices (docs/format.md, "Compact storage"; issue 15 item 2).

Encoders used by the writer (sparseinfer.format.write_model, storage "compact"), the NumPy
reference decoder the C loader is tested against, k-means weight sharing, and
``compress``, which rewrites any model file with compact weights:

    sparseinfer.compress("models/lenet5_pruned.npz", "models/lenet5_compressed.npz",
                         values="kmeans:16")

Index streams (flat row-major positions over rows x cols, one matrix per layer):
  delta4 / delta8: symbols of 4 or 8 bits. A symbol s below the filler F = 2^bits - 1 puts
  the next entry s zeros after the cursor and moves the cursor past it; F moves the cursor
  F positions on and places nothing (a filler, Deep Compression's long-gap escape).
  bitmap: one bit per weight, bit i of the flat matrix in byte i // 8, bit i % 8.
Value streams (one value per entry, in index order):
  codebook4 / codebook8: 4- or 8-bit codes into a float32 codebook of at most 16 / 256
  values; float32; int8: int8 values with one float32 scale per output, w = scale * q.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

INDEX_MODES = ("auto", "delta4", "delta8", "bitmap")
VALUE_MODES = ("auto", "float32", "int8", "codebook")  # and "kmeans:K", K in [1, 256]
KMEANS_ITERATIONS = 100


class CompactError(ValueError):
    """Weights or options that cannot be stored compactly."""


# ---- index streams ----------------------------------------------------------------------


def _pack4(sym: np.ndarray) -> np.ndarray:
    """Two 4-bit symbols a byte, the first in the low nibble; an odd count pads with 0."""
    s = np.asarray(sym, dtype=np.uint8)
    if s.size & 1:
        s = np.concatenate([s, np.zeros(1, np.uint8)])
    return (s[0::2] | (s[1::2] << 4)).astype(np.uint8)


def _unpack4(b: np.ndarray, n: int) -> np.ndarray:
    b = np.asarray(b, dtype=np.uint8)
    out = np.empty(2 * b.size, np.uint8)
    out[0::2] = b & 15
    out[1::2] = b >> 4
    return out[:n]


def delta_symbols(pos: np.ndarray, bits: int) -> np.ndarray:
    """The delta symbols (fillers included) of sorted flat positions, as uint8."""
    filler = (1 << bits) - 1
    pos = np.asarray(pos, dtype=np.int64)
    if pos.size == 0:
        return np.zeros(0, np.uint8)
    gaps = np.diff(pos, prepend=-1) - 1
    fill, rest = np.divmod(gaps, filler)
    ends = np.cumsum(fill + 1) - 1  # where each entry's symbol goes
    sym = np.full(int(ends[-1]) + 1, filler, dtype=np.uint8)
    sym[ends] = rest
    return sym


def delta_positions(sym: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of delta_symbols (no validation: the C loader's job; tests hold the two equal)."""
    filler = (1 << bits) - 1
    s = np.asarray(sym, dtype=np.int64)
    step = np.where(s == filler, filler, s + 1)
    cursor_after = np.cumsum(step)
    entry = s != filler
    return cursor_after[entry] - 1


def encode_index(mask: np.ndarray, mode: str = "auto") -> tuple[str, np.ndarray, int | None]:
    """(index mode, packed uint8 stream, symbol count or None for bitmap) of a boolean
    matrix; mode "auto" takes the smallest stream (ties: delta4, delta8, bitmap)."""
    if mode not in INDEX_MODES:
        raise CompactError(f"index must be one of {INDEX_MODES}, got {mode!r}")
    flat = np.asarray(mask, dtype=bool).ravel()
    pos = np.flatnonzero(flat)
    cands = []
    if mode in ("auto", "delta4"):
        s = delta_symbols(pos, 4)
        cands.append(("delta4", _pack4(s), int(s.size)))
    if mode in ("auto", "delta8"):
        s = delta_symbols(pos, 8)
        cands.append(("delta8", s, int(s.size)))
    if mode in ("auto", "bitmap"):
        cands.append(("bitmap", np.packbits(flat, bitorder="little"), None))
    return min(cands, key=lambda c: c[1].size)


def index_positions(mode: str, stream: np.ndarray, symbols: int | None, total: int) -> np.ndarray:
    if mode == "bitmap":
        return np.flatnonzero(np.unpackbits(np.asarray(stream, np.uint8), bitorder="little")[:total])
    if mode == "delta4":
        return delta_positions(_unpack4(stream, int(symbols)), 4)
    if mode == "delta8":
        return delta_positions(stream, 8)
    raise CompactError(f"unknown index mode {mode!r}")


# ---- values ---------------------------------------------------------------------------


def kmeans_1d(values: np.ndarray, k: int, iterations: int = KMEANS_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Plain k-means on scalars as in Deep Compression: k centroids spaced linearly over
    [min, max], then Lloyd iterations (assign to the nearest, move to the mean; an empty
    cluster keeps its centroid). Deterministic. Returns (float32 codebook, int codes)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return np.zeros(1, np.float32), np.zeros(0, np.int64)
    c = np.linspace(v.min(), v.max(), k)
    order = np.argsort(v, kind="stable")
    vs = v[order]
    for _ in range(iterations):
        edges = (c[1:] + c[:-1]) / 2
        lab = np.searchsorted(edges, vs)
        cnt = np.bincount(lab, minlength=k)
        s = np.bincount(lab, weights=vs, minlength=k)
        new = np.where(cnt > 0, s / np.maximum(cnt, 1), c)
        if np.array_equal(new, c):
            break
        c = np.sort(new)
    book = np.unique(c.astype(np.float32))  # sorted; centroids equal in float32 merge
    return book, _nearest(v, book)


def _nearest(v: np.ndarray, book: np.ndarray) -> np.ndarray:
    """Index of the nearest value of a sorted codebook to each of v."""
    b = book.astype(np.float64)
    return np.searchsorted((b[1:] + b[:-1]) / 2, np.asarray(v, np.float64)).astype(np.int64)


def parse_values(values: str) -> tuple[str, int | None]:
    if values in VALUE_MODES:
        return values, None
    if isinstance(values, str) and values.startswith("kmeans:"):
        try:
            k = int(values[7:])
        except ValueError:
            k = 0
        if 1 <= k <= 256:
            return "kmeans", k
    raise CompactError(f"values must be one of {VALUE_MODES} or kmeans:K with K in [1, 256], got {values!r}")


def encode_compact(lname: str, W: np.ndarray, values: str = "auto", index: str = "auto",
                   prefix: str | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """(manifest weight object, members) of a float32 matrix in compact storage."""
    W = np.asarray(W, dtype=np.float32)
    if W.ndim != 2:
        raise CompactError(f"layer {lname!r}: W must be 2-D, got {W.shape}")
    rows, cols = W.shape
    prefix = prefix or f"{lname}.W"
    kind, k = parse_values(values)
    members: dict[str, np.ndarray] = {}
    if kind == "int8":
        amax = np.abs(W).max(axis=1)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(W / scale[:, None]), -127, 127).astype(np.int8)
        mask = q != 0  # weights that round to 0 leave the pattern
        members[prefix + ".q"] = q[mask]
        members[prefix + ".scale"] = scale
        vmode = "int8"
    else:
        mask = W != 0
        nz = W[mask]
        uniq = np.unique(nz)
        if kind == "auto":
            kind = "codebook" if uniq.size <= 256 else "float32"
        if kind == "kmeans" and uniq.size <= k:
            kind = "codebook"  # already shares k values or fewer: store them exactly
        if kind == "codebook":
            if uniq.size > 256:
                raise CompactError(f"layer {lname!r}: {uniq.size} distinct non-zero values, a codebook holds 256 "
                                   f"(use values='kmeans:K' to cluster them, or 'float32')")
            book = uniq if uniq.size else np.zeros(1, np.float32)
            codes = np.searchsorted(book, nz)
        elif kind == "kmeans":
            book, codes = kmeans_1d(nz, k)
        else:
            book = codes = None
        if book is None:
            members[prefix + ".values"] = nz
            vmode = "float32"
        else:
            bits = 4 if book.size <= 16 else 8
            codes = codes.astype(np.uint8)
            members[prefix + ".codes"] = _pack4(codes) if bits == 4 else codes
            members[prefix + ".codebook"] = np.asarray(book, np.float32)
            vmode = f"codebook{bits}"
    imode, stream, symbols = encode_index(mask, "auto" if index == "auto" else
                                         {"4": "delta4", "8": "delta8"}.get(index, index))
    members[prefix + ".index"] = stream
    entry: dict[str, Any] = {"format": "compact", "prefix": prefix, "shape": [int(rows), int(cols)],
                             "nnz": int(mask.sum()), "index": imode}
    if symbols is not None:
        entry["symbols"] = symbols
    entry["values"] = vmode
    return entry, members


def decode_compact(entry: Mapping[str, Any], get: Any) -> np.ndarray:
    """The dense float32 matrix of a compact weight: the reference decoder (NumPy) the C
    loader is tested against. ``get(name)`` returns a member array."""
    p = entry["prefix"]
    rows, cols = (int(v) for v in entry["shape"])
    nnz = int(entry["nnz"])
    pos = index_positions(entry["index"], get(p + ".index"), entry.get("symbols"), rows * cols)
    vm = entry["values"]
    if vm.startswith("codebook"):
        raw = get(p + ".codes")
        codes = _unpack4(raw, nnz) if vm == "codebook4" else np.asarray(raw)
        vals = np.asarray(get(p + ".codebook"), np.float32)[codes.astype(np.int64)]
    elif vm == "int8":
        r = pos // cols
        vals = np.asarray(get(p + ".scale"), np.float32)[r] * np.asarray(get(p + ".q")).astype(np.float32)
    else:
        vals = np.asarray(get(p + ".values"), np.float32)
    W = np.zeros(rows * cols, np.float32)
    W[pos] = vals
    return W.reshape(rows, cols)


# ---- whole files ----------------------------------------------------------------------


def read_model_layers(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """The manifest and write_model's layer dicts of any model file: float weights (dense,
    CSR or compact) as dense float32 matrices; int8 layers as their int8 weights, int32 bias
    and quant parameters."""
    from .format import read_manifest
    manifest = read_manifest(path)
    layers = []
    with np.load(path, allow_pickle=False) as z:
        for e in manifest["layers"]:
            d = {k: v for k, v in e.items() if k not in ("weight", "bias", "quant", "filters", "units")}
            if e["type"] in ("conv2d", "dense"):
                w = e["weight"]
                if w["format"] == "dense":
                    W = np.array(z[w["array"]])
                elif w["format"] == "csr":
                    p = w["prefix"]
                    rows, cols = (int(v) for v in z[p + ".shape"])
                    data = z[p + ".data"]
                    W = np.zeros((rows, cols), data.dtype)
                    ptr = z[p + ".indptr"].astype(np.int64)
                    W[np.repeat(np.arange(rows), np.diff(ptr)), z[p + ".indices"].astype(np.int64)] = data
                else:
                    W = decode_compact(w, lambda n: z[n])
                d["W"] = W
                q = e.get("quant")
                if q:
                    d["quant"] = {"input": (q["input"]["scale"], q["input"]["zero_point"]),
                                  "output": None if q.get("output") is None else
                                  (q["output"]["scale"], q["output"]["zero_point"]),
                                  "weight_scale": np.array(z[q["weight_scale"]])}
                d["b"] = None if e.get("bias") is None else np.array(z[e["bias"]])
            layers.append(d)
    return manifest, layers


def compress(in_path: str | os.PathLike, out_path: str | os.PathLike, values: str = "auto", index: str = "auto",
             zlib: bool = True) -> dict:
    """Rewrite a model file with every float conv2d/dense weight in compact storage (int8
    "quant" layers are copied as they are). ``values``: ``auto`` (a lossless codebook when a
    layer's non-zeros take at most 256 distinct values, else float32: never lossy unless
    asked), ``float32``, ``codebook`` (lossless, or an error), ``int8`` (a symmetric scale
    per output; lossy) or ``kmeans:K`` (K shared values by plain k-means; lossy).
    ``index``: ``auto`` (the smallest of delta4, delta8 and bitmap per layer) or one of them
    (``4``, ``8`` also accepted). ``zlib``: deflate the ZIP members. Returns a report: per
    layer the storage chosen and its bytes before (in in_path) and after."""
    from .format import same_file, write_model
    from .storage import file_streams
    parse_values(values)
    if same_file(in_path, out_path):
        raise CompactError(f"{out_path}: this is the model being compressed; write the compact model to another "
                           "file")
    if index not in INDEX_MODES + ("4", "8"):
        raise CompactError(f"index must be one of {INDEX_MODES + ('4', '8')}, got {index!r}")
    manifest, layers = read_model_layers(in_path)
    for L in layers:
        if L["type"] in ("conv2d", "dense") and not L.get("quant"):
            L["storage"] = "compact"
    out = write_model(out_path, layers, manifest["input"], manifest.get("classes"), name=manifest.get("name", "model"),
                      compact={"values": values, "index": index}, deflate=zlib)
    before, after = file_streams(os.fspath(in_path)), file_streams(os.fspath(out_path))
    report = []
    for e in out["layers"]:
        if e["type"] not in ("conv2d", "dense"):
            continue
        w = e["weight"]
        storage = (f"compact {w['index']} {w['values']}" if w["format"] == "compact" else w["format"])
        report.append({"name": e["name"], "storage": storage, "nnz": w.get("nnz"),
                       "bytes_before": before["layers"].get(e["name"], {}).get("bytes", 0),
                       "bytes_after": after["layers"].get(e["name"], {}).get("bytes", 0)})
    return {"in": os.fspath(in_path), "out": os.fspath(out_path), "values": values, "index": index, "zlib": zlib,
            "layers": report, "file_bytes_before": os.path.getsize(in_path),
            "file_bytes_after": os.path.getsize(out_path)}
