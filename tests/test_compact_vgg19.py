"""Compact storage on VGG19 (issue 15 item 3): generated weights pruned to Han et al.'s
profile (bench/compact_sizes.py), stored CSR and compact; the C runtime must run the compact
file bit-identical to the CSR file of the same weights. Widths / 8 in the default run; the
full-size model under the full_size marker."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import sparseinfer
from sparseinfer.compact import read_model_layers
from sparseinfer.format import write_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import compact_sizes  # noqa: E402


def _same_outputs(a: str, b: str, batch: int, exec: str) -> None:
    x = np.random.default_rng(5).random((batch, 224, 224, 3), dtype=np.float32) * 255.0 - 120.0
    ya = sparseinfer.load(a, plan="nomeasure", exec=exec).predict(x)
    yb = sparseinfer.load(b, plan="nomeasure", exec=exec).predict(x)
    bad = np.argwhere(ya != yb)
    assert bad.size == 0, f"{b} vs {a} (exec {exec}): output {tuple(bad[0])} {yb[tuple(bad[0])]} != {ya[tuple(bad[0])]}"


def _check(tmp_path, div: int, batch: int, execs: tuple[str, ...]) -> dict:
    rec = compact_sizes.sizes(div, str(tmp_path), log=lambda m: None)
    assert rec["dense_fp32"] > rec["pruned"] > rec["compact_lossless"] > rec["compact_int8"] > rec["compact_kmeans"]
    pruned, lossless, kmeans = (str(tmp_path / f) for f in ("pruned.npz", "compact_lossless.npz",
                                                             "compact_kmeans.npz"))
    for exec in execs:
        _same_outputs(pruned, lossless, batch, exec)
    # the k-means file against a CSR file of its weights as the NumPy reference decodes them
    man, layers = read_model_layers(kmeans)
    ref = str(tmp_path / "kmeans_as_csr.npz")
    write_model(ref, [dict(L, storage="csr") if "W" in L else L for L in layers], man["input"])
    _same_outputs(ref, kmeans, batch, "sparse")
    return rec


def test_vgg19_narrow_compact_runs_identical(tmp_path):
    rec = _check(tmp_path, 8, 2, ("sparse", "auto"))
    assert rec["dense_fp32"] / rec["compact_kmeans"] > 25


@pytest.mark.full_size
def test_vgg19_full_size_compact_runs_identical(tmp_path):
    # "sparse" only: the default memory limit counts a file's bytes on disk, so the planner may
    # keep fewer dense forms for the 10x smaller compact file than for the CSR one
    rec = _check(tmp_path, 1, 1, ("sparse",))
    assert rec["dense_fp32"] / rec["compact_kmeans"] > 35  # 41.0x measured
