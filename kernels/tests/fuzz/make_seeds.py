"""Writes the seed corpora of the fuzz targets (fuzz.sh) into kernels/tests/fuzz/corpus/:

  python kernels/tests/fuzz/make_seeds.py [CORPUS_DIR]

  loader/  every good and bad model file of make_cases.py (the C loader test's cases) of at
           most 64 KB, .npy versions 2.0 and 3.0, and files that declare large layers
           (many rows x columns in CSR with few or no non-zeros: a few KB each, whose dense
           form would be GBs) which the loader must refuse or hold within its memory limit
           and the compact model and its bad cases again with stored members (compact_stored)
  npz/     the same files (the ZIP and .npy reader sees the container alone)
  json/    the manifest of each, and strings the manifest parser must take or refuse

Only seeds whose file is not there yet are written: the arrays come from make_cases.py's
fixed seeds, but ZIP members carry the time they were written, so every generation differs
in a few bytes and rewriting the committed seeds would only churn them (delete a file to
have it written again). Regression seeds (inputs that once crashed a target) are added by
hand as regress_* files.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tempfile
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import make_cases as mc  # noqa: E402  (kernels/tests/make_cases.py)

MAX_SEED = 64 * 1024


def _npy_version(a: np.ndarray, version: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, version=version, allow_pickle=False)
    return buf.getvalue()


def _manifest(layers: list[dict], shape: list[int]) -> bytes:
    return mc.manifest_bytes(json.dumps({"format": "sparseinfer-model", "version": [1, 0], "name": "large",
                                         "input": {"shape": shape}, "layers": layers}))


def _empty_csr(prefix: str, rows: int, cols: int, nnz: int = 0) -> dict[str, bytes]:
    """CSR members of a rows x cols matrix whose nnz non-zeros (0.5) sit in the first row."""
    ptr = np.full(rows + 1, nnz, np.int32)
    ptr[0] = 0
    return {f"{prefix}.data.npy": mc.npy(np.full(nnz, 0.5, np.float32)),
            f"{prefix}.indices.npy": mc.npy(np.arange(nnz, dtype=np.int32) * max(cols // max(nnz, 1), 1)),
            f"{prefix}.indptr.npy": mc.npy(ptr),
            f"{prefix}.shape.npy": mc.npy(np.array([rows, cols], np.int64))}


def large_declared(outdir: str) -> list[str]:
    """Small files declaring large layers (issue 13: fuzzing that reached only small models
    always took the dense path and missed the crash of an empty wide CSR layer)."""
    paths = []

    def write(name: str, members: dict[str, bytes]) -> None:
        paths.append(mc.write_members(os.path.join(outdir, name + ".npz"), members))

    # dense 4096 x 2^24, no non-zeros: dense form 256 GB
    paths.append(mc.wide_empty_csr(os.path.join(outdir, "large_dense_4096x16M_empty.npz"), rows=4096, cols=2 ** 24))
    # dense 2^12 x 2^16 with a bias: dense form 1 GB, past the default limit for a small file
    paths.append(mc.wide_empty_csr(os.path.join(outdir, "large_dense_4096x64K_bias.npz"), rows=4096, cols=2 ** 16,
                                   bias=True))
    # dense 1024 x (2^31 - 1), the widest input the reader takes
    paths.append(mc.wide_empty_csr(os.path.join(outdir, "large_dense_1024x2G_empty.npz"), rows=1024,
                                   cols=2 ** 31 - 1))
    # dense 512 x 4096 with 8 non-zeros, then a small dense layer: loads and runs (8 MB dense)
    m = _empty_csr("wide.W", 512, 4096, nnz=8)
    m["out.W.npy"] = mc.npy(np.full((3, 512), 0.25, np.float32))
    m["model.json.npy"] = _manifest([
        {"name": "flat", "type": "flatten"},
        {"name": "wide", "type": "dense", "units": 512, "activation": "relu",
         "weight": {"format": "csr", "prefix": "wide.W"}, "bias": None},
        {"name": "out", "type": "dense", "units": 3, "activation": "softmax",
         "weight": {"format": "dense", "array": "out.W"}, "bias": None}], [8, 8, 64])
    write("large_dense_512x4096_sparse_runs", m)
    # conv 3x3 of 2048 filters over 256 x 256 x 16, no non-zeros: 2^27 outputs per sample
    m = _empty_csr("conv.W", 2048, 3 * 3 * 16)
    m["model.json.npy"] = _manifest([
        {"name": "conv", "type": "conv2d", "filters": 2048, "kernel": [3, 3], "strides": [1, 1], "padding": "same",
         "activation": "relu", "weight": {"format": "csr", "prefix": "conv.W"}, "bias": None}], [256, 256, 16])
    write("large_conv_2048_empty", m)
    # conv 64 x 64 kernel over 2^12 channels, one filter: 2^24 taps per output (the limit)
    paths.append(mc.conv_empty_csr(os.path.join(outdir, "large_conv_16M_taps.npz")))
    # conv with a few non-zeros, pool, flatten, dense: small enough that the fuzz target runs it
    m = _empty_csr("c.W", 64, 3 * 3 * 8, nnz=5)
    m.update({f"d.{k}": v for k, v in _empty_csr("W", 10, 8 * 8 * 64, nnz=3).items()})
    m["model.json.npy"] = _manifest([
        {"name": "c", "type": "conv2d", "filters": 64, "kernel": [3, 3], "strides": [1, 1], "padding": "same",
         "activation": "relu", "weight": {"format": "csr", "prefix": "c.W"}, "bias": None},
        {"name": "p", "type": "maxpool2d", "pool": [2, 2], "strides": [2, 2], "padding": "valid"},
        {"name": "f", "type": "flatten"},
        {"name": "d", "type": "dense", "units": 10, "activation": "linear",
         "weight": {"format": "csr", "prefix": "d.W"}, "bias": None}], [16, 16, 8])
    write("large_conv_pool_dense_sparse_runs", m)
    return paths


def compact_stored(outdir: str) -> list[str]:
    """The compact model and its bad cases with stored (not deflated) members, so that
    mutations reach the compact decoder's streams rather than dying in inflate; and
    a compact LeNet-5-sized fc layer per index mode."""
    paths = []
    for f in sorted(os.listdir(outdir)):
        if f.endswith(".npz") and (f.startswith("good_compact") or f.startswith("bad_compact")):
            try:
                m = mc.read_members(os.path.join(outdir, f))
            except zipfile.BadZipFile:
                continue
            paths.append(mc.write_members(os.path.join(outdir, "stored_" + f), m))
    rng = np.random.default_rng(15)
    w = np.where(rng.random((40, 300)) < 0.06, rng.standard_normal((40, 300)), 0).astype(np.float32)
    for index, values in (("delta4", "kmeans:16"), ("delta8", "int8"), ("bitmap", "codebook")):
        path = os.path.join(outdir, f"compact_fc_{index}_{values.replace(':', '')}.npz")
        wv = np.round(w * 8) / 8 if values == "codebook" else w
        mc.write_model(path, [{"name": "flat", "type": "flatten"},
                              {"name": "fc", "type": "dense", "W": wv, "b": None, "storage": "compact",
                               "compact": {"index": index, "values": values}}], {"shape": [5, 6, 10]})
        paths.append(path)
    return paths


def npy_versions(outdir: str) -> list[str]:
    """The base model with arrays in .npy versions 2.0 and 3.0 (numpy writes them only for
    huge headers or non-Latin-1 names)."""
    m = mc.read_members(os.path.join(outdir, mc.BASE))
    m["conv1.b.npy"] = _npy_version(mc.get_array(m, "conv1.b"), (2, 0))
    m["fc2.W.npy"] = _npy_version(mc.get_array(m, "fc2.W"), (3, 0))
    return [mc.write_members(os.path.join(outdir, "good_npy_v2_v3.npz"), m)]


JSON_STRINGS = [
    b'{}', b'[]', b'""', b'0', b'-0.0e+0', b'1E400', b'-1e-400', b'123456789012345678901234567890',
    b'"\\u00e9\\u4e2d\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\"\\\\"', b'"\\ud800"', b'"\\udc00"', b'"\\u0000"',
    b'{"a": [1, 2, {"b": null}], "c": true, "d": false}', b'[' * 32 + b']' * 32, b'[' * 33 + b']' * 33,
    b'{"a": 1, "a": 2}', b'[1,]', b'{"a" 1}', b'01', b'1.', b'.5', b'-', b'"\x01"', b'[1 2]', b'nul',
]


def main(corpus: str) -> None:
    for t in ("loader", "npz", "json"):
        os.makedirs(os.path.join(corpus, t), exist_ok=True)

    def add(t: str, name: str, raw: bytes) -> None:
        path = os.path.join(corpus, t, name)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(raw)
    tmp = tempfile.mkdtemp(prefix="si-seeds.")
    try:
        mc.generate(tmp)
        files = sorted(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".npz"))
        files += npy_versions(tmp) + large_declared(tmp) + compact_stored(tmp)
        manifests = {}
        for path in files:
            if not os.path.isfile(path) or os.path.getsize(path) == 0 or os.path.getsize(path) > MAX_SEED:
                continue
            name = os.path.basename(path)
            with open(path, "rb") as f:
                raw = f.read()
            for t in ("loader", "npz"):
                add(t, name, raw)
            try:
                with zipfile.ZipFile(path) as z:
                    raw = np.lib.format.read_array(io.BytesIO(z.read("model.json.npy")), allow_pickle=False).tobytes()
            except (zipfile.BadZipFile, KeyError, ValueError, OSError):
                continue
            if len(raw) <= MAX_SEED:
                manifests.setdefault(raw, name[:-4] + ".json")
        for i, s in enumerate(JSON_STRINGS):
            manifests.setdefault(s, f"text_{i:02d}.json")
        for raw, name in manifests.items():
            add("json", name, raw)
    finally:
        shutil.rmtree(tmp)
    for t in ("loader", "npz", "json"):
        d = os.path.join(corpus, t)
        n = len(os.listdir(d))
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print(f"{t}: {n} seeds, {size} bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus"))
