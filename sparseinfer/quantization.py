"""Post-training int8 quantization of a model file (issue 12), by the C runtime alone.

    sparseinfer.quantize("lenet5.npz", "lenet5_int8.npz", calibration=x)

``x`` is an NHWC float32 batch already preprocessed (what ``Model.predict`` takes). The
runtime runs the float model on it (``Model.trace``: every layer's output), and from those
activations each quantized layer gets:

- its input's uint8 quantization, one scale and zero point per tensor, by ``method``:
  ``minmax`` (the range seen), ``percentile`` (the 0.01st to 99.99th percentiles: a few
  outliers no longer stretch the step) or ``mse`` (the clipping range that minimises the
  squared quantization error of the values seen);
- int8 weights, symmetric in [-127, 127], one scale per output channel (the largest
  magnitude of the channel's weights maps to 127; pruned zeros stay zero). CPUs with AVX2
  but no VNNI (Zen 3, Haswell to Comet Lake) multiply by ``vpmaddubsw`` about 1.5x faster
  when no pair of weights of adjacent inputs can saturate its int16 sums ("pair-safe"), so
  ``reduce_range`` can shape them: ``"on"``, [-64, 64] (ONNX Runtime's reduce_range; the
  file records ``"weight_range": 64``); ``"pairs"``, [-127, 127] with a per-channel scale
  chosen to keep every pair safe (``"weight_pair_max": 128``); ``"auto"`` (default):
  ``"pairs"`` where the runtime's int8 dot product here (``sparseinfer.int8_isa()``, under
  SPARSEINFER_ISA and SPARSEINFER_DISABLE) is "avx2", else ``"off"``. Either file runs bit
  for bit the same on every CPU;
- an int32 bias, in units of input scale x weight scale.

A quantized layer whose next weighted layer (past max pools and flattens) is quantized too
writes uint8 in that layer's input quantization, so activations stay 8-bit between them.
``keep_fp32`` names layers left in float32 (default: the last weighted layer, whose logits
set the prediction: quantizing LeNet-5's fc2 cost accuracy, see docs/performance.md).
The file format is docs/format.md's version 2 ("quant" layers).
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .format import same_file, write_model

METHODS = ("minmax", "percentile", "mse")
DEFAULT_METHOD = "percentile"
PERCENTILE = 99.99
SAMPLE_CAP = 1 << 21      # activation values kept per layer for the percentile / MSE choices
TRACE_BATCH = 8           # samples per traced run (VGG19: about 500 MB of layer outputs)
WEIGHT_MAX = 127          # int8 weights in [-127, 127]
REDUCED_WEIGHT_MAX = 64   # reduce_range: [-64, 64], pair-safe for vpmaddubsw (docs/quantization.md)
PAIR_MAX = 128            # vpmaddubsw: a pair's positive weights may sum to 128 (255 * 128 <= 32767)
PAIR_SCALES = 12          # reduce_range="pairs": per-channel scales tried between max|w| / 127 and the pair-safe one
REDUCE_RANGE = ("auto", "on", "pairs", "off")


class QuantizeError(ValueError):
    """A model or a calibration set that cannot be quantized."""


def read_layers(path: str) -> tuple[dict, list[dict]]:
    """The manifest and write_model's layer dicts of a float model file (dense float32 weights,
    whatever the file's storage: dense, CSR or compact; ``storage`` says how the int8 copy keeps
    them: dense where the file had them dense, else CSR)."""
    from .compact import read_model_layers
    manifest, layers = read_model_layers(path)
    for e, d in zip(manifest["layers"], layers):
        if e["type"] in ("conv2d", "dense"):
            if e.get("quant"):
                raise QuantizeError(f"{path}: layer {e['name']} is already int8")
            d["W"] = np.asarray(d["W"], dtype=np.float32)
            d["b"] = None if d["b"] is None else np.asarray(d["b"], dtype=np.float32)
            d["storage"] = "dense" if e["weight"]["format"] == "dense" else "csr"
    return manifest, layers


class _Stats:
    """Exact min and max of one activation tensor, and a uniform sample of its values."""

    def __init__(self, rng: np.random.Generator, per_chunk: int):
        self.lo, self.hi = np.inf, -np.inf
        self.parts: list[np.ndarray] = []
        self.rng, self.per_chunk = rng, per_chunk

    def add(self, a: np.ndarray) -> None:
        v = a.reshape(-1)
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))
        self.parts.append(v if v.size <= self.per_chunk else self.rng.choice(v, self.per_chunk, replace=False))

    def sample(self) -> np.ndarray:
        return np.concatenate(self.parts)


def fake_quant(v: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """Values through the runtime's uint8 quantization and back (round half to even)."""
    s = np.float32(scale)
    inv = np.float32(1) / s
    q = np.rint(np.clip(v.astype(np.float32) * inv, -zero, 255 - zero)) + zero
    return (q - zero).astype(np.float32) * s


def qparams(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point mapping [lo, hi] (widened to hold 0.0 exactly) to 0..255."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        hi = lo + 1e-6
    scale = float(np.float32((hi - lo) / 255.0))
    zero = int(np.clip(np.rint(-lo / scale), 0, 255))
    return scale, zero


def choose_range(st: _Stats, method: str) -> tuple[float, int]:
    if method == "minmax":
        return qparams(st.lo, st.hi)
    v = st.sample()
    if method == "percentile":
        lo = float(np.percentile(v, 100 - PERCENTILE)) if st.lo < 0 else 0.0
        return qparams(min(lo, 0.0), float(np.percentile(v, PERCENTILE)))
    if method == "mse":  # clip both ends by the same fraction of the range seen
        best = None
        for f in np.linspace(0.05, 1.0, 96):
            s, z = qparams(st.lo * f, st.hi * f)
            err = float(np.mean((fake_quant(v, s, z) - v) ** 2))
            if best is None or err < best[0]:
                best = (err, s, z)
        return best[1], best[2]
    raise QuantizeError(f"method must be one of {METHODS}, got {method!r}")


def quantize_weights(W: np.ndarray, b: np.ndarray | None, in_scale: float, wmax: int = WEIGHT_MAX):
    """int8 weights (one scale per row, symmetric, in [-wmax, wmax]), their scales, and the
    int32 bias."""
    amax = np.abs(W).max(axis=1)
    ws = np.where(amax > 0, amax / float(wmax), 1.0).astype(np.float32)
    q = np.clip(np.rint(W / ws[:, None]), -wmax, wmax).astype(np.int8)
    mul = np.float32(in_scale) * ws  # float32, as the loader computes it
    bq = None
    if b is not None:
        bq = np.clip(np.rint(b.astype(np.float64) / mul.astype(np.float64)), -2**31, 2**31 - 1).astype(np.int32)
    return q, ws, bq


def choose_reduce_range(reduce_range: str | bool) -> tuple[str, str]:
    """How to quantize the weights ("on": [-64, 64]; "pairs": [-127, 127] but pair-safe; "off":
    [-127, 127]), and why. ``auto``: "pairs" when the runtime's int8 dot product here is plain
    AVX2 (no AVX-512 VNNI, no AVX-VNNI), where pair-safe weights run by vpmaddubsw at up to
    twice the speed of the exact vpmaddwd fallback, else "off"."""
    if reduce_range is True:
        reduce_range = "on"
    elif reduce_range is False:
        reduce_range = "off"
    if reduce_range in ("on", "pairs", "off"):
        return reduce_range, f"reduce_range {reduce_range}"
    if reduce_range != "auto":
        raise QuantizeError(f"reduce_range must be one of {REDUCE_RANGE} (or a bool), got {reduce_range!r}")
    from . import int8_isa
    isa = int8_isa()
    if isa == "avx2":
        return "pairs", "reduce_range auto: pairs, this CPU's int8 dot product is avx2 (no VNNI)"
    return "off", f"reduce_range auto: off, this CPU's int8 dot product is {isa}"


WINOGRAD_MIN_CHANNELS = 16  # one vector of int16 channels in the int16 Winograd's input transform
WINOGRAD_MAX_CHANNELS = 1800  # MAX_C of kernels/conv/si_conv_wino_i16.c: past it the entries do not apply
PAIRS_SAID = ", pair-safe outside the int16 Winograd's layers"


def runs_int16_winograd(layer: dict) -> bool:
    """A 3x3 stride-1 convolution of WINOGRAD_MIN_CHANNELS to WINOGRAD_MAX_CHANNELS input channels: on AVX2
    without VNNI the runtime's exact int16 Winograd (conv_winograd*_i16) runs such layers, and
    it takes any int8 weights, so "pairs" leaves them unconstrained (VGG19: 15 of its 16
    convolutions). Others (an RGB first layer, 5x5 kernels, strided convolutions, dense layers)
    run the int8 GEMM, whose vpmaddubsw needs pair-safe weights to be exact."""
    if layer.get("type") != "conv2d" or list(layer.get("kernel", [])) != [3, 3]:
        return False
    if list(layer.get("strides", [1, 1])) != [1, 1]:
        return False
    return WINOGRAD_MIN_CHANNELS <= np.asarray(layer["W"]).shape[1] // 9 <= WINOGRAD_MAX_CHANNELS


def _pair_fix(q: np.ndarray) -> None:
    """In place: every pair of inputs (2t, 2t + 1) of each row of q (int32, an even number of
    columns) made pair-safe: where two weights of one sign sum past PAIR_MAX, they are moved
    to the nearest integer pair on the limit (the same amount off each)."""
    a, c = q[:, 0::2], q[:, 1::2]
    for sgn in (1, -1):
        A, C = a * sgn, c * sgn
        bad = (A > 0) & (C > 0) & (A + C > PAIR_MAX)
        if bad.any():
            na = (A - C + PAIR_MAX) // 2
            a[bad] = (sgn * na)[bad]
            c[bad] = (sgn * (PAIR_MAX - na))[bad]


def quantize_weights_pairs(W: np.ndarray, b: np.ndarray | None, in_scale: float, rows_per_block: int = 256):
    """As quantize_weights in [-127, 127], but pair-safe for vpmaddubsw (no two weights of one
    sign among inputs 2t, 2t + 1 of a row summing past 128 in magnitude): per channel, the scale
    among PAIR_SCALES between max|w| / 127 and the smallest with no pair past the limit (the
    pairs past it then brought onto it by _pair_fix) whose weights have the least squared
    error."""
    rows, k = W.shape
    amax = np.abs(W).max(axis=1)
    ws = np.where(amax > 0, amax / float(WEIGHT_MAX), 1.0).astype(np.float32)
    q = np.zeros((rows, k + k % 2), np.int32)
    for r0 in range(0, rows, rows_per_block):
        Wb = np.zeros((min(rows_per_block, rows - r0), k + k % 2), np.float32)
        Wb[:, :k] = W[r0:r0 + rows_per_block]
        pos = np.maximum(Wb[:, 0::2], 0) + np.maximum(Wb[:, 1::2], 0)
        neg = np.maximum(-Wb[:, 0::2], 0) + np.maximum(-Wb[:, 1::2], 0)
        pmax = np.maximum(pos.max(1), neg.max(1))
        lo = np.where(amax[r0:r0 + len(Wb)] > 0, amax[r0:r0 + len(Wb)] / WEIGHT_MAX, 1.0)
        hi = np.maximum(lo, pmax / (PAIR_MAX - 0.5))
        best_err = np.full(len(Wb), np.inf)
        for t in np.linspace(0.0, 1.0, PAIR_SCALES):
            s = (lo * (hi / lo) ** t).astype(np.float32)
            qb = np.clip(np.rint(Wb / s[:, None]), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int32)
            _pair_fix(qb)
            err = ((qb * s[:, None] - Wb) ** 2).sum(1)
            better = err < best_err
            best_err[better] = err[better]
            q[r0:r0 + len(Wb)][better] = qb[better]
            ws[r0:r0 + len(Wb)][better] = s[better]
    q = q[:, :k].astype(np.int8)
    mul = np.float32(in_scale) * ws
    bq = None
    if b is not None:
        bq = np.clip(np.rint(b.astype(np.float64) / mul.astype(np.float64)), -2**31, 2**31 - 1).astype(np.int32)
    return q, ws, bq


def _weighted(layers: Sequence[dict]) -> list[int]:
    return [i for i, l in enumerate(layers) if l["type"] in ("conv2d", "dense")]


def _progress(msg: str) -> None:
    sys.stderr.write("\r" + msg)
    sys.stderr.flush()


def calibrate(in_path: str, calibration: np.ndarray, method: str = DEFAULT_METHOD, seed: int = 0,
              progress: Callable[[str], None] | None = _progress) -> dict[int, tuple[float, int]]:
    """(scale, zero point) of each weighted layer's input, from the float model run by the
    runtime on the calibration batch."""
    from . import load

    x = np.ascontiguousarray(np.asarray(calibration, dtype=np.float32))
    model = load(in_path)
    shape = model.input_shape
    if x.ndim == 3 and tuple(x.shape) == shape:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
        raise QuantizeError(f"calibration must be NHWC with sample shape {shape}, got {np.asarray(calibration).shape}")
    if not np.isfinite(x).all():
        raise QuantizeError("calibration holds NaN or infinite values")
    infos = model.layers()
    wl = _weighted(infos)
    # the tensor each weighted layer reads: the model input (-1) or the layer before's output
    want = {i: i - 1 for i in wl}
    rng = np.random.default_rng(seed)
    chunks = (len(x) + TRACE_BATCH - 1) // TRACE_BATCH
    stats = {i: _Stats(rng, max(1, SAMPLE_CAP // chunks)) for i in wl}
    t0 = time.perf_counter()
    for c in range(chunks):
        xb = x[c * TRACE_BATCH:(c + 1) * TRACE_BATCH]
        outs = model.trace(xb, layers={j for j in want.values() if j >= 0})
        for i, j in want.items():
            stats[i].add(xb if j < 0 else outs[j])
        if progress:
            progress(f"calibrating: {min(len(x), (c + 1) * TRACE_BATCH)}/{len(x)} samples, "
                     f"{time.perf_counter() - t0:.1f} s")
    if progress:
        progress("\n")
    return {i: choose_range(stats[i], method) for i in wl}


def quantize(in_path: str, out_path: str, calibration: np.ndarray, *, method: str = DEFAULT_METHOD,
             keep_fp32: str | Iterable[str] | None = "last", storage: str = "auto",
             reduce_range: str | bool = "auto",
             progress: Callable[[str], None] | None = _progress) -> dict:
    """Write an int8 copy of a float model file, calibrated on ``calibration`` (an NHWC float32
    batch, preprocessed). ``keep_fp32``: layer names left in float32, ``"last"`` (the last
    weighted layer) or None. ``storage``: as write_model's (``auto``: the smaller of dense and
    CSR for the int8 values). ``reduce_range``: ``"on"`` (or True) quantizes the weights to
    [-64, 64], ``"pairs"`` to [-127, 127] pair-safe (quantize_weights_pairs) except the layers the
    int16 Winograd runs (runs_int16_winograd), ``"off"`` (False)
    to [-127, 127], ``"auto"`` to pairs where the runtime's int8 dot product is AVX2 without
    VNNI, else off (choose_reduce_range); the choice is said through ``progress`` and in the
    report. Returns a report: per layer its dtype and quantization."""
    if method not in METHODS:
        raise QuantizeError(f"method must be one of {METHODS}, got {method!r}")
    if same_file(in_path, out_path):
        raise QuantizeError(f"{out_path}: this is the float model being quantized; write the int8 model to "
                            "another file")
    mode, why = choose_reduce_range(reduce_range)
    wmax = REDUCED_WEIGHT_MAX if mode == "on" else WEIGHT_MAX
    if progress:
        progress(f"int8 weights in [-{wmax}, {wmax}]{PAIRS_SAID if mode == 'pairs' else ''} ({why})\n")
    manifest, layers = read_layers(in_path)
    wl = _weighted(layers)
    if keep_fp32 == "last":
        keep = {layers[wl[-1]]["name"]} if wl else set()
    elif keep_fp32 is None:
        keep = set()
    else:
        keep = {keep_fp32} if isinstance(keep_fp32, str) else set(keep_fp32)
        unknown = keep - {layers[i]["name"] for i in wl}
        if unknown:
            raise QuantizeError(f"keep_fp32: no weighted layer named {sorted(unknown)}")
    ranges = calibrate(in_path, calibration, method, progress=progress)
    quantized = [i for i in wl if layers[i]["name"] not in keep]
    out_layers, report = [], []
    for i, l in enumerate(layers):
        l = dict(l)
        if i in quantized:
            s_in, z_in = ranges[i]
            pairs = mode == "pairs" and not runs_int16_winograd(l)
            if pairs:
                q, ws, bq = quantize_weights_pairs(l["W"], l.get("b"), s_in)
            else:
                q, ws, bq = quantize_weights(l["W"], l.get("b"), s_in, wmax)
            # the next weighted layer, through max pools and flattens only
            out_q = None
            j = i + 1
            while j < len(layers) and layers[j]["type"] in ("maxpool2d", "flatten"):
                j += 1
            if j < len(layers) and j in quantized and l.get("activation") != "softmax":
                out_q = ranges[j]
            quant = {"input": (s_in, z_in), "output": out_q, "weight_scale": ws}
            if mode == "on":
                quant["weight_range"] = wmax
            elif pairs:
                quant["weight_pair_max"] = PAIR_MAX
            l.update(W=q, b=bq, quant=quant)
            l["storage"] = storage
            report.append({"name": l["name"], "dtype": "int8", "input": [s_in, z_in], "pair_safe": pairs,
                           "output": list(out_q) if out_q else None,
                           "nnz_fp32": int(np.count_nonzero(layers[i]["W"])), "nnz_int8": int(np.count_nonzero(q))})
        elif i in wl:
            report.append({"name": l["name"], "dtype": "float32"})
        out_layers.append(l)
    write_model(out_path, out_layers, manifest["input"], manifest.get("classes"),
                name=manifest.get("name", "model"))
    return {"in": in_path, "out": out_path, "method": method, "calibration_samples": int(len(calibration)),
            "kept_fp32": sorted(keep), "weight_range": wmax, "reduce_range": mode, "reduce_range_reason": why,
            "layers": report}


def calibration_images(source: str, spec: dict, shape: Sequence[int], count: int, seed: int = 0,
                       mnist_dir: str | None = None) -> np.ndarray:
    """The CLI's calibration set: ``mnist`` (``count`` random MNIST training images), a folder
    of images (searched recursively) or one image file, preprocessed by the model's spec."""
    import os

    from .preprocess import load_image, normalize

    if source == "mnist":
        from .datasets import load_mnist
        if tuple(shape) != (28, 28, 1):
            raise QuantizeError(f"MNIST calibration needs a 28x28x1 model, this one takes {tuple(shape)}")
        x_train = load_mnist(mnist_dir)[0]
        idx = np.random.default_rng(seed).choice(len(x_train), size=min(count, len(x_train)), replace=False)
        return normalize(x_train[np.sort(idx)][..., None], spec)
    exts = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
    if os.path.isdir(source):
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(source) for f in fs if f.lower().endswith(exts))
        if not files:
            raise QuantizeError(f"{source}: no images ({', '.join(exts)}) in this folder")
    elif os.path.isfile(source):
        files = [source]
    else:
        raise QuantizeError(f"calibration source {source!r}: not 'mnist', a folder or an image file")
    if len(files) > count:
        files = [files[i] for i in np.sort(np.random.default_rng(seed).choice(len(files), count, replace=False))]
    return np.concatenate([np.asarray(load_image(f, spec), np.float32).reshape(-1, *shape) for f in files])


def main_quantize(a: Any) -> int:
    """`sparseinfer quantize IN OUT --calibration SOURCE [--calibration-count N]`."""
    from .format import read_manifest as _rm

    man = _rm(a.model)
    spec = man["input"]
    sources = a.calibration
    xs = [calibration_images(s, spec, spec["shape"], a.calibration_count, mnist_dir=a.mnist_dir) for s in sources]
    x = np.concatenate(xs)[:a.calibration_count]
    keep = "last" if a.keep_fp32 == "last" else None if a.keep_fp32 == "none" else a.keep_fp32.split(",")
    rep = quantize(a.model, a.out, x, method=a.method, keep_fp32=keep, reduce_range=a.reduce_range,
                   progress=None if a.json else _progress)
    import os
    rep["bytes_in"], rep["bytes_out"] = os.path.getsize(a.model), os.path.getsize(a.out)
    if a.json:
        print(json.dumps(rep, indent=1))
    else:
        for l in rep["layers"]:
            q = (f"input scale {l['input'][0]:.4g} zero {l['input'][1]}, output "
                 + (f"uint8 scale {l['output'][0]:.4g} zero {l['output'][1]}" if l["output"] else "float32")
                 if l["dtype"] == "int8" else "kept in float32")
            print(f"  {l['name']:<16}{l['dtype']:<9}{q}")
        print(f"{a.out}: {rep['bytes_out']:,} bytes ({rep['bytes_in'] / rep['bytes_out']:.2f}x smaller than "
              f"{a.model}), calibrated on {rep['calibration_samples']} samples by {rep['method']}, weights in "
              f"[-{rep['weight_range']}, {rep['weight_range']}]{PAIRS_SAID if rep['reduce_range'] == 'pairs' else ''} "
              f"({rep['reduce_range_reason']})")
    return 0
