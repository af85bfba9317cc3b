"""Compact storage: the writer keeps CSR only where it is smaller than dense, with uint16
column indices where the column count allows. With float32 values the break-even is at a
density of 2/3 (uint16 indices) or 1/2 (int32 indices), not the folklore's 5-7x."""
from __future__ import annotations

import numpy as np
import pytest

from sparseinfer.format import csr_bytes, read_manifest, write_model


def _matrix(rows, cols, density, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    mask = np.zeros(w.size, bool)
    mask[rng.choice(w.size, int(round(density * w.size)), replace=False)] = True
    return np.where(mask.reshape(w.shape), w, 0).astype(np.float32)


@pytest.mark.parametrize("cols,break_even", [(1000, 2 / 3), (70000, 1 / 2)])
def test_auto_storage_break_even(tmp_path, cols, break_even):
    rows = 64
    for density, want in ((break_even - 0.03, "csr"), (break_even + 0.03, "dense")):
        w = _matrix(rows, cols, density)
        path = tmp_path / f"m{cols}_{density:.2f}.npz"
        write_model(path, [{"name": "fc", "type": "dense", "W": w, "b": None}], {"shape": [1, 1, cols]})
        got = read_manifest(path)["layers"][0]["weight"]["format"]
        assert got == want, f"cols {cols}, density {density:.2f}: stored {got}, expected {want}"
        nnz = int(np.count_nonzero(w))
        assert (csr_bytes(nnz, rows, cols) < w.nbytes) == (want == "csr")


def test_index_dtypes_and_file_size(tmp_path):
    w = _matrix(256, 4096, 0.04)
    path = tmp_path / "fc.npz"
    write_model(path, [{"name": "fc", "type": "dense", "W": w, "b": None}], {"shape": [1, 1, 4096]})
    with np.load(path, allow_pickle=False) as z:
        assert z["fc.W.indices"].dtype == np.uint16
        assert z["fc.W.indptr"].dtype == np.int32
        assert z["fc.W.data"].size == np.count_nonzero(w)
    nnz = np.count_nonzero(w)
    # 6 bytes per non-zero plus the pointers; the file adds only headers around that.
    assert path.stat().st_size < csr_bytes(nnz, 256, 4096) + 4096
    assert path.stat().st_size < w.nbytes / 10


def test_per_layer_storage_override(tmp_path):
    w = _matrix(32, 32, 0.9)
    path = tmp_path / "o.npz"
    write_model(path, [{"name": "a", "type": "dense", "W": w, "b": None, "storage": "csr"},
                       {"name": "b", "type": "dense", "W": w, "b": None}], {"shape": [1, 1, 32]})
    fmts = [l["weight"]["format"] for l in read_manifest(path)["layers"]]
    assert fmts == ["csr", "dense"]


@pytest.mark.parametrize("cols", [65536, 65537])
def test_python_and_c_agree_on_csr(tmp_path, cols):
    """One rule, two languages: the writer's uint16-column limit is the C side's
    (SI_FILE_COL16_MAX_COLS), the indices the writer stores follow it on both sides of the
    limit, and the bytes `info` reports for a CSR layer are the writer's csr_bytes (+ bias)."""
    import os
    import re

    import sparseinfer
    from sparseinfer.format import COL16_MAX_COLS

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "kernels", "si_internal.h")) as f:
        c_limit = int(re.search(r"#define SI_FILE_COL16_MAX_COLS\s+(\d+)", f.read()).group(1))
    assert c_limit == COL16_MAX_COLS

    rows = 3
    w = _matrix(rows, cols, 0.001, seed=cols)
    b = np.ones(rows, np.float32)
    path = tmp_path / f"c{cols}.npz"
    write_model(path, [{"name": "fc", "type": "dense", "W": w, "b": b, "storage": "csr"}], {"shape": [1, 1, cols]})
    with np.load(path, allow_pickle=False) as z:
        assert z["fc.W.indices"].dtype == (np.uint16 if cols <= COL16_MAX_COLS else np.int32)
    nnz = int(np.count_nonzero(w))
    layer = sparseinfer.load(path).layers()[0]
    assert layer["storage"] == "csr" and layer["nnz"] == nnz
    assert layer["bytes"] == csr_bytes(nnz, rows, cols) + 4 * rows, (layer["bytes"], csr_bytes(nnz, rows, cols))
