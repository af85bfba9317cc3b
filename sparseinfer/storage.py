"""Where a model file's bytes go (issue 15 item 3): per layer and per stream (ZIP member),
the bytes each takes in the file (deflated size where deflated) and its .npy size, the
ZIP container's own bytes, and the size of the same model written dense float32.

"Dense fp32 file": the exact size numpy.savez writes for this model with every conv2d and
dense weight a dense float32 matrix, every bias float32 and the manifest rewritten to match
(version 1.0, no quant); computed by writing that file to a byte counter (no memory held,
no disk written). For models/lenet5.npz it equals the file's own size.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

import numpy as np


class _ByteCounter(io.RawIOBase):
    """A seekable sink that keeps only its size (zipfile seeks back to patch headers)."""

    def __init__(self) -> None:
        self.pos = 0
        self.size = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = memoryview(b).nbytes
        self.pos += n
        self.size = max(self.size, self.pos)
        return n

    def tell(self) -> int:
        return self.pos

    def seek(self, off: int, whence: int = 0) -> int:
        self.pos = off if whence == 0 else self.pos + off if whence == 1 else self.size + off
        return self.pos

    def flush(self) -> None:
        pass


def _zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of zeros of any shape holding 4 bytes (a broadcast view)."""
    return np.broadcast_to(np.zeros(1, np.float32).reshape((1,) * len(shape)), shape)


def _weight_shape(e: dict, z: Any) -> tuple[int, int]:
    w = e["weight"]
    if w["format"] == "dense":
        return tuple(int(v) for v in z[w["array"]].shape)  # type: ignore[return-value]
    if w["format"] == "csr":
        return tuple(int(v) for v in z[w["prefix"] + ".shape"])  # type: ignore[return-value]
    return int(w["shape"][0]), int(w["shape"][1])


def _layer_members(e: dict) -> tuple[list[str], list[str]]:
    """(exact member names, member name prefixes) of a weighted layer."""
    w = e.get("weight") or {}
    exact, prefixes = [], []
    if w.get("format") == "dense":
        exact.append(w["array"])
    elif w.get("prefix"):
        prefixes.append(w["prefix"] + ".")
    if e.get("bias"):
        exact.append(e["bias"])
    if (e.get("quant") or {}).get("weight_scale"):
        exact.append(e["quant"]["weight_scale"])
    return exact, prefixes


def dense_fp32_bytes(path: str) -> int:
    """The size of this model as numpy.savez writes it dense float32 (see the module doc)."""
    from .format import read_manifest
    man = read_manifest(path)
    arrays: dict[str, np.ndarray] = {}
    layers = []
    with np.load(path, allow_pickle=False) as z:
        for e in man["layers"]:
            e = dict(e)
            if e["type"] in ("conv2d", "dense"):
                rows, cols = _weight_shape(e, z)
                arrays[f"{e['name']}.W"] = _zeros((rows, cols))
                e["weight"] = {"format": "dense", "array": f"{e['name']}.W"}
                if e.get("bias"):
                    arrays[f"{e['name']}.b"] = _zeros((rows,))
                    e["bias"] = f"{e['name']}.b"
                e.pop("quant", None)
            layers.append(e)
    dense_man = {**man, "version": [1, 0], "layers": layers}
    arrays["model.json"] = np.frombuffer(json.dumps(dense_man, indent=1).encode("utf-8"), dtype=np.uint8)
    sink = _ByteCounter()
    np.savez(sink, **arrays)
    return sink.size


def file_streams(path: str, dense: bool = False) -> dict:
    """Per layer: its members ("streams"), each with the bytes it takes in the file
    (``bytes``: the ZIP member's compressed size, its .npy header included), its .npy size
    (``npy_bytes``) and whether it is deflated; the layer's total. Also the manifest's and
    the ZIP container's bytes (headers and directory), the file size and, with dense=True,
    the dense fp32 size and the ratio file / dense."""
    from .format import read_manifest
    man = read_manifest(path)
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i for i in zf.infolist()}
    claimed: set[str] = set()
    layers: dict[str, dict] = {}
    for e in man["layers"]:
        if e["type"] not in ("conv2d", "dense"):
            continue
        exact, prefixes = _layer_members(e)
        names = [n for n in infos if n in exact or any(n.startswith(p) for p in prefixes)]
        streams = {}
        for n in sorted(names):
            i = infos[n]
            claimed.add(n)
            streams[n] = {"bytes": i.compress_size, "npy_bytes": i.file_size,
                          "deflated": i.compress_type == zipfile.ZIP_DEFLATED}
        w = e["weight"]
        storage = (f"compact {w['index']} {w['values']}" if w["format"] == "compact" else w["format"])
        if e.get("quant"):
            storage += " int8"
        layers[e["name"]] = {"storage": storage, "bytes": sum(s["bytes"] for s in streams.values()),
                             "streams": streams}
    size = os.path.getsize(path)
    members = sum(i.compress_size for i in infos.values())
    other = {n: infos[n].compress_size for n in infos if n not in claimed}
    out: dict[str, Any] = {"file_bytes": size, "version": man.get("version"), "layers": layers,
                           "other_members": other, "container_bytes": size - members}
    if dense:
        d = dense_fp32_bytes(path)
        out["dense_fp32_bytes"] = d
        out["ratio_to_dense_fp32"] = d / size if size else 0.0
    return out


def format_streams(s: dict) -> str:
    """The table `sparseinfer info` prints of file_streams(path, dense=True)."""
    lines = [f"{'layer':<14}{'storage':<30}{'stream':<24}{'bytes':>12}{'.npy bytes':>12}"]
    lines.append("-" * len(lines[0]))
    for name, L in s["layers"].items():
        first = True
        for n, st in L["streams"].items():
            lines.append(f"{name if first else '':<14}{L['storage'] if first else '':<30}{n:<24}{st['bytes']:>12,}"
                         f"{st['npy_bytes']:>12,}{'  deflated' if st['deflated'] else ''}")
            first = False
        lines.append(f"{'':<14}{'':<30}{'= layer':<24}{L['bytes']:>12,}")
    for n, b in s["other_members"].items():
        lines.append(f"{'':<14}{'':<30}{n:<24}{b:>12,}")
    lines.append(f"{'':<14}{'':<30}{'ZIP headers':<24}{s['container_bytes']:>12,}")
    lines.append(f"file {s['file_bytes']:,} B (format {'.'.join(map(str, s['version'] or []))}); dense fp32 file "
                 f"{s['dense_fp32_bytes']:,} B: {s['ratio_to_dense_fp32']:.1f}x smaller")
    return "\n".join(lines)
