"""bench/wino_int16_error.py: its Toom-Cook matrices against the runtime's integer F(4x4, 3x3)
transforms (kernels/conv/si_conv_wino_i16.c) and the direct convolution, and its error
measure on a small problem (NumPy only)."""
from __future__ import annotations

import importlib.util
import os
from fractions import Fraction as Fr

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("wino_int16_error", os.path.join(ROOT, "bench", "wino_int16_error.py"))
wie = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wie)

# si_conv_wino_i16.c: BT6's B^T and G4 = D G, D = diag(4, 6, 6, 24, 24, 1), for points 0, 1, -1, 2, -2
RUNTIME_BT4 = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
RUNTIME_G4 = [[1, 0, 0], [-1, -1, -1], [-1, 1, -1], [1, 2, 4], [1, -2, 4], [0, 0, 1]]


def test_f4_matrices_are_the_runtimes():
    at, g, bt = wie.winograd_matrices(4, 3, [Fr(p) for p in (0, 1, -1, 2, -2)])
    assert [[int(x) for x in row] for row in bt] == RUNTIME_BT4
    d = [4, 6, 6, 24, 24, 1]
    dg = [[x * d[i] for x in row] for i, row in enumerate(g)]
    assert dg == [[Fr(x) for x in row] for row in RUNTIME_G4], dg


def test_matrices_compute_the_convolution():
    for m, pts in ((2, (0, 1, -1)), (4, (0, 1, -1, 2, -2)), (6, (0, 1, -1, Fr(1, 2), Fr(-1, 2), 2, -2))):
        at, g, bt = wie.winograd_matrices(m, 3, [Fr(p) for p in pts])
        err = wie.check_matrices(at, g, bt, m, 3)
        assert err < 1e-12, f"F({m}, 3): max error {err:.2e} against the direct form"


def test_error_grows_with_the_tile_and_shrinks_with_u_bits():
    f = {(m, u): wie.error_over_quantization_noise(m, [Fr(p) for p in pts], u, channels=32, filters=8, tiles=2)
         for m, pts in wie.FORMS[:3] for u in (4095, 32767)}
    ratio = {k: v["error_over_quantization_noise"] for k, v in f.items()}
    assert ratio[(4, 32767)] < ratio[(4, 4095)] and ratio[(6, 32767)] < ratio[(6, 4095)], ratio
    assert ratio[(4, 32767)] < ratio[(6, 32767)] < ratio[(7, 32767)], ratio
    assert f[(4, 32767)]["max_shift"] == 0 and f[(6, 32767)]["max_shift"] == 4 and f[(7, 32767)]["max_shift"] == 8
    assert all(np.isfinite(v) for v in ratio.values())
