#!/usr/bin/env python
"""How much error larger int16 Winograd tiles would add to an int8 3x3 convolution.

    python bench/wino_int16_error.py [--channels 256] [--json PATH]

The runtime's int16 Winograd (kernels/conv/si_conv_wino_i16.c) stops at F(4x4, 3x3) because
that is the largest tile it can compute exactly: F(4x4)'s transformed input of uint8 data
stays within 25,500 and its transformed filters within 6,223, so int16 holds both. Larger
tiles need fewer products per output (F(6x6): 64 per 36 outputs, F(7x7): 81 per 49, against
F(4x4)'s 36 per 16), but their transformed input grows past int16. The only way to run them
on int16 multiplies (vpmaddwd, the AVX2 path) is approximate:

  - V = B^T d B in integers (B scaled to integers), then shifted right per tile position by
    the least amount that keeps the worst case over uint8 inputs within int16, rounded;
  - U = G g G^T rounded per (tile position, filter) to |U| <= UMAX: 4095 leaves int32 room
    for the sums of 16 channels (a flush to a wider sum every 8 channel pairs), 32767 is the
    best int16 could do at all;
  - the sums and the output transform exact (float64 here), so only those two roundings
    count.

Each form's conv sums are compared with the exact integer convolution of the same uint8
input and int8 filters (post-ReLU-like input: half zeros, the rest |N(0, 60)| clipped to 255;
filters N(0, 40) clipped to [-127, 127]). The error's standard deviation is given over the
standard deviation the int8 model's own input quantization already adds to the same sums
(the convolution of uniform +-0.5 LSB noise): 1.0 doubles that noise's power.

The points are the usual ones (Lavin and Gray for F(4x4); 0, +-1, +-1/2, +-2 for F(6x6);
those and one of 3, 1/3 or -1/3 for F(7x7)); the matrices are built by Toom-Cook from the
points, exactly in fractions, and checked against the direct convolution.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from fractions import Fraction as Fr

import numpy as np


def _polymul(a, b):
    out = [Fr(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def winograd_matrices(m: int, r: int, points: list[Fr]):
    """A^T (m x n), G (n x r), B^T (n x n) of F(m, r) for the n - 1 finite points and infinity,
    as exact fractions (Toom-Cook, as wincnn builds them)."""
    n = m + r - 1
    if len(points) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} finite points, got {len(points)}")
    at = [[p ** i for p in points] + [Fr(0)] for i in range(m)]
    at[m - 1][n - 1] = Fr(1)
    g = []
    for p in points:
        f = Fr(1)
        for q in points:
            if q != p:
                f *= p - q
        g.append([p ** k / f for k in range(r)])
    g.append([Fr(0)] * (r - 1) + [Fr(1)])
    bt = []
    for p in points + [None]:
        poly = [Fr(1)]
        for q in points:
            if q != p:
                poly = _polymul(poly, [-q, Fr(1)])
        bt.append(poly + [Fr(0)] * (n - len(poly)))
    return at, g, bt


def _f64(mat):
    return np.array([[float(x) for x in row] for row in mat])


def check_matrices(at, g, bt, m: int, r: int) -> float:
    """max |Winograd - direct| on random float64 data (about 1e-15 when the matrices hold)."""
    at, g, bt = _f64(at), _f64(g), _f64(bt)
    rng = np.random.default_rng(1)
    d, w = rng.standard_normal(m + r - 1), rng.standard_normal(r)
    ref = np.array([np.dot(d[i:i + r], w) for i in range(m)])
    return float(np.abs(at @ ((g @ w) * (bt @ d)) - ref).max())


def error_over_quantization_noise(m: int, points: list[Fr], umax: int, channels: int, filters: int = 32,
                                  tiles: int = 3, seed: int = 0) -> dict:
    at, g, bt = winograd_matrices(m, 3, points)
    err = check_matrices(at, g, bt, m, 3)
    if err > 1e-9:
        raise AssertionError(f"F({m}x{m}) matrices wrong: max error {err:.2e} against the direct form")
    n = m + 2
    den = math.lcm(*[x.denominator for row in bt for x in row])  # B scaled to integers
    bi = np.array([[float(x * den) for x in row] for row in bt])
    at, g = _f64(at), _f64(g)
    # worst case of each position of V over uint8 inputs, and the shift that keeps it in int16
    p = np.einsum("ik,jl->ijkl", bi, bi).reshape(n, n, -1)
    worst = np.maximum(np.clip(p, 0, None).sum(-1), np.clip(-p, 0, None).sum(-1)) * 255
    shift = np.zeros((n, n), int)
    while (np.round(worst / 2.0 ** shift) > 32767).any():
        shift += np.round(worst / 2.0 ** shift) > 32767
    rng = np.random.default_rng(seed)
    side = m * tiles + 2
    x = np.maximum(rng.standard_normal((side, side, channels)) * 60, 0).round().clip(0, 255)
    w = np.round(rng.standard_normal((filters, 3, 3, channels)) * 40).clip(-127, 127)
    exact = np.zeros((m * tiles, m * tiles, filters))
    for i in range(3):
        for j in range(3):
            exact += np.einsum("hwc,fc->hwf", x[i:i + m * tiles, j:j + m * tiles], w[:, i, j, :])
    u = np.einsum("ai,fijc,bj->abfc", g, w, g)
    scale = umax / np.abs(u).max(-1, keepdims=True)
    uq = np.round(u * scale)
    out = np.zeros_like(exact)
    for ty in range(tiles):
        for tx in range(tiles):
            d = x[m * ty:m * ty + n, m * tx:m * tx + n]
            vq = np.round(np.einsum("ak,klc,bl->abc", bi, d, bi) / 2.0 ** shift[..., None])
            assert np.abs(vq).max() <= 32767
            mm = np.einsum("abc,abfc->abf", vq, uq) * (2.0 ** shift)[..., None] / scale[..., 0] / den ** 2
            out[m * ty:m * ty + m, m * tx:m * tx + m] = np.einsum("ia,abf,jb->ijf", at, mm, at)
    noise = 0.5 / math.sqrt(3) * np.sqrt((w ** 2).sum((1, 2, 3))).mean()
    return {"tile": m, "points": [str(q) for q in points], "umax": umax, "channels": channels,
            "products_per_output": n * n / (m * m), "max_shift": int(shift.max()),
            "error_over_quantization_noise": float((out - exact).std() / noise),
            "added_noise_db": float(10 * math.log10(1 + ((out - exact).std() / noise) ** 2))}


FORMS = [(4, [0, 1, -1, 2, -2]),
         (6, [0, 1, -1, Fr(1, 2), Fr(-1, 2), 2, -2]),
         (7, [0, 1, -1, Fr(1, 2), Fr(-1, 2), 2, -2, 3]),
         (7, [0, 1, -1, Fr(1, 2), Fr(-1, 2), 2, -2, Fr(1, 3)]),
         (7, [0, 1, -1, Fr(1, 2), Fr(-1, 2), 2, -2, Fr(-1, 3)])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=256, help="input channels (default 256, VGG19's block 3)")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    rows = []
    print(f"{'tile':<8}{'points':<34}{'|U| max':>8}{'products/out':>14}{'V shift':>9}{'error/noise':>13}{'+noise dB':>11}")
    for m, pts in FORMS:
        for umax in (4095, 32767):
            r = error_over_quantization_noise(m, [Fr(p) for p in pts], umax, a.channels)
            rows.append(r)
            print(f"F({m}x{m})  {', '.join(r['points']):<34}{umax:>8}{r['products_per_output']:>14.3f}"
                  f"{r['max_shift']:>9}{r['error_over_quantization_noise']:>13.3f}{r['added_noise_db']:>11.2f}", flush=True)
    print("error/noise: the error's std over that of the input's own int8 quantization noise in the same sums;\n"
          "+noise dB: how much that raises the layer's input-quantization noise power.\n"
          "F(4x4) as the runtime runs it is exact (U within int16 unrounded, V exact): error 0.")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"channels": a.channels, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
