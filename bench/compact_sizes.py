"""VGG19's file sizes dense / pruned (CSR) / compressed (issue 15 item 3), on generated
weights (He-scaled random, bench/compare.py's vgg19_layers) pruned by magnitude to Han et
al.'s per-layer profile (compare.py's han_vgg19: 7.5% of the weights kept overall):

  python bench/compact_sizes.py [--div 8] [--out DIR] [--json]

--div D divides every layer's width by D (the tests' reduced VGG19; default 1, full size:
about 3 GB of memory and a few minutes on 2 cores, mostly k-means). Files written:
  pruned.npz             CSR where smaller than dense (write_model's "auto")
  compact_lossless.npz   compact storage, values stored exactly (float32: random weights
                         have no shared values), index auto, deflated
  compact_kmeans.npz     Deep Compression's bit widths: 8-bit shared weights (256) in the
                         convolutions, 4-bit (16) in the fully connected layers (they used
                         5), index auto, deflated
  compact_int8.npz       int8 values with a scale per output, index auto, deflated
The dense fp32 size is computed exactly (sparseinfer.storage.dense_fp32_bytes), not written.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import numpy as np  # noqa: E402

from compare import VGG19_BLOCKS, han_vgg19, prune_magnitude, vgg19_layers  # noqa: E402
from sparseinfer.format import write_model  # noqa: E402
from sparseinfer.storage import dense_fp32_bytes, file_streams  # noqa: E402


def vgg19_generated(div: int = 1, seed: int = 19) -> tuple[list[dict], dict]:
    """compare.py's vgg19_layers (He-scaled random weights) with every width divided by div
    (the 7 x 7 flatten and the 1000 classes kept); div 1 is that model itself."""
    if div == 1:
        return vgg19_layers(seed)
    rng = np.random.default_rng(seed)
    layers: list[dict] = []
    cin = 3
    for b, (f, n) in enumerate(VGG19_BLOCKS, start=1):
        f //= div
        for i in range(1, n + 1):
            w = (rng.standard_normal((f, 9 * cin), dtype=np.float32) * np.sqrt(2.0 / (9 * cin))).astype(np.float32)
            layers.append({"name": f"block{b}_conv{i}", "type": "conv2d", "kernel": [3, 3], "padding": "same",
                           "activation": "relu", "W": w, "b": np.zeros(f, np.float32)})
            cin = f
        layers.append({"name": f"block{b}_pool", "type": "maxpool2d", "pool": [2, 2]})
    layers.append({"name": "flatten", "type": "flatten"})
    inputs = 7 * 7 * cin
    for name, units, act in (("fc1", 4096 // div, "relu"), ("fc2", 4096 // div, "relu"),
                             ("predictions", 1000, "softmax")):
        w = (rng.standard_normal((units, inputs), dtype=np.float32) * np.sqrt(2.0 / inputs)).astype(np.float32)
        layers.append({"name": name, "type": "dense", "activation": act, "W": w, "b": np.zeros(units, np.float32)})
        inputs = units
    return layers, dict(_SPEC)


_SPEC = {"shape": [224, 224, 3], "color": "bgr", "resize": {"mode": "shorter", "size": 256}, "crop": [224, 224],
         "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]}


def sizes(div: int, outdir: str, log=print) -> dict:
    """Writes the four files of the module doc into outdir; returns their sizes."""
    t0 = time.perf_counter()
    layers, spec = vgg19_generated(div)
    prof = han_vgg19()
    pruned = [dict(L, W=prune_magnitude(L["W"], prof[L["name"]])) if "W" in L else L for L in layers]
    del layers
    files = {"pruned": os.path.join(outdir, "pruned.npz")}
    write_model(files["pruned"], pruned, spec, name="vgg19_han")
    log(f"pruned written ({time.perf_counter() - t0:.1f} s)")
    variants = {
        "compact_lossless": lambda L: {"values": "float32"},
        "compact_kmeans": lambda L: {"values": "kmeans:256" if L["type"] == "conv2d" else "kmeans:16"},
        "compact_int8": lambda L: {"values": "int8"},
    }
    for name, opts in variants.items():
        ls = [dict(L, storage="compact", compact=opts(L)) if "W" in L else L for L in pruned]
        files[name] = os.path.join(outdir, name + ".npz")
        write_model(files[name], ls, spec, name=f"vgg19_{name}", deflate=True)
        log(f"{name} written ({time.perf_counter() - t0:.1f} s)")
    weights = sum(L["W"].size for L in pruned if "W" in L)
    nnz = sum(int(np.count_nonzero(L["W"])) for L in pruned if "W" in L)
    rec = {"div": div, "weights": int(weights), "nnz": nnz, "density": nnz / weights,
           "dense_fp32": dense_fp32_bytes(files["pruned"])}
    for name, path in files.items():
        rec[name] = os.path.getsize(path)
    rec["per_layer"] = {name: {l: v["storage"] + f" {v['bytes']}" for l, v in file_streams(path)["layers"].items()}
                        for name, path in files.items() if name != "pruned"}
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--div", type=int, default=1, help="divide every width by this (default 1: full size)")
    p.add_argument("--out", default=None, help="keep the files in this directory (default: a temporary one)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="si-compact-") as tmp:
        out = a.out or tmp
        os.makedirs(out, exist_ok=True)
        rec = sizes(a.div, out, log=lambda m: print(m, file=sys.stderr))
    if a.json:
        print(json.dumps(rec, indent=1))
        return 0
    d = rec["dense_fp32"]
    print(f"VGG19{'' if a.div == 1 else f' (widths / {a.div})'}, generated weights, Han profile: "
          f"{rec['nnz']:,} of {rec['weights']:,} weights kept ({rec['density']:.2%})")
    print(f"{'file':<20}{'bytes':>15}{'x smaller than dense':>22}")
    for k in ("dense_fp32", "pruned", "compact_lossless", "compact_kmeans", "compact_int8"):
        print(f"{k:<20}{rec[k]:>15,}{d / rec[k]:>22.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
