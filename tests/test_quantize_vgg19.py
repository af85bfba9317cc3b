"""int8 VGG19 (issue 12): generated weights (the tests' generator, in a child process with
TensorFlow), quantized on 32 inputs: the int8 logits against the fp32 logits on 8 other
inputs reach at least 25 dB SQNR, and the int8 top-1 is in the fp32 top-5. Full size."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import sparseinfer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from int8_accuracy import VGG19_CHILD, compare_logits  # noqa: E402

pytestmark = pytest.mark.full_size


def test_vgg19_int8_sqnr(tmp_path):
    path = str(tmp_path / "vgg19.npz")
    r = subprocess.run([sys.executable, "-c", VGG19_CHILD, path], cwd=ROOT, capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0, r.stderr
    means = np.array([103.939, 116.779, 123.68], np.float32)
    rng = np.random.default_rng(7)
    xc = rng.random((32, 224, 224, 3), dtype=np.float32) * 255.0 - means
    xe = rng.random((8, 224, 224, 3), dtype=np.float32) * 255.0 - means
    q = str(tmp_path / "vgg19_int8.npz")
    rep = sparseinfer.quantize(path, q, calibration=xc, progress=None)
    assert rep["kept_fp32"] == ["predictions"], rep["kept_fp32"]
    assert os.path.getsize(q) < 0.3 * os.path.getsize(path)
    res = compare_logits(path, q, xe, str(tmp_path))
    assert res["sqnr_db"] >= 25.0, res
    assert res["fp32_top1_in_int8_top5"] == 1.0, res
