#!/usr/bin/env python
"""Issue 12's per-layer target: each VGG19 convolution's int8 time over the fp32 im2col GEMM.

    python bench/conv_int8_ratio.py [--rounds 7] [--json PATH] [--one-layer]

VGG19 with the generated weights of bench/compare.py is written once and quantized by
sparseinfer.quantize (calibrated on 8 image-like inputs, the last layer kept in fp32). Two
models are loaded in the same process and profiled on another input at batch 1, layer by
layer (Model.profile_layers), interleaved in rounds, median per layer:

  fp32  every convolution pinned to conv_gemm (im2col + MKL sgemm; SPARSEINFER_ALGO), the
        fully connected layers as the planner picks;
  int8  the planner's own pick for every layer.

The layers run as in a network: block1_conv1 reads the image quantized outside its time and
writes uint8, the others read the uint8 output of the layer (or pool) before. The ratio is
conv_gemm over int8; the target is at least 3x where int8 runs on VNNI (vpdpbusd, or AMX) and
1.7x where it has only AVX2. --one-layer times one-layer model files instead (each layer's
output then float: the first layer writes 4x the bytes it writes in a network).
The CPU, the ISA the kernels run and the int8 form are printed beside the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import sparseinfer  # noqa: E402
from compare import input_shapes, machine, one_layer_file, vgg19_layers  # noqa: E402
from sparseinfer.format import write_model  # noqa: E402


def load_pinned(path: str, pin: str | None) -> "sparseinfer.Model":
    old = os.environ.pop("SPARSEINFER_ALGO", None)
    if pin:
        os.environ["SPARSEINFER_ALGO"] = pin
    try:
        return sparseinfer.load(path, exec="auto", sparse="own")
    finally:
        os.environ.pop("SPARSEINFER_ALGO", None)
        if old is not None:
            os.environ["SPARSEINFER_ALGO"] = old


def image_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mean-subtracted 8-bit pixels (VGG19's preprocessing range), smooth enough to be an image."""
    base = rng.random((n, 28, 28, 3), dtype=np.float32)
    up = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)
    noise = rng.random((n, 224, 224, 3), dtype=np.float32) * 0.2
    return ((up * 0.8 + noise) * 255.0 - 120.0).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", default="", help="comma list of conv names to report (default: all 16)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median reported)")
    p.add_argument("--repeats", type=int, default=3, help="profile_layers repeats per round")
    p.add_argument("--one-layer", action="store_true", help="one-layer model files instead of the network")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)

    layers, spec = vgg19_layers()
    shapes = input_shapes(layers, spec["shape"])
    want = set(filter(None, a.layers.split(",")))
    m_info = machine()
    vnni = sparseinfer.int8_isa()
    target = 1.7 if vnni in ("avx2", "portable") else 3.0
    print(f"# CPU: {m_info['cpu']} ({m_info['cpuid']}); kernels ISA {sparseinfer.isa()}; int8 {vnni}; "
          f"target {target}x", flush=True)
    rng = np.random.default_rng(12)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        if a.one_layer:
            pairs = []
            for layer, shp in zip(layers, shapes):
                if layer["type"] != "conv2d" or (want and layer["name"] not in want):
                    continue
                x = image_like(rng, 1) if layer["name"] == "block1_conv1" else rng.random((1, *shp), dtype=np.float32)
                if layer["name"] != "block1_conv1":
                    x[rng.random(x.shape) < 0.5] = 0.0
                path, _ = one_layer_file(tmp, layer, shp, 1.0)
                qpath = path[:-4] + "_int8.npz"
                sparseinfer.quantize(path, qpath, calibration=x, keep_fp32=None, progress=None)
                pairs.append((layer["name"], path, qpath, x))
        else:
            path = os.path.join(tmp, "vgg19.npz")
            write_model(path, layers, spec, name="vgg19")
            qpath = os.path.join(tmp, "vgg19_int8.npz")
            print("# quantizing VGG19 (8 calibration inputs)", flush=True)
            sparseinfer.quantize(path, qpath, calibration=image_like(rng, 8), keep_fp32="last", progress=None)
            pairs = [(None, path, qpath, image_like(rng, 1))]
        for only, path, qpath, x in pairs:
            f32, i8 = load_pinned(path, "conv_gemm"), load_pinned(qpath, None)
            l32, l8 = f32.layers(), i8.layers()
            ms = {"fp32": [], "int8": []}
            for _ in range(a.rounds):
                ms["fp32"].append(np.median(f32.profile_layers(x, repeats=a.repeats, warmup=1), axis=0))
                ms["int8"].append(np.median(i8.profile_layers(x, repeats=a.repeats, warmup=1), axis=0))
            med = {k: np.median(np.array(v), axis=0) * 1e3 for k, v in ms.items()}
            for j, layer in enumerate(l32):
                name = layer["name"]
                if layer["type"] != "conv2d" or (want and name not in want) or (only and name != only):
                    continue
                r = float(med["fp32"][j] / med["int8"][j])
                rec = {"layer": name, "fp32_conv_gemm_ms": float(med["fp32"][j]), "int8_ms": float(med["int8"][j]),
                       "int8_algo": l8[j]["algo_batch1"], "ratio": r, "target": target, "passes": r >= target,
                       "rounds_ms": {k: [float(v[j]) * 1e3 for v in ms[k]] for k in ms}}
                out.append(rec)
                print(f"{name:14s} fp32 conv_gemm {med['fp32'][j]:7.3f} ms  int8 {med['int8'][j]:7.3f} ms "
                      f"({l8[j]['algo_batch1']})  ratio {r:5.2f}x  {'ok' if r >= target else 'SHORT'}", flush=True)
            del f32, i8
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": m_info, "isa": sparseinfer.isa(), "int8": vnni, "target": target,
                       "mode": "one-layer" if a.one_layer else "network", "layers": out}, f, indent=1)
    return 0 if all(r["passes"] for r in out) else 1


if __name__ == "__main__":
    raise SystemExit(main())
