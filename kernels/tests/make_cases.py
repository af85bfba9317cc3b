"""Writes the model files the C loader test (test_loader.c) and tests/test_bad_input.py
run against:

  python kernels/tests/make_cases.py OUTDIR

Good models are written with sparseinfer.format.write_model, each with NAME.in.f32 (3
input samples, NHWC float32) and NAME.out.f32 (their outputs by the independent NumPy
reference forward pass below). Bad models are good ones damaged at the byte level (cut,
flipped, garbage) or the array level (members removed or replaced, manifests edited,
hand-made .npy headers). OUTDIR/cases.txt lists every case, one per line, tab-separated:

  good  FILE  SI_OK           -
  bad   FILE  SI_ERR_<CODE>   SUBSTRING expected in si_last_error()
  fuzz  FILE  ITERATIONS      SEED

Only NumPy and sparseinfer.format are needed; nothing here runs the C runtime.
"""
from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

try:
    from sparseinfer.format import write_model
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from sparseinfer.format import write_model

# si_status names -> si_status_str() words (what SparseInferError.status holds).
STATUS_WORDS = {
    "SI_OK": "ok",
    "SI_ERR_IO": "I/O error",
    "SI_ERR_FORMAT": "invalid model file",
    "SI_ERR_MODEL": "invalid model",
    "SI_ERR_UNSUPPORTED": "unsupported",
    "SI_ERR_ARGUMENT": "invalid argument",
    "SI_ERR_NOMEM": "out of memory",
}

# ---- NumPy reference forward pass (float64; independent of the C kernels) -------------


def _window(n: int, k: int, s: int, padding: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after) along one axis, TensorFlow's rule."""
    if padding == "same":
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        return out, total // 2, total - total // 2
    assert n >= k, "valid window larger than its input"
    return (n - k) // s + 1, 0, 0


def ref_conv2d(x: np.ndarray, w: np.ndarray, b, kernel, strides, padding: str) -> np.ndarray:
    n, h, wd, c = x.shape
    kh, kw = kernel
    sh, sw = strides
    f = w.shape[0]
    k = np.asarray(w, np.float64).reshape(f, kh, kw, c)  # rows: (kernel row, kernel col, channel)
    oh, pt, pb = _window(h, kh, sh, padding)
    ow, pl, pr = _window(wd, kw, sw, padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    out = np.zeros((n, oh, ow, f))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
            out += np.einsum("nhwc,fc->nhwf", patch, k[:, i, j, :])
    return out if b is None else out + np.asarray(b, np.float64)


def ref_maxpool(x: np.ndarray, pool, strides, padding: str) -> np.ndarray:
    n, h, wd, c = x.shape
    (ph, pw), (sh, sw) = pool, strides
    oh, pt, pb = _window(h, ph, sh, padding)
    ow, pl, pr = _window(wd, pw, sw, padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
    out = np.full((n, oh, ow, c), -np.inf)
    for i in range(ph):
        for j in range(pw):
            out = np.maximum(out, xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :])
    return out


def ref_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ref_activation(x: np.ndarray, act: str) -> np.ndarray:
    if act == "relu":
        return np.maximum(x, 0.0)
    if act == "softmax":
        return ref_softmax(x)
    assert act == "linear", act
    return x


def reference_forward(layers: list[dict[str, Any]], x: np.ndarray) -> np.ndarray:
    """Runs the layer dicts given to write_model on an NHWC batch; returns (N, outputs). Models
    with int8 layers go to reference_forward_int8."""
    if any(L.get("quant") for L in layers):
        return reference_forward_int8(layers, x)
    y = np.asarray(x, np.float64)
    for L in layers:
        t = L["type"]
        if t == "conv2d":
            y = ref_conv2d(y, L["W"], L.get("b"), L["kernel"], L.get("strides", [1, 1]), L.get("padding", "valid"))
            y = ref_activation(y, L.get("activation", "linear"))
        elif t == "maxpool2d":
            y = ref_maxpool(y, L["pool"], L.get("strides", L["pool"]), L.get("padding", "valid"))
        elif t == "flatten":
            y = y.reshape(y.shape[0], 1, 1, -1)
        elif t == "dense":
            assert y.shape[1:3] == (1, 1), "dense needs a flat input"
            z = y.reshape(y.shape[0], -1) @ np.asarray(L["W"], np.float64).T
            if L.get("b") is not None:
                z = z + np.asarray(L["b"], np.float64)
            y = ref_activation(z, L.get("activation", "linear")).reshape(y.shape[0], 1, 1, -1)
        elif t == "relu":
            y = np.maximum(y, 0.0)
        elif t == "softmax":
            y = ref_softmax(y)
        else:
            raise ValueError(t)
    return y.reshape(y.shape[0], -1)


# ---- NumPy reference of int8 layers (issue 12; docs/format.md "int8 layers") -----------
# Integer sums in int64, the requantization as the runtime defines it: y = fma((float)acc,
# mul, add) (emulated in float64: the product of two float32 is exact there), relu, then
# uint8 = zero + rint(clip(y * (1 / scale), -zero, 255 - zero)) in float32.


def ref_quantize(x: np.ndarray, scale: float, zero: int) -> np.ndarray:
    inv = np.float32(1) / np.float32(scale)
    return (np.rint(np.clip(np.asarray(x, np.float32) * inv, -zero, 255 - zero)) + zero).astype(np.int64)


def ref_dequantize(q: np.ndarray, scale: float, zero: int) -> np.ndarray:
    return np.float32(scale) * (np.asarray(q, np.int64) - zero).astype(np.float32)


def _int8_layer(L: dict, y, yq) -> tuple[np.ndarray, tuple | None]:
    """One int8 conv2d / dense on float y or uint8 yq = (values, scale, zero); returns its
    output, float (None) or uint8 with its (scale, zero)."""
    qi = L["quant"]
    s_in, z_in = qi["input"]
    if yq is not None and (yq[1], yq[2]) == (np.float32(s_in), z_in):
        xq = yq[0]
    else:
        xf = y if yq is None else ref_dequantize(*yq)
        xq = ref_quantize(xf, s_in, z_in)
    W = np.asarray(L["W"], np.int64)
    if L["type"] == "conv2d":
        n, h, wd, c = xq.shape
        kh, kw = L["kernel"]
        sh, sw = L.get("strides", [1, 1])
        oh, pt, pb = _window(h, kh, sh, L.get("padding", "valid"))
        ow, pl, pr = _window(wd, kw, sw, L.get("padding", "valid"))
        xp = np.pad(xq, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=z_in)
        k = W.reshape(W.shape[0], kh, kw, c)
        acc = np.zeros((n, oh, ow, W.shape[0]), np.int64)
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
                acc += np.einsum("nhwc,fc->nhwf", patch, k[:, i, j, :])
    else:
        acc = (xq.reshape(xq.shape[0], -1) @ W.T).reshape(xq.shape[0], 1, 1, -1)
    ws = np.asarray(qi["weight_scale"], np.float32)
    mul = np.float32(s_in) * ws
    b = np.zeros(W.shape[0], np.int64) if L.get("b") is None else np.asarray(L["b"], np.int64)
    add = mul * (b - z_in * W.sum(axis=1)).astype(np.float32)
    yf = (acc.astype(np.float32).astype(np.float64) * mul.astype(np.float64) + add.astype(np.float64)).astype(np.float32)
    act = L.get("activation", "linear")
    if act == "relu":
        yf = np.maximum(yf, np.float32(0))
    if qi.get("output") is not None:
        s_o, z_o = qi["output"]
        return ref_quantize(yf, s_o, z_o), (np.float32(s_o), z_o)
    if act == "softmax":
        yf = ref_softmax(yf.astype(np.float64)).astype(np.float32)
    return yf, None


def reference_forward_int8(layers: list[dict[str, Any]], x: np.ndarray) -> np.ndarray:
    """reference_forward for models with int8 layers (a "quant" key): float layers in float64
    on dequantized inputs, int8 layers exactly as the runtime computes them."""
    y, yq = np.asarray(x, np.float64), None  # yq: (uint8 values, scale, zero) when int8
    for L in layers:
        t = L["type"]
        if t in ("conv2d", "dense") and L.get("quant"):
            out, qp = _int8_layer(L, y, yq)
            if qp is None:
                y, yq = out.astype(np.float64), None
            else:
                y, yq = None, (out, qp[0], qp[1])
            continue
        if yq is not None and t in ("maxpool2d", "flatten"):
            v = yq[0]
            if t == "maxpool2d":
                v = ref_maxpool(v.astype(np.float64), L["pool"], L.get("strides", L["pool"]),
                                L.get("padding", "valid")).astype(np.int64)
            else:
                v = v.reshape(v.shape[0], 1, 1, -1)
            yq = (v, yq[1], yq[2])
            continue
        if yq is not None:
            y, yq = ref_dequantize(*yq).astype(np.float64), None
        y = reference_forward([L], y).reshape((y.shape[0],) + _out_shape(L, y))
    if yq is not None:
        y = ref_dequantize(*yq).astype(np.float64)
    return y.reshape(y.shape[0], -1)


def _out_shape(L: dict, y: np.ndarray) -> tuple:
    """The NHWC sample shape of one float layer's output (reference_forward flattens)."""
    n, h, w, c = y.shape
    t = L["type"]
    if t == "conv2d":
        oh = _window(h, L["kernel"][0], L.get("strides", [1, 1])[0], L.get("padding", "valid"))[0]
        ow = _window(w, L["kernel"][1], L.get("strides", [1, 1])[1], L.get("padding", "valid"))[0]
        return (oh, ow, np.asarray(L["W"]).shape[0])
    if t == "maxpool2d":
        st = L.get("strides", L["pool"])
        return (_window(h, L["pool"][0], st[0], L.get("padding", "valid"))[0],
                _window(w, L["pool"][1], st[1], L.get("padding", "valid"))[0], c)
    if t in ("flatten", "dense"):
        return (1, 1, -1)
    return (h, w, c)


def quantize_layers(layers: list[dict], x: np.ndarray, keep: tuple[str, ...] = (), out_last: bool = False) -> list[dict]:
    """int8 copies of float layer dicts, activation ranges from the float reference on x
    (min/max), weights by sparseinfer.quantization's rule; layers named in keep stay float.
    out_last: the last int8 layer writes uint8 (dequantized by the runtime at the end)."""
    from sparseinfer.quantization import qparams, quantize_weights

    y = np.asarray(x, np.float64)
    ranges = {}
    for i, L in enumerate(layers):
        if L["type"] in ("conv2d", "dense"):
            ranges[i] = qparams(float(y.min()), float(y.max()))
        y = reference_forward([L], y).reshape((y.shape[0],) + _out_shape(L, y))
    out = []
    wl = [i for i, L in enumerate(layers) if L["type"] in ("conv2d", "dense") and L["name"] not in keep]
    for i, L in enumerate(layers):
        L = dict(L)
        if i in wl:
            s, z = ranges[i]
            q, ws, bq = quantize_weights(np.asarray(L["W"], np.float32), L.get("b"), s)
            j = i + 1
            while j < len(layers) and layers[j]["type"] in ("maxpool2d", "flatten"):
                j += 1
            o = ranges[j] if (j in wl and L.get("activation") != "softmax") else None
            if o is None and out_last and i == wl[-1] and L.get("activation") != "softmax":
                o = qparams(-4.0, 4.0)
            L.update(W=q, b=bq, quant={"input": (s, z), "output": o, "weight_scale": ws})
        out.append(L)
    return out


# ---- good models ----------------------------------------------------------------------


def _he(rng: np.random.Generator, rows: int, cols: int, density: float = 1.0) -> np.ndarray:
    w = rng.standard_normal((rows, cols)) * np.sqrt(2.0 / cols)
    if density < 1.0:
        w[rng.random(w.shape) >= density] = 0.0
        w /= np.sqrt(density)
    return w.astype(np.float32)


def _bias(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.standard_normal(n) * 0.1).astype(np.float32)


def good_models() -> dict[str, tuple[list[dict], list[int], str]]:
    """name -> (layers, input shape, storage)."""
    rng = np.random.default_rng(2024)
    models = {}
    # LeNet-like: valid conv + relu, valid pool, strided "same" conv, strided "same" pool,
    # flatten, CSR dense (auto storage picks CSR at 20% density), softmax dense.
    models["good_lenet"] = ([
        {"name": "conv1", "type": "conv2d", "kernel": [3, 3], "activation": "relu", "W": _he(rng, 6, 3 * 3 * 2),
         "b": _bias(rng, 6)},
        {"name": "pool1", "type": "maxpool2d", "pool": [2, 2]},
        {"name": "conv2", "type": "conv2d", "kernel": [3, 3], "strides": [2, 2], "padding": "same",
         "activation": "relu", "W": _he(rng, 8, 3 * 3 * 6), "b": _bias(rng, 8)},
        {"name": "pool2", "type": "maxpool2d", "pool": [3, 3], "strides": [2, 2], "padding": "same"},
        {"name": "flatten", "type": "flatten"},
        {"name": "fc1", "type": "dense", "activation": "relu", "W": _he(rng, 24, 2 * 2 * 8, 0.2), "b": _bias(rng, 24)},
        {"name": "fc2", "type": "dense", "activation": "softmax", "W": _he(rng, 5, 24), "b": _bias(rng, 5)},
    ], [16, 16, 2], "auto")
    # Everything CSR (sparse convolutions too), non-square kernels, unequal strides, no
    # bias, a separate relu layer, a "same" pool with stride 1, a linear output.
    models["good_strided_csr"] = ([
        {"name": "c1", "type": "conv2d", "kernel": [3, 2], "strides": [2, 3], "padding": "same",
         "W": _he(rng, 5, 3 * 2 * 3, 0.6), "b": None},
        {"name": "r1", "type": "relu"},
        {"name": "p1", "type": "maxpool2d", "pool": [2, 3], "strides": [1, 2], "padding": "same"},
        {"name": "c2", "type": "conv2d", "kernel": [2, 2], "W": _he(rng, 7, 2 * 2 * 5, 0.5), "b": _bias(rng, 7)},
        {"name": "f", "type": "flatten"},
        {"name": "d1", "type": "dense", "W": _he(rng, 4, 28, 0.7), "b": _bias(rng, 4)},
    ], [9, 11, 3], "csr")
    # Flatten first (runs straight off the caller's input), dense layers, softmax layer.
    models["good_flat"] = ([
        {"name": "flat", "type": "flatten"},
        {"name": "h1", "type": "dense", "activation": "relu", "W": _he(rng, 16, 40, 0.3), "b": _bias(rng, 16)},
        {"name": "h2", "type": "dense", "W": _he(rng, 6, 16), "b": _bias(rng, 6)},
        {"name": "sm", "type": "softmax"},
    ], [4, 5, 2], "auto")
    # relu first, a 1x1 convolution (the pointwise path), valid pool, softmax dense.
    models["good_pointwise"] = ([
        {"name": "r0", "type": "relu"},
        {"name": "pw", "type": "conv2d", "kernel": [1, 1], "activation": "relu", "W": _he(rng, 4, 3),
         "b": _bias(rng, 4)},
        {"name": "mp", "type": "maxpool2d", "pool": [2, 2]},
        {"name": "fl", "type": "flatten"},
        {"name": "out", "type": "dense", "activation": "softmax", "W": _he(rng, 3, 3 * 3 * 4), "b": _bias(rng, 3)},
    ], [6, 7, 3], "dense")
    # Layers that pruning emptied, stored as CSR with no non-zeros (no value or column data):
    # a convolution and a wide dense layer (100 x 10000, the size that crashed the loader
    # when the planner read the missing values). Each must give bias + activation.
    models["good_pruned_empty"] = ([
        {"name": "c1", "type": "conv2d", "kernel": [3, 3], "padding": "same", "activation": "relu",
         "W": np.zeros((4, 3 * 3 * 2), np.float32), "b": _bias(rng, 4)},
        {"name": "flat", "type": "flatten"},
        {"name": "wide", "type": "dense", "activation": "relu", "W": np.zeros((100, 50 * 50 * 4), np.float32),
         "b": _bias(rng, 100)},
        {"name": "out", "type": "dense", "W": _he(rng, 5, 100, 0.5), "b": _bias(rng, 5)},
    ], [50, 50, 2], "csr")
    # int8 (issue 12): good_lenet quantized, its last layer kept float (softmax); uint8 flows
    # conv1 -> pool1 -> conv2 -> pool2 -> flatten -> fc1, fc1 writes float for fc2.
    xr = np.random.default_rng(7).uniform(-1.0, 1.0, size=(16, 16, 16, 2))
    models["good_int8"] = (quantize_layers(models["good_lenet"][0], xr, keep=("fc2",)), [16, 16, 2], "auto")
    # int8 everywhere, CSR convolutions, an int8 layer after a float one, a separate relu
    # layer on uint8, and a last int8 layer writing uint8 (dequantized at the end).
    xs = np.random.default_rng(8).uniform(-1.0, 1.0, size=(16, 9, 11, 3))
    models["good_int8_csr"] = (quantize_layers(models["good_strided_csr"][0], xs, keep=("c1",), out_last=True),
                               [9, 11, 3], "csr")
    # Compact storage (format 2.1, deflated members): every index mode and value mode, an
    # empty row; fc1 shaped so that its 4-bit index and code streams have odd counts (a
    # padding nibble each) and its last 20 positions are zero (room for a trailing filler).
    lenet = models["good_lenet"][0]
    conv1 = lenet[0]["W"].copy()
    conv1[2] = 0  # an empty row
    fc1 = lenet[5]["W"].copy()
    fc1[::3, 5:] = 0  # long gaps: fillers
    fc1.reshape(-1)[-20:] = 0
    from sparseinfer.compact import delta_symbols
    for i in np.flatnonzero(fc1):
        nnz = np.count_nonzero(fc1)
        if nnz % 2 == 1 and delta_symbols(np.flatnonzero(fc1), 4).size % 2 == 1:
            break
        fc1.reshape(-1)[i] = 0
    fc1 = np.where(fc1 != 0, np.round(fc1 * 4) / 4 + 0.125, 0).astype(np.float32)  # a few distinct values
    models["good_compact"] = ([
        {**lenet[0], "W": conv1, "compact": {"index": "bitmap", "values": "float32"}},
        lenet[1],
        {**lenet[2], "compact": {"index": "delta8", "values": "int8"}},
        lenet[3], lenet[4],
        {**lenet[5], "W": fc1, "compact": {"index": "delta4", "values": "codebook"}},
        {**lenet[6], "compact": {"index": "delta4", "values": "kmeans:40"}},
    ], [16, 16, 2], "compact")
    return models


# ---- byte and array level damage -----------------------------------------------------


def read_members(path: str) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_members(path: str, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> str:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for n, data in members.items():
            z.writestr(n, data)
    return path


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=False)
    return buf.getvalue()


def npy_header_only(descr: str, shape: tuple, fortran: bool = False) -> bytes:
    """A hand-made version 1.0 .npy header (no data follows)."""
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, repr(tuple(shape)))
    pad = 64 - (10 + len(d) + 1) % 64
    d = d + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + len(d).to_bytes(2, "little") + d.encode()


def get_array(members: dict[str, bytes], name: str) -> np.ndarray:
    return np.lib.format.read_array(io.BytesIO(members[name + ".npy"]), allow_pickle=False)


def get_manifest(members: dict[str, bytes]) -> dict:
    return json.loads(get_array(members, "model.json").tobytes())


def manifest_bytes(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return npy(np.frombuffer(raw, dtype=np.uint8))


BASE = "good_lenet.npz"  # the model the bad cases damage


def _base(outdir: str) -> dict[str, bytes]:
    return read_members(os.path.join(outdir, BASE))


def _edit_arrays(edit: Callable[[dict[str, bytes]], None]) -> Callable[[str, str], str]:
    def build(outdir: str, path: str) -> str:
        m = _base(outdir)
        edit(m)
        return write_members(path, m)
    return build


def _edit_manifest(edit: Callable[[dict], None]) -> Callable[[str, str], str]:
    def build(outdir: str, path: str) -> str:
        m = _base(outdir)
        man = get_manifest(m)
        edit(man)
        m["model.json.npy"] = manifest_bytes(json.dumps(man))
        return write_members(path, m)
    return build


def _raw_manifest(text: str | bytes) -> Callable[[str, str], str]:
    def build(outdir: str, path: str) -> str:
        m = _base(outdir)
        m["model.json.npy"] = manifest_bytes(text)
        return write_members(path, m)
    return build


def _manifest_text(edit: Callable[[bytes], bytes]) -> Callable[[str, str], str]:
    """Edits the manifest as bytes (for text no JSON writer produces)."""
    def build(outdir: str, path: str) -> str:
        m = _base(outdir)
        text = json.dumps(get_manifest(m)).encode()
        new = edit(text)
        assert new != text, "the edit did not apply"
        m["model.json.npy"] = manifest_bytes(new)
        return write_members(path, m)
    return build


def _set_array(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[str, str], str]:
    def edit(m: dict[str, bytes]) -> None:
        m[name + ".npy"] = npy(fn(get_array(m, name).copy()))
    return _edit_arrays(edit)


def _remove(name: str) -> Callable[[str, str], str]:
    return _edit_arrays(lambda m: m.pop(name + ".npy"))


def _bytes_of_base(fn: Callable[[bytes], bytes]) -> Callable[[str, str], str]:
    def build(outdir: str, path: str) -> str:
        with open(os.path.join(outdir, BASE), "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(fn(data))
        return path
    return build


def _member_data_span(data: bytes, member: str) -> tuple[int, int]:
    """(offset, length) of a stored member's bytes within a ZIP file."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(member)
    off = info.header_offset
    nlen = int.from_bytes(data[off + 26:off + 28], "little")
    xlen = int.from_bytes(data[off + 28:off + 30], "little")
    return off + 30 + nlen + xlen, info.file_size


def _local_header(data: bytes, member: str) -> int:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return z.getinfo(member).header_offset


def _patch_local(member: str, offset: int, new: bytes) -> Callable[[bytes], bytes]:
    """Overwrites bytes of a member's local header (the central directory keeps the truth)."""
    def fn(data: bytes) -> bytes:
        at = _local_header(data, member) + offset
        assert data[at:at + len(new)] != new, "the patch changes nothing"
        return data[:at] + new + data[at + len(new):]
    return fn


def _cut_in_directory(data: bytes) -> bytes:
    cd = data.rfind(b"PK\x01\x02")  # the last central directory entry
    return data[:cd + 20]


def _cut_in_array(data: bytes) -> bytes:
    off, n = _member_data_span(data, "fc1.W.data.npy")
    return data[:off + n // 2]


def _flip_in_array(data: bytes) -> bytes:
    off, n = _member_data_span(data, "conv2.W.npy")
    b = bytearray(data)
    b[off + n - 7] ^= 0x40
    return bytes(b)


def _drop_middle(data: bytes) -> bytes:
    off, n = _member_data_span(data, "fc1.W.data.npy")
    return data[:off + 16] + data[off + n - 16:]


def _with_layers(edit: Callable[[list[dict]], None], shape=None) -> Callable[[str, str], str]:
    """write_model on an edited copy of the base model's layers (for models write_model
    accepts but the loader must refuse)."""
    def build(outdir: str, path: str) -> str:
        layers, in_shape, storage = good_models()["good_lenet"]
        layers = [dict(L) for L in layers]
        edit(layers)
        write_model(path, layers, {"shape": shape or in_shape}, storage=storage)
        return path
    return build


def _huge_filters(outdir: str, path: str) -> str:
    layers = [{"name": "wide", "type": "conv2d", "kernel": [1, 1], "W": np.full((100000, 1), 0.5, np.float32),
               "b": None}]
    write_model(path, layers, {"shape": [150, 150, 1]}, storage="dense")
    return path


def wide_empty_csr(path: str, rows: int = 2 ** 20, cols: int = 2 ** 24, bias: bool = False) -> str:
    """A model of one dense layer `rows` x `cols` in CSR with no non-zeros: the file is
    little more than its int32 row pointers (4 MB for 2^20 rows), yet its dense form would
    be 4 * rows * cols bytes, and per-column-block copies rows * cols / 512 (issue 13,
    item 4). Written by hand: write_model takes dense weights."""
    manifest = {"format": "sparseinfer-model", "version": [1, 0], "name": "wide_empty",
                "input": {"shape": [1, 1, cols]},
                "layers": [{"name": "wide", "type": "dense", "units": rows, "activation": "relu",
                            "weight": {"format": "csr", "prefix": "wide.W"}, "bias": "wide.b" if bias else None}]}
    members = {"model.json.npy": manifest_bytes(json.dumps(manifest)),
               "wide.W.data.npy": npy(np.zeros(0, np.float32)),
               "wide.W.indices.npy": npy(np.zeros(0, np.int32)),
               "wide.W.indptr.npy": npy(np.zeros(rows + 1, np.int32)),
               "wide.W.shape.npy": npy(np.array([rows, cols], np.int64))}
    if bias:
        members["wide.b.npy"] = npy(np.zeros(rows, np.float32))
    return write_members(path, members)


def conv_empty_csr(path: str, filters: int = 1, kernel: int = 64, shape=(64, 64, 4096)) -> str:
    """A model of one convolution in CSR with no non-zeros whose patch is as wide as the
    reader allows (64 x 64 over 4096 channels: 2^24 taps), from a file of 1.5 KB: a packed
    copy of its weights would be 2^24 floats per filter (fuzz seed large_conv_16M_taps)."""
    cols = kernel * kernel * shape[2]
    manifest = {"format": "sparseinfer-model", "version": [1, 0], "name": "conv_empty", "input": {"shape": list(shape)},
                "layers": [{"name": "conv", "type": "conv2d", "filters": filters, "kernel": [kernel, kernel],
                            "strides": [kernel, kernel], "padding": "valid", "activation": "linear",
                            "weight": {"format": "csr", "prefix": "conv.W"}, "bias": None}]}
    members = {"model.json.npy": manifest_bytes(json.dumps(manifest)),
               "conv.W.data.npy": npy(np.zeros(0, np.float32)),
               "conv.W.indices.npy": npy(np.zeros(0, np.int32)),
               "conv.W.indptr.npy": npy(np.zeros(filters + 1, np.int32)),
               "conv.W.shape.npy": npy(np.array([filters, cols], np.int64))}
    return write_members(path, members)


def _csr_edit(fn: Callable[[np.ndarray, np.ndarray], None]) -> Callable[[str, str], str]:
    """Edits fc1's CSR indices and indptr in place: fn(indices, indptr)."""
    def edit(m: dict[str, bytes]) -> None:
        ind, ptr = get_array(m, "fc1.W.indices").copy(), get_array(m, "fc1.W.indptr").copy()
        fn(ind, ptr)
        m["fc1.W.indices.npy"] = npy(ind)
        m["fc1.W.indptr.npy"] = npy(ptr)
    return _edit_arrays(edit)


def _row_with(ptr: np.ndarray, k: int) -> int:
    """The first row of a CSR matrix with at least k entries."""
    return int(np.nonzero(np.diff(ptr) >= k)[0][0])


def _csr_oob(ind, ptr):
    r = _row_with(ptr, 1)
    ind[ptr[r + 1] - 1] = 32  # fc1 has 2*2*8 = 32 columns


def _csr_nonmono(ind, ptr):
    r = int(np.nonzero(ptr >= 1)[0][0])  # rows before r are untouched and valid
    ptr[r + 1] = ptr[r] - 1


def _csr_last(ind, ptr):
    ptr[-1] -= 1


def _csr_duplicate(ind, ptr):
    r = _row_with(ptr, 2)
    ind[ptr[r] + 1] = ind[ptr[r]]


def _csr_unsorted(ind, ptr):
    r = _row_with(ptr, 2)
    a = ptr[r]
    ind[a], ind[a + 1] = ind[a + 1], ind[a]


def _nan(w: np.ndarray) -> np.ndarray:
    w[1, 2] = np.nan
    return w


def _compressed(outdir: str, path: str) -> str:
    return write_members(path, _base(outdir), compression=zipfile.ZIP_DEFLATED)


def _npz_compressed(outdir: str, path: str) -> str:
    m = _base(outdir)
    arrays = {n[:-4]: get_array(m, n[:-4]) for n in m}
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def _garbage(outdir: str, path: str) -> str:
    with open(path, "wb") as f:
        f.write(np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return path


def _empty(outdir: str, path: str) -> str:
    open(path, "wb").close()
    return path


def _directory(outdir: str, path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def _nonexistent(outdir: str, path: str) -> str:
    if os.path.exists(path):
        os.unlink(path)
    return path


@dataclass(frozen=True)
class Case:
    name: str
    status: str   # an si_status name
    expect: str   # a substring of si_last_error()
    build: Callable[[str, str], str]  # (outdir, path) -> path

    @property
    def file(self) -> str:
        return self.name + ".npz"


INT8_BASE = "good_int8.npz"  # the model the int8 cases damage


def _edited(base: str, edit_manifest: Callable[[dict], None] | None = None,
            edit_members: Callable[[dict[str, bytes]], None] | None = None,
            compression: int = zipfile.ZIP_STORED) -> Callable[[str, str], str]:
    """A case built from the good model `base` (in outdir) with its manifest and/or members edited."""
    def build(outdir: str, path: str) -> str:
        m = read_members(os.path.join(outdir, base))
        if edit_manifest:
            man = get_manifest(m)
            edit_manifest(man)
            m["model.json.npy"] = manifest_bytes(json.dumps(man))
        if edit_members:
            edit_members(m)
        return write_members(path, m, compression)
    return build


def _int8(edit_manifest: Callable[[dict], None] | None = None,
          edit_members: Callable[[dict[str, bytes]], None] | None = None) -> Callable[[str, str], str]:
    return _edited(INT8_BASE, edit_manifest, edit_members)


def _quant_of(name: str) -> Callable[[dict], dict]:
    return lambda man: next(L for L in man["layers"] if L["name"] == name)["quant"]


def _set_member_array(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict[str, bytes]], None]:
    def edit(m: dict[str, bytes]) -> None:
        m[name + ".npy"] = npy(fn(get_array(m, name).copy()))
    return edit


def _put(d: dict, key: str, value: Any) -> None:
    d[key] = value


BAD_INT8_CASES: list[Case] = [
    Case("bad_int8_scale_zero", "SI_ERR_MODEL", "quant.input.scale must be a finite float32 > 0",
         _int8(lambda man: _put(_quant_of("conv1")(man)["input"], "scale", 0.0))),
    Case("bad_int8_scale_tiny", "SI_ERR_MODEL", "quant.output.scale must be a finite float32 > 0",
         _int8(lambda man: _put(_quant_of("conv2")(man)["output"], "scale", 1e-50))),
    Case("bad_int8_scale_string", "SI_ERR_MODEL", "quant.input.scale must be a finite float32 > 0",
         _int8(lambda man: _put(_quant_of("fc1")(man)["input"], "scale", "1"))),
    Case("bad_int8_zero_256", "SI_ERR_MODEL", "zero_point must be an integer in [0, 255]",
         _int8(lambda man: _put(_quant_of("conv2")(man)["input"], "zero_point", 256))),
    Case("bad_int8_zero_fraction", "SI_ERR_MODEL", "zero_point must be an integer in [0, 255]",
         _int8(lambda man: _put(_quant_of("conv1")(man)["input"], "zero_point", 3.5))),
    Case("bad_int8_no_input", "SI_ERR_FORMAT", "quant.input must be an object",
         _int8(lambda man: _quant_of("conv1")(man).pop("input"))),
    Case("bad_int8_quant_list", "SI_ERR_FORMAT", "'quant' must be an object",
         _int8(lambda man: _put(next(L for L in man["layers"] if L["name"] == "conv1"), "quant", [1, 2]))),
    Case("bad_int8_weight_minus128", "SI_ERR_MODEL", "= -128 (int8 weights are symmetric",
         _int8(edit_members=_set_member_array("conv1.W", lambda a: np.where(a == a.min(), np.int8(-128), a)))),
    Case("bad_int8_csr_minus128", "SI_ERR_MODEL", "= -128 (int8 weights are symmetric",
         _int8(edit_members=_set_member_array("fc1.W.data", lambda a: np.full_like(a, -128)))),
    Case("bad_int8_weights_float", "SI_ERR_FORMAT", "expected 2D int8",
         _int8(edit_members=_set_member_array("conv1.W", lambda a: a.astype(np.float32)))),
    Case("bad_int8_without_quant", "SI_ERR_FORMAT", "expected 2D float32",
         _int8(lambda man: next(L for L in man["layers"] if L["name"] == "conv1").pop("quant"))),
    Case("bad_int8_bias_float", "SI_ERR_FORMAT", "expected 1D int32",
         _int8(edit_members=_set_member_array("conv2.b", lambda a: a.astype(np.float32)))),
    Case("bad_int8_wscale_short", "SI_ERR_MODEL", "weight scales 'conv2.W.scale' has 7 values, expected one per output (8)",
         _int8(edit_members=_set_member_array("conv2.W.scale", lambda a: a[:-1]))),
    Case("bad_int8_wscale_negative", "SI_ERR_MODEL", "a weight scale must be > 0",
         _int8(edit_members=_set_member_array("fc1.W.scale", lambda a: -a))),
    Case("bad_int8_wscale_nan", "SI_ERR_MODEL", "is not finite",
         _int8(edit_members=_set_member_array("fc1.W.scale", lambda a: np.where(np.arange(a.size) == 3, np.nan, a).astype(np.float32)))),
    Case("bad_int8_wscale_missing", "SI_ERR_FORMAT", "quant.weight_scale must name an array",
         _int8(lambda man: _quant_of("conv1")(man).pop("weight_scale"))),
    Case("bad_int8_version1", "SI_ERR_MODEL", "int8 ('quant') layers need format version 2",
         _int8(lambda man: _put(man, "version", [1, 0]))),
    Case("bad_int8_version3", "SI_ERR_UNSUPPORTED", "model file format version 3 is not supported",
         _int8(lambda man: _put(man, "version", [3, 0]))),
    Case("bad_int8_softmax_u8", "SI_ERR_MODEL", "a softmax output cannot be quantized",
         _int8(lambda man: next(L for L in man["layers"] if L["name"] == "fc2").update(
             quant={"input": {"scale": 0.1, "zero_point": 0}, "output": {"scale": 0.1, "zero_point": 0},
                    "weight_scale": "fc1.W.scale"}))),
    Case("bad_int8_scale_huge", "SI_ERR_MODEL", "give no finite positive float32 rescale",
         _int8(lambda man: _put(_quant_of("conv1")(man)["input"], "scale", 3e38),
               _set_member_array("conv1.W.scale", lambda a: np.full_like(a, 1e30)))),
]

COMPACT_BASE = "good_compact.npz"  # the model the compact and deflate cases damage


def _compact(edit_manifest: Callable[[dict], None] | None = None,
             edit_members: Callable[[dict[str, bytes]], None] | None = None,
             compression: int = zipfile.ZIP_DEFLATED) -> Callable[[str, str], str]:
    return _edited(COMPACT_BASE, edit_manifest, edit_members, compression)


def _weight_of(name: str) -> Callable[[dict], dict]:
    return lambda man: next(L for L in man["layers"] if L["name"] == name)["weight"]


def _fc1_symbols(edit: Callable[[np.ndarray], np.ndarray]) -> Callable[[str, str], str]:
    """fc1's 4-bit delta symbols edited, repacked, and the manifest's count to match."""
    from sparseinfer.compact import _pack4, _unpack4

    def build(outdir: str, path: str) -> str:
        m = read_members(os.path.join(outdir, COMPACT_BASE))
        man = get_manifest(m)
        w = _weight_of("fc1")(man)
        sym = edit(_unpack4(get_array(m, "fc1.W.index"), w["symbols"]).copy())
        w["symbols"] = int(sym.size)
        m["fc1.W.index.npy"] = npy(_pack4(sym))
        m["model.json.npy"] = manifest_bytes(json.dumps(man))
        return write_members(path, m, zipfile.ZIP_DEFLATED)
    return build


def _last_entry_filler(sym: np.ndarray) -> np.ndarray:
    assert sym[-1] != 15
    sym[-1] = 15
    return sym


def _set_last_nibble(a: np.ndarray) -> np.ndarray:
    assert a[-1] >> 4 == 0
    a[-1] |= 0x30
    return a


def _clear_a_bit(a: np.ndarray) -> np.ndarray:
    i = int(np.flatnonzero(a)[0])
    a[i] &= a[i] - 1
    return a


def _deflated_patch(member: str, usize: int | None = None, data: bytes | None = None) -> Callable[[str, str], str]:
    """good_compact with one deflated member's declared uncompressed size (in the local and
    the central header, ZIP64 fields included) or its deflate bytes replaced."""
    def build(outdir: str, path: str) -> str:
        src = os.path.join(outdir, COMPACT_BASE)
        with zipfile.ZipFile(src) as z:
            info = z.getinfo(member)
            members = {n: z.read(n) for n in z.namelist()}
        # write it again without ZIP64 extras (zipfile adds them only when asked)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for n, b in members.items():
                z.writestr(n, b)
        out = bytearray(buf.getvalue())
        with zipfile.ZipFile(io.BytesIO(bytes(out))) as z:
            info = z.getinfo(member)
        loff = info.header_offset
        if usize is not None:
            out[loff + 22:loff + 26] = usize.to_bytes(4, "little")
            cd = out.index(member.encode(), out.index(b"PK\x01\x02")) - 46
            assert out[cd:cd + 4] == b"PK\x01\x02"
            out[cd + 24:cd + 28] = usize.to_bytes(4, "little")
        if data is not None:
            nlen = int.from_bytes(out[loff + 26:loff + 28], "little")
            xlen = int.from_bytes(out[loff + 28:loff + 30], "little")
            doff = loff + 30 + nlen + xlen
            assert len(data) <= info.compress_size
            out[doff:doff + len(data)] = data
        with open(path, "wb") as f:
            f.write(bytes(out))
        return path
    return build


BAD_COMPACT_CASES: list[Case] = [
    Case("bad_compact_version20", "SI_ERR_MODEL", "layer conv1: compact weights need format version 2.1",
         _compact(lambda man: _put(man, "version", [2, 0]), compression=zipfile.ZIP_STORED)),
    Case("bad_compact_deflated_v20", "SI_ERR_UNSUPPORTED", "deflated members need format version 2.1",
         _compact(lambda man: _put(man, "version", [2, 0]))),
    Case("bad_compact_int8_layer", "SI_ERR_UNSUPPORTED", "an int8 ('quant') layer cannot have compact weights",
         _compact(lambda man: next(L for L in man["layers"] if L["name"] == "fc1").update(
             quant={"input": {"scale": 0.1, "zero_point": 0}, "output": None, "weight_scale": "fc1.b"}))),
    Case("bad_compact_shape", "SI_ERR_MODEL", "layer fc1: compact weight 'shape' must be [24, 32]",
         _compact(lambda man: _put(_weight_of("fc1")(man), "shape", [24, 31]))),
    Case("bad_compact_index_mode", "SI_ERR_MODEL", "compact index 'delta5' is not delta4, delta8 or bitmap",
         _compact(lambda man: _put(_weight_of("fc1")(man), "index", "delta5"))),
    Case("bad_compact_values_mode", "SI_ERR_MODEL", "compact values 'codebook2' is not",
         _compact(lambda man: _put(_weight_of("fc1")(man), "values", "codebook2"))),
    Case("bad_compact_no_nnz", "SI_ERR_FORMAT", "compact weight needs 'nnz'",
         _compact(lambda man: _weight_of("fc1")(man).pop("nnz"))),
    Case("bad_compact_nnz_fraction", "SI_ERR_FORMAT", "compact weight needs 'nnz'",
         _compact(lambda man: _put(_weight_of("fc1")(man), "nnz", 2.5))),
    Case("bad_compact_nnz_more", "SI_ERR_MODEL", "layer fc1: fc1.W.index holds",
         _compact(lambda man: _put(_weight_of("fc1")(man), "nnz", _weight_of("fc1")(man)["nnz"] + 1))),
    Case("bad_compact_nnz_huge", "SI_ERR_MODEL", "nnz = 1000 in a 24 x 32 matrix",
         _compact(lambda man: _put(_weight_of("fc1")(man), "nnz", 1000))),
    Case("bad_compact_symbols_few", "SI_ERR_MODEL", "index symbols for nnz",
         _compact(lambda man: _put(_weight_of("fc1")(man), "symbols", 3))),
    Case("bad_compact_missing_codes", "SI_ERR_FORMAT", "layer fc1: array 'fc1.W.codes' is missing",
         _compact(edit_members=lambda m: m.pop("fc1.W.codes.npy"))),
    Case("bad_compact_index_short", "SI_ERR_MODEL", "layer fc1: 'fc1.W.index' has",
         _compact(edit_members=_set_member_array("fc1.W.index", lambda a: a[:-1]))),
    Case("bad_compact_index_dtype", "SI_ERR_FORMAT", "array 'fc1.W.index' is 1D uint16, expected 1D uint8",
         _compact(edit_members=_set_member_array("fc1.W.index", lambda a: a.astype(np.uint16)))),
    Case("bad_compact_delta_past_end", "SI_ERR_MODEL", ">= rows 24",
         _compact(edit_members=_set_member_array("fc1.W.index", lambda a: np.full_like(a, 0xEE)))),
    Case("bad_compact_filler_past_end", "SI_ERR_MODEL", "filler skips to position",
         _compact(edit_members=_set_member_array("fc1.W.index", lambda a: np.full_like(a, 0xFF)))),
    Case("bad_compact_trailing_filler", "SI_ERR_MODEL", "ends with a filler", _fc1_symbols(_last_entry_filler)),
    Case("bad_compact_index_padding", "SI_ERR_MODEL", "fc1.W.index: the padding nibble after the last symbol is not zero",
         _compact(edit_members=_set_member_array("fc1.W.index", _set_last_nibble))),
    Case("bad_compact_codes_padding", "SI_ERR_MODEL", "fc1.W.codes: the padding nibble after the last code is not zero",
         _compact(edit_members=_set_member_array("fc1.W.codes", _set_last_nibble))),
    Case("bad_compact_code_range", "SI_ERR_MODEL", ">= codebook size 1",
         _compact(edit_members=_set_member_array("fc1.W.codebook", lambda a: a[:1]))),
    Case("bad_compact_codebook_nan", "SI_ERR_MODEL", "fc1.W.codebook[0] is not finite",
         _compact(edit_members=_set_member_array("fc1.W.codebook", lambda a: np.where(np.arange(a.size) == 0, np.nan, a).astype(np.float32)))),
    Case("bad_compact_codebook_17", "SI_ERR_MODEL", "'fc1.W.codebook' must be 1 to 16 float32 values",
         _compact(edit_members=_set_member_array("fc1.W.codebook", lambda a: np.resize(a, 17)))),
    Case("bad_compact_bitmap_popcount", "SI_ERR_MODEL", "conv1.W.index sets",
         _compact(edit_members=_set_member_array("conv1.W.index", _clear_a_bit))),
    Case("bad_compact_bitmap_padding", "SI_ERR_MODEL", "conv1.W.index: padding bits after position 108 are not zero",
         _compact(edit_members=_set_member_array("conv1.W.index", lambda a: a | np.eye(1, a.size, a.size - 1, dtype=np.uint8)[0] * 0x80))),
    Case("bad_compact_float_nan", "SI_ERR_MODEL", "conv1.W.values[0] is not finite",
         _compact(edit_members=_set_member_array("conv1.W.values", lambda a: np.where(np.arange(a.size) == 0, np.nan, a).astype(np.float32)))),
    Case("bad_compact_int8_minus128", "SI_ERR_MODEL", "conv2.W.q[0] = -128",
         _compact(edit_members=_set_member_array("conv2.W.q", lambda a: np.where(np.arange(a.size) == 0, -128, a).astype(np.int8)))),
    Case("bad_compact_int8_scale", "SI_ERR_MODEL", "a weight scale must be finite and > 0",
         _compact(edit_members=_set_member_array("conv2.W.scale", lambda a: -a))),
    Case("bad_compact_int8_scale_short", "SI_ERR_MODEL", "'conv2.W.scale' has 7 elements, expected 8",
         _compact(edit_members=_set_member_array("conv2.W.scale", lambda a: a[:-1]))),
    # deflated members: sizes that lie, a bomb's declared size, a corrupt stream
    Case("bad_deflate_more", "SI_ERR_FORMAT", "member fc1.W.index.npy: inflates to more than the 150 bytes",
         _deflated_patch("fc1.W.index.npy", usize=150)),
    Case("bad_deflate_less", "SI_ERR_FORMAT", "its header declares 100000",
         _deflated_patch("fc1.W.index.npy", usize=100000)),
    Case("bad_deflate_bomb", "SI_ERR_FORMAT", "is not a size deflate can produce",
         _deflated_patch("fc1.W.index.npy", usize=2**31)),
    Case("bad_deflate_corrupt", "SI_ERR_FORMAT", "member fc1.W.index.npy: corrupt deflate stream",
         _deflated_patch("fc1.W.index.npy", data=b"\xff\xff\xff\xff")),
]

BAD_CASES: list[Case] = [
    # container
    Case("bad_truncated_10", "SI_ERR_FORMAT", "too short for a ZIP archive", _bytes_of_base(lambda d: d[:10])),
    Case("bad_truncated_directory", "SI_ERR_FORMAT", "end-of-central-directory record (truncated?)",
         _bytes_of_base(_cut_in_directory)),
    Case("bad_truncated_array", "SI_ERR_FORMAT", "end-of-central-directory record (truncated?)",
         _bytes_of_base(_cut_in_array)),
    Case("bad_middle_removed", "SI_ERR_FORMAT", "beyond the", _bytes_of_base(_drop_middle)),
    Case("bad_garbage", "SI_ERR_FORMAT", "not an .npz file", _garbage),
    Case("bad_empty", "SI_ERR_FORMAT", "empty file", _empty),
    Case("bad_crc", "SI_ERR_FORMAT", "member conv2.W.npy: CRC-32 mismatch", _bytes_of_base(_flip_in_array)),
    Case("bad_deflated", "SI_ERR_UNSUPPORTED", "deflated members need format version 2.1", _compressed),
    Case("bad_savez_compressed", "SI_ERR_UNSUPPORTED", "write float files with numpy.savez, not savez_compressed",
         _npz_compressed),
    Case("bad_directory", "SI_ERR_IO", "not a regular file", _directory),
    # local headers that disagree with the central directory (zipfile trusts the directory)
    Case("bad_local_name", "SI_ERR_FORMAT", "member conv1.b.npy: the local header names it 'conv1.c.npy'",
         _bytes_of_base(_patch_local("conv1.b.npy", 30 + 6, b"c"))),
    Case("bad_local_method", "SI_ERR_FORMAT", "member conv1.b.npy: method 8 in the local header, 0 in the central",
         _bytes_of_base(_patch_local("conv1.b.npy", 8, b"\x08\x00"))),
    Case("bad_local_crc", "SI_ERR_FORMAT", "member fc2.b.npy: local header (CRC",
         _bytes_of_base(_patch_local("fc2.b.npy", 14, b"\x00\x00\x00\x01"))),
    Case("bad_local_size", "SI_ERR_FORMAT", "disagrees with the central directory",
         _bytes_of_base(_patch_local("fc2.b.npy", 18, b"\x10\x00\x00\x00"))),
    Case("bad_local_zip64_size", "SI_ERR_FORMAT", "member fc2.b.npy: local header (CRC",  # the extra's compressed size
         _bytes_of_base(_patch_local("fc2.b.npy", 30 + len("fc2.b.npy") + 4 + 8, b"\x10"))),
    Case("bad_nonexistent", "SI_ERR_IO", "No such file or directory", _nonexistent),
    # members and arrays
    Case("bad_missing_bias", "SI_ERR_FORMAT", "layer conv1: array 'conv1.b' is missing", _remove("conv1.b")),
    Case("bad_missing_indptr", "SI_ERR_FORMAT", "layer fc1: array 'fc1.W.indptr' is missing", _remove("fc1.W.indptr")),
    Case("bad_missing_manifest", "SI_ERR_FORMAT", "'model.json' is missing", _remove("model.json")),
    Case("bad_npy_fortran", "SI_ERR_FORMAT", "member conv1.W.npy: Fortran-order arrays are not supported",
         _set_array("conv1.W", np.asfortranarray)),
    Case("bad_npy_float64", "SI_ERR_FORMAT", "member conv1.W.npy: dtype '<f8' not supported",
         _set_array("conv1.W", lambda w: w.astype(np.float64))),
    Case("bad_npy_huge_dim", "SI_ERR_FORMAT", "dimension 2147483648 too large",
         _edit_arrays(lambda m: m.__setitem__("fc2.b.npy", npy_header_only("<f4", (2147483648,))))),
    Case("bad_npy_size_mismatch", "SI_ERR_FORMAT", "member fc2.b.npy: 20 data bytes for 6 elements of float32",
         _edit_arrays(lambda m: m.__setitem__("fc2.b.npy", npy_header_only("<f4", (6,)) + b"\0" * 20))),
    Case("bad_nan_weight", "SI_ERR_MODEL", "layer conv2: conv2.W[56] is not finite", _set_array("conv2.W", _nan)),
    Case("bad_bias_length", "SI_ERR_MODEL", "bias 'fc2.b' has 4 values, expected 5", _set_array("fc2.b", lambda b: b[:4])),
    # manifest
    Case("bad_invalid_json", "SI_ERR_FORMAT", "model.json: unexpected end",
         _raw_manifest('{"format": "sparseinfer-model", "version": [1, 0], "layers": [')),
    Case("bad_json_not_utf8", "SI_ERR_FORMAT", "model.json: not valid UTF-8",
         _manifest_text(lambda t: t.replace(b'"name": "good_lenet"', b'"name": "caf\xe9"'))),
    Case("bad_json_leading_zero", "SI_ERR_FORMAT", "model.json: bad number",
         _manifest_text(lambda t: t.replace(b'"shape": [16, 16, 2]', b'"shape": [016, 16, 2]'))),
    Case("bad_json_deep", "SI_ERR_FORMAT", "nesting deeper than 32", _raw_manifest("[" * 1000 + "]" * 1000)),
    Case("bad_version", "SI_ERR_UNSUPPORTED", "format version 3 is not supported",
         _edit_manifest(lambda m: m.__setitem__("version", [3, 0]))),
    Case("bad_not_a_model", "SI_ERR_FORMAT", "'format' is not \"sparseinfer-model\"",
         _edit_manifest(lambda m: m.__setitem__("format", "keras"))),
    Case("bad_negative_dim", "SI_ERR_MODEL", "input.shape[0] must be an integer in [1, 2^31)",
         _edit_manifest(lambda m: m["input"].__setitem__("shape", [-16, 16, 2]))),
    Case("bad_negative_units", "SI_ERR_MODEL", "layer fc2: 'units' must be an integer",
         _edit_manifest(lambda m: m["layers"][6].__setitem__("units", -5))),
    Case("bad_huge_input_dim", "SI_ERR_MODEL", "input.shape[1] must be an integer in [1, 2^31)",
         _edit_manifest(lambda m: m["input"].__setitem__("shape", [16, 2 ** 40, 2]))),
    Case("bad_huge_input_product", "SI_ERR_MODEL", "input shape 1048576 x 1048576 x 2 is too large",
         _edit_manifest(lambda m: m["input"].__setitem__("shape", [2 ** 20, 2 ** 20, 2]))),
    Case("bad_huge_activation", "SI_ERR_MODEL", "layer wide: output 150 x 150 x 100000 is too large", _huge_filters),
    Case("bad_unknown_layer", "SI_ERR_UNSUPPORTED", "layer type 'conv3d' is not supported",
         _edit_manifest(lambda m: m["layers"][2].__setitem__("type", "conv3d"))),
    Case("bad_padding", "SI_ERR_MODEL", "padding 'full' is not 'valid' or 'same'",
         _edit_manifest(lambda m: m["layers"][1].__setitem__("padding", "full"))),
    Case("bad_no_flatten", "SI_ERR_MODEL", "layer fc1: dense needs a flat input",
         _edit_manifest(lambda m: m["layers"].pop(4))),
    Case("bad_json_duplicate_key", "SI_ERR_FORMAT", "model.json: duplicate key",
         _manifest_text(lambda t: t.replace(b'"name": "good_lenet"', b'"name": "good_lenet", "name": "other"'))),
    Case("bad_layer_name_control", "SI_ERR_MODEL", "layers[1] name has a control character",
         _edit_manifest(lambda m: m["layers"][1].__setitem__("name", "pool\nrm -rf"))),
    Case("bad_layer_name_long", "SI_ERR_MODEL", "layers[1] name must be 1 to 63 bytes",
         _edit_manifest(lambda m: m["layers"][1].__setitem__("name", "p" * 64))),
    Case("bad_huge_kernel", "SI_ERR_MODEL", "is too large (limit 16777216 taps)",
         _edit_manifest(lambda m: m["layers"][0].update(kernel=[65536, 65536], padding="same"))),
    Case("bad_huge_pool", "SI_ERR_MODEL", "pool window 60000x60000 is larger than its input",
         _edit_manifest(lambda m: m["layers"][1].update(pool=[60000, 60000], padding="same"))),
    # memory: derived forms far larger than the file, a manifest too large to parse cheaply
    Case("bad_empty_csr_4mb", "SI_ERR_MODEL", "layer wide: 1048576 x 16777216 weights are too many to expand to dense",
         lambda outdir, path: wide_empty_csr(path)),
    # the widest input the reader takes (2^31 - 1) under 1024 empty rows, and a convolution of
    # 2^24 taps per output: fuzz seeds that declare large layers in a few KB
    Case("bad_empty_csr_2g_cols", "SI_ERR_MODEL", "layer wide: 1024 x 2147483647 weights are too many to expand to dense",
         lambda outdir, path: wide_empty_csr(path, rows=1024, cols=2 ** 31 - 1)),
    Case("bad_empty_conv_16m_taps", "SI_ERR_NOMEM", "layer conv: out of memory",
         lambda outdir, path: conv_empty_csr(path)),
    Case("bad_manifest_too_big", "SI_ERR_FORMAT", "model.json: 1048577 bytes, more than the limit of 1048576",
         _manifest_text(lambda t: t[:-1] + b" " * (2 ** 20 + 1 - len(t)) + b"}")),
    Case("bad_json_long_array", "SI_ERR_FORMAT", "array with more than 65536 items",
         _manifest_text(lambda t: t[:-1] + b', "pad": [' + b"0," * 65536 + b"0]}")),
    # shapes that do not chain
    Case("bad_dense_cols", "SI_ERR_MODEL", "layer fc1: CSR shape is 24 x 33, expected 24 x 32",
         _with_layers(lambda ls: ls[5].__setitem__("W", np.ones((24, 33), np.float32) * (np.arange(33) % 5 == 0)))),
    Case("bad_dense_cols_dense", "SI_ERR_MODEL", "layer fc2: weight 'fc2.W' is 5 x 23, expected 5 x 24",
         _with_layers(lambda ls: ls[6].__setitem__("W", np.ones((5, 23), np.float32)))),
    Case("bad_conv_cols", "SI_ERR_MODEL", "layer conv2: weight 'conv2.W' is 8 x 45, expected 8 x 54",
         _with_layers(lambda ls: ls[2].__setitem__("W", np.ones((8, 45), np.float32)))),
    Case("bad_valid_window", "SI_ERR_MODEL", "input height 3 is smaller than the window 5",
         _with_layers(lambda ls: ls[0].update(kernel=[5, 5], W=np.ones((6, 50), np.float32)), shape=[3, 16, 2])),
    # CSR structure
    Case("bad_csr_index_range", "SI_ERR_MODEL", ">= cols 32", _csr_edit(_csr_oob)),
    Case("bad_csr_indptr_order", "SI_ERR_MODEL", "must be non-decreasing", _csr_edit(_csr_nonmono)),
    Case("bad_csr_indptr_last", "SI_ERR_MODEL", "expected nnz =", _csr_edit(_csr_last)),
    Case("bad_csr_duplicate", "SI_ERR_MODEL", "CSR must be sorted, no duplicates", _csr_edit(_csr_duplicate)),
    Case("bad_csr_unsorted", "SI_ERR_MODEL", "CSR must be sorted, no duplicates", _csr_edit(_csr_unsorted)),
] + BAD_INT8_CASES + BAD_COMPACT_CASES


FUZZ_ITERATIONS = 1000
FUZZ_SEED = 12345


def write_good(outdir: str) -> list[str]:
    names = []
    for i, (name, (layers, shape, storage)) in enumerate(good_models().items()):
        path = os.path.join(outdir, name + ".npz")
        write_model(path, layers, {"shape": shape}, storage=storage, name=name, deflate=storage == "compact")
        if storage == "compact":  # lossy value modes: the reference runs the weights as decoded
            from sparseinfer.compact import read_model_layers
            layers = read_model_layers(path)[1]
        if name == "good_flat":
            # The other index and pointer dtypes the format allows: uint16 indices, int32 indptr.
            m = read_members(path)
            m["h1.W.indices.npy"] = npy(get_array(m, "h1.W.indices").astype(np.uint16))
            m["h1.W.indptr.npy"] = npy(get_array(m, "h1.W.indptr").astype(np.int32))
            write_members(path, m)
        x = np.random.default_rng(100 + i).uniform(-1.0, 1.0, size=(3, *shape)).astype(np.float32)
        fwd = reference_forward_int8 if any(L.get("quant") for L in layers) else reference_forward
        y = fwd(layers, x.astype(np.float64)).astype(np.float32)
        x.astype("<f4").tofile(os.path.join(outdir, name + ".in.f32"))
        y.astype("<f4").tofile(os.path.join(outdir, name + ".out.f32"))
        names.append(name + ".npz")
    return names


def write_bad(outdir: str, case: Case) -> str:
    return case.build(outdir, os.path.join(outdir, case.file))


def generate(outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    lines = [f"good\t{f}\tSI_OK\t-" for f in write_good(outdir)]
    for case in BAD_CASES:
        write_bad(outdir, case)
        assert "\t" not in case.expect and "\n" not in case.expect
        lines.append(f"bad\t{case.file}\t{case.status}\t{case.expect}")
    lines.append(f"fuzz\t{BASE}\t{FUZZ_ITERATIONS}\t{FUZZ_SEED}")
    with open(os.path.join(outdir, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_cases.py OUTDIR")
    generate(sys.argv[1])
