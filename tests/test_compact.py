"""Compact storage (docs/format.md, "Compact storage"; issue 15 items 2 and 3).

The C loader's decode is held against the NumPy reference decoder (sparseinfer.compact
.decode_compact) element by element: a dense layer with no bias and a linear activation,
run on unit vectors e_j, returns column j of the weights as the C runtime decoded them
(each output is one product w * 1.0 plus zeros, exact in float32). Whole models must run
bit-identical to their CSR files when the values are lossless.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import sparseinfer
from sparseinfer import cli
from sparseinfer.compact import (CompactError, decode_compact, delta_positions, delta_symbols, encode_compact,
                                 encode_index, index_positions, kmeans_1d, read_model_layers)
from sparseinfer.format import read_manifest, write_model
from sparseinfer.storage import dense_fp32_bytes, file_streams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET = os.path.join(ROOT, "models", "lenet5.npz")
LENET_PRUNED = os.path.join(ROOT, "models", "lenet5_pruned.npz")
LENET_COMPRESSED = os.path.join(ROOT, "models", "lenet5_compressed.npz")
LENET_BYTES = 1_728_192
# Issue 15: models/lenet5_compressed.npz at least 60x fewer bytes than models/lenet5.npz
# (its accuracy bar is in tests/test_gradual.py)
LENET_COMPRESSED_MIN_RATIO = 60.0


def _matrix(rows: int, cols: int, density: float, seed: int = 0, distinct: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    if distinct:
        w = rng.choice(rng.standard_normal(distinct).astype(np.float32), size=(rows, cols))
    mask = rng.random((rows, cols)) < density
    return np.where(mask, w, 0).astype(np.float32)


# ---- the streams in NumPy -------------------------------------------------------------


@pytest.mark.parametrize("bits", [4, 8])
def test_delta_round_trip_with_fillers(bits):
    f = (1 << bits) - 1
    # gaps of 0, F - 1 (the largest one symbol holds), F and 3F + 2 (fillers), a first
    # entry far from 0
    pos = np.cumsum([5 * f + 1, 1, f, f + 1, 3 * f + 3, 1]) - 1
    sym = delta_symbols(pos, bits)
    assert sym.max() <= f
    assert np.array_equal(delta_positions(sym, bits), pos)
    # the fillers: one per full F of a gap
    gaps = np.diff(pos, prepend=-1) - 1
    assert (sym == f).sum() == (gaps // f).sum()
    assert delta_symbols(np.zeros(0, np.int64), bits).size == 0


@pytest.mark.parametrize("mode", ["delta4", "delta8", "bitmap"])
def test_index_modes_round_trip(mode):
    w = _matrix(37, 129, 0.07, seed=3)
    w[5] = 0  # an empty row
    w[-1] = 0  # an empty last row
    got, stream, symbols = encode_index(w != 0, mode)
    assert got == mode
    assert np.array_equal(index_positions(mode, stream, symbols, w.size), np.flatnonzero(w))


def test_auto_index_picks_the_smallest():
    for density, want in ((0.01, "delta8"), (0.1, "delta4"), (0.6, "bitmap")):
        mask = _matrix(64, 512, density, seed=1) != 0
        sizes = {m: encode_index(mask, m)[1].size for m in ("delta4", "delta8", "bitmap")}
        mode = encode_index(mask, "auto")[0]
        assert sizes[mode] == min(sizes.values()), (density, sizes)
        assert mode == want, (density, sizes)


def test_kmeans_is_deterministic_and_linear_init():
    v = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    b1, c1 = kmeans_1d(v, 16)
    b2, c2 = kmeans_1d(v, 16)
    assert np.array_equal(b1, b2) and np.array_equal(c1, c2)
    assert b1.size == 16 and np.all(np.diff(b1) > 0)
    # each value goes to its nearest centroid
    assert np.array_equal(np.abs(v[:, None] - b1[None, :]).argmin(1), c1)
    # Lloyd's iterations only lower the squared error of the linear initialisation
    lin = np.linspace(v.min(), v.max(), 16)
    mse_lin = ((lin[np.abs(v[:, None] - lin[None, :]).argmin(1)] - v) ** 2).mean()
    assert ((b1[c1] - v) ** 2).mean() < 0.7 * mse_lin


def test_value_modes():
    w = _matrix(20, 50, 0.3, seed=4, distinct=12)
    e, m = encode_compact("a", w)  # auto: lossless codebook of 12 values
    assert e["values"] == "codebook4" and m["a.W.codebook"].size == 12
    assert np.array_equal(decode_compact(e, m.__getitem__), w)
    w2 = _matrix(20, 50, 0.3, seed=4)  # 300 distinct values: auto keeps float32
    e, m = encode_compact("a", w2)
    assert e["values"] == "float32"
    assert np.array_equal(decode_compact(e, m.__getitem__), w2)
    with pytest.raises(CompactError, match="distinct non-zero values, a codebook holds 256"):
        encode_compact("a", w2, values="codebook")
    e, m = encode_compact("a", w2, values="kmeans:200")
    assert e["values"] == "codebook8"
    e, m = encode_compact("a", w2, values="int8")
    d = decode_compact(e, m.__getitem__)
    scale = np.abs(w2).max(1, keepdims=True) / 127
    assert np.all(np.abs(d - w2) <= scale / 2 + 1e-7)
    with pytest.raises(CompactError, match="kmeans:K with K in"):
        encode_compact("a", w2, values="kmeans:300")


# ---- the C decode against the reference -----------------------------------------------


def _readout(path: str, rows: int, cols: int, columns: np.ndarray) -> np.ndarray:
    """W[:, columns] as the C runtime decoded it (the layer: dense, linear, no bias)."""
    m = sparseinfer.load(path, plan="nomeasure")
    x = np.zeros((len(columns), 1, 1, cols), np.float32)
    x[np.arange(len(columns)), 0, 0, columns] = 1.0
    return m.predict(x).T


def _check_decode(tmp_path, w: np.ndarray, name: str, columns: np.ndarray | None = None, **opts) -> dict:
    rows, cols = w.shape
    path = str(tmp_path / f"{name}.npz")
    write_model(path, [{"name": name, "type": "dense", "W": w, "b": None, "storage": "compact", "compact": opts}],
                {"shape": [1, 1, cols]}, deflate=True)
    entry = read_manifest(path)["layers"][0]["weight"]
    with np.load(path) as z:
        ref = decode_compact(entry, lambda n: z[n])
    columns = np.arange(cols) if columns is None else columns
    got = _readout(path, rows, cols, columns)
    bad = np.argwhere(got != ref[:, columns])
    assert bad.size == 0, (f"layer {name} ({entry['index']}, {entry['values']}): element "
                           f"[{bad[0][0]}, {columns[bad[0][1]]}] decoded {got[tuple(bad[0])]}, "
                           f"reference {ref[bad[0][0], columns[bad[0][1]]]}")
    return entry


@pytest.mark.parametrize("index", ["4", "8", "bitmap"])
@pytest.mark.parametrize("values", ["auto", "float32", "int8", "kmeans:16", "kmeans:100"])
def test_c_decode_matches_reference(tmp_path, index, values):
    w = _matrix(23, 300, 0.05, seed=7)
    w[3] = 0
    w[7, :] = 0
    w[7, 299] = 1.5  # a long gap then the last column
    w[-1] = 0
    entry = _check_decode(tmp_path, w, "fc", index=index, values=values)
    assert entry["index"] == {"4": "delta4", "8": "delta8"}.get(index, index)
    if values in ("auto", "float32"):
        assert entry["values"] == "float32"


def test_c_decode_edge_layers(tmp_path):
    _check_decode(tmp_path, np.zeros((5, 40), np.float32), "empty")  # all zero: no entries
    _check_decode(tmp_path, _matrix(6, 40, 1.0, seed=2, distinct=9), "full")  # dense: bitmap of ones
    _check_decode(tmp_path, _matrix(1, 1, 1.0, seed=2), "one")
    for i, index in enumerate(("4", "8", "bitmap")):
        w = np.zeros((3, 70000), np.float32)  # cols > 65536
        w[0, 0], w[0, 69999], w[1, 65536], w[2, 40000] = 1.0, -2.0, 3.0, 4.0
        cols = np.array([0, 1, 40000, 65535, 65536, 65537, 69999])
        entry = _check_decode(tmp_path, w, f"wide{i}", columns=cols, index=index)
        assert entry["nnz"] == 4


def _run(path: str, x: np.ndarray) -> np.ndarray:
    return sparseinfer.load(path, plan="nomeasure", exec="sparse").predict(x)


def test_lossless_model_runs_identical_to_csr(tmp_path):
    out = tmp_path / "c.npz"
    r = sparseinfer.compress(LENET_PRUNED, out)
    assert all(l["storage"].startswith("compact") for l in r["layers"])
    x = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    assert np.array_equal(_run(LENET_PRUNED, x), _run(str(out), x))
    assert read_manifest(out)["version"] == [2, 1]
    # the weights read back are the CSR file's exactly
    _, a = read_model_layers(LENET_PRUNED)
    _, b = read_model_layers(out)
    for la, lb in zip(a, b):
        if "W" in la:
            assert np.array_equal(la["W"], lb["W"]), la["name"]


def test_compress_twice_and_no_zlib(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    sparseinfer.compress(LENET_PRUNED, a, values="kmeans:16")
    sparseinfer.compress(a, b, zlib=False)  # a compact file is a model file like any other
    s = file_streams(str(b))
    assert not any(st["deflated"] for L in s["layers"].values() for st in L["streams"].values())
    x = np.random.default_rng(1).random((4, 28, 28, 1), dtype=np.float32)
    assert np.array_equal(_run(str(a), x), _run(str(b), x))


# ---- reporting and the shipped file ---------------------------------------------------


def test_dense_fp32_bytes_is_the_dense_file():
    assert dense_fp32_bytes(LENET) == os.path.getsize(LENET) == LENET_BYTES


def test_info_reports_streams(tmp_path, capsys):
    out = tmp_path / "c.npz"
    assert cli.main(["compress", LENET_PRUNED, str(out), "--values", "kmeans:16"]) == 0
    text = capsys.readouterr().out
    assert "compact delta4 codebook4" in text and "x smaller" in text
    assert cli.main(["info", "--json", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    st = info["storage"]
    size = os.path.getsize(out)
    assert st["file_bytes"] == size
    members = sum(s["bytes"] for L in st["layers"].values() for s in L["streams"].values())
    assert members + sum(st["other_members"].values()) + st["container_bytes"] == size
    assert st["ratio_to_dense_fp32"] == pytest.approx(st["dense_fp32_bytes"] / size)
    assert set(st["layers"]["fc1"]["streams"]) == {"fc1.W.index", "fc1.W.codes", "fc1.W.codebook", "fc1.b"}
    assert cli.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fc1.W.codes" in text and "deflated" in text and "dense fp32 file" in text


def test_shipped_compressed_lenet5():
    man = read_manifest(LENET_COMPRESSED)
    assert man["version"] == [2, 1]
    assert all(L["weight"]["format"] == "compact" and L["weight"]["values"] == "codebook4"
               for L in man["layers"] if "weight" in L)
    size = os.path.getsize(LENET_COMPRESSED)
    assert LENET_BYTES / size >= LENET_COMPRESSED_MIN_RATIO, f"{LENET_BYTES / size:.1f}x"
    m = sparseinfer.load(LENET_COMPRESSED, plan="nomeasure")
    assert m.output_size == 10
    # the C runtime's layer info: storage "compact" (it said "csr", the form it runs), and its
    # bytes the streams' data (index, codes, codebook) plus the float32 bias, not a CSR estimate
    with np.load(LENET_COMPRESSED, allow_pickle=False) as z:
        for L, info in zip([L for L in man["layers"] if "weight" in L], [l for l in m.layers() if l["weight_shape"]]):
            pre = L["weight"]["prefix"]
            data = sum(z[k].nbytes for k in z.files if k.startswith(pre + "."))
            bias = 4 * info["weight_shape"][0] if L.get("bias") else 0
            assert (info["name"], info["storage"], info["bytes"]) == (L["name"], "compact", data + bias), (info, data)


def test_bad_options(tmp_path):
    with pytest.raises(CompactError, match="values must be one of"):
        sparseinfer.compress(LENET_PRUNED, tmp_path / "x.npz", values="fp16")
    with pytest.raises(CompactError, match="index must be one of"):
        sparseinfer.compress(LENET_PRUNED, tmp_path / "x.npz", index="16")
    copy = tmp_path / "m.npz"
    copy.write_bytes(open(LENET_PRUNED, "rb").read())
    with pytest.raises(CompactError, match="the model being compressed"):
        sparseinfer.compress(copy, str(copy), values="int8")
    assert copy.read_bytes() == open(LENET_PRUNED, "rb").read()
    assert not (tmp_path / "x.npz").exists()


def test_int8_layers_are_copied(tmp_path):
    """compress keeps int8 ("quant") layers as they are and compacts the float ones."""
    x = np.random.default_rng(2).random((8, 28, 28, 1), dtype=np.float32)
    q8, out = str(tmp_path / "q8.npz"), str(tmp_path / "q8c.npz")
    sparseinfer.quantize(LENET_PRUNED, q8, calibration=x, progress=None)
    r = sparseinfer.compress(q8, out)
    kinds = {l["name"]: l["storage"] for l in r["layers"]}
    assert kinds["fc2"].startswith("compact") and kinds["fc1"] == "csr", kinds
    assert np.array_equal(_run(q8, x), _run(out, x))
