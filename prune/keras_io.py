"""Rebuild a Keras model from a sparseinfer model file, with exactly the file's weights.

This lets TensorFlow evaluate what the C runtime will run: the weights are read with
``numpy.load(path, allow_pickle=False)`` (CSR matrices densified with NumPy) and set
bit for bit into an equivalent Keras model.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

from sparseinfer.format import FORMAT_NAME, FORMAT_VERSION, matrix_to_conv_kernel

__all__ = ["keras_from_model_file", "load_weights"]


def _member(z: Any, path: str, name: str) -> np.ndarray:
    if name not in z.files:
        raise ValueError(f"{path}: member {name!r} missing")
    return z[name]


def _csr_to_dense(z: Any, path: str, lname: str, prefix: str) -> np.ndarray:
    data = _member(z, path, prefix + ".data")
    indices = _member(z, path, prefix + ".indices")
    indptr = _member(z, path, prefix + ".indptr")
    shape = _member(z, path, prefix + ".shape")
    if shape.shape != (2,) or (shape < 0).any():
        raise ValueError(f"{path}: layer {lname}: {prefix}.shape must be 2 non-negative ints, got {shape}")
    rows, cols = (int(s) for s in shape)
    nnz = data.shape[0]
    if data.ndim != 1 or indices.shape != (nnz,) or indptr.shape != (rows + 1,):
        raise ValueError(f"{path}: layer {lname}: CSR arrays have shapes data {data.shape}, "
                         f"indices {indices.shape}, indptr {indptr.shape} for {rows}x{cols}")
    counts = np.diff(indptr.astype(np.int64))
    if int(indptr[0]) != 0 or int(indptr[-1]) != nnz or (counts < 0).any():
        raise ValueError(f"{path}: layer {lname}: {prefix}.indptr is not a valid row pointer array")
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= cols):
        raise ValueError(f"{path}: layer {lname}: {prefix}.indices out of range [0, {cols})")
    w = np.zeros((rows, cols), dtype=np.float32)
    w[np.repeat(np.arange(rows), counts), indices.astype(np.int64)] = data.astype(np.float32, copy=False)
    return w


def load_weights(path: str | os.PathLike) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray | None]]]:
    """The manifest and ``{layer name: (W, b)}`` (W dense float32, one row per output)."""
    path = os.fspath(path)
    weights: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    with np.load(path, allow_pickle=False) as z:
        manifest = json.loads(_member(z, path, "model.json").tobytes().decode("utf-8"))
        if manifest.get("format") != FORMAT_NAME:
            raise ValueError(f"{path}: not a {FORMAT_NAME} file (format {manifest.get('format')!r})")
        major = list(manifest.get("version", []))[:1]
        if major not in ([FORMAT_VERSION[0]], [2]):
            raise ValueError(f"{path}: format version {manifest.get('version')} not supported "
                             f"(expected major {FORMAT_VERSION[0]} or 2)")
        quant = [l["name"] for l in manifest["layers"] if l.get("quant")]
        if quant:
            raise ValueError(f"{path}: int8 layers {quant}: TensorFlow runs float models only "
                             "(evaluate int8 files with the C runtime)")
        for layer in manifest["layers"]:
            if layer["type"] not in ("conv2d", "dense"):
                continue
            lname, wspec = layer["name"], layer["weight"]
            if wspec["format"] == "dense":
                w = np.asarray(_member(z, path, wspec["array"]), dtype=np.float32)
            elif wspec["format"] == "csr":
                w = _csr_to_dense(z, path, lname, wspec["prefix"])
            elif wspec["format"] == "compact":  # version 2.1: decoded by the NumPy reference decoder
                from sparseinfer.compact import decode_compact
                w = decode_compact(wspec, lambda name: _member(z, path, name))
            else:
                raise ValueError(f"{path}: layer {lname}: unknown weight format {wspec['format']!r}")
            b = None
            if layer.get("bias") is not None:
                b = np.asarray(_member(z, path, layer["bias"]), dtype=np.float32)
            weights[lname] = (w, b)
    return manifest, weights


def keras_from_model_file(path: str | os.PathLike) -> Any:
    """A ``keras.Model`` (functional, float32) computing what the model file describes.

    Layers keep the file's names. Conv weights are converted back to HWIO with
    matrix_to_conv_kernel, dense weights transposed; both are exact, so the Keras
    weights equal the file's bit for bit. Input preprocessing (``manifest["input"]``)
    is not part of the model: feed ``(pixel - mean) / std`` like the runtime does.
    """
    import keras
    from keras import layers as L

    manifest, weights = load_weights(path)
    h, w, c = (int(s) for s in manifest["input"]["shape"])
    names = {l["name"] for l in manifest["layers"]}
    in_name = "input"
    while in_name in names:
        in_name = "_" + in_name
    inp = keras.Input(shape=(h, w, c), name=in_name)
    x = inp
    for layer in manifest["layers"]:
        lname, ltype = layer["name"], layer["type"]
        if ltype == "conv2d":
            wm, b = weights[lname]
            kh, kw = layer["kernel"]
            cin = int(x.shape[-1])
            if wm.shape != (layer["filters"], kh * kw * cin):
                raise ValueError(f"{path}: layer {lname}: W shape {wm.shape}, expected "
                                 f"{(layer['filters'], kh * kw * cin)}")
            k = L.Conv2D(layer["filters"], (kh, kw), strides=tuple(layer["strides"]),
                         padding=layer["padding"], activation=layer["activation"],
                         use_bias=b is not None, name=lname, kernel_initializer="zeros")
            x = k(x)
            k.set_weights([matrix_to_conv_kernel(wm, kh, kw, cin)] + ([b] if b is not None else []))
            del weights[lname], wm  # one layer's arrays at a time beside the variables
        elif ltype == "dense":
            wm, b = weights[lname]
            if len(x.shape) != 2 or wm.shape[1] != int(x.shape[-1]):
                raise ValueError(f"{path}: layer {lname}: W shape {wm.shape} does not fit input "
                                 f"shape {tuple(x.shape)[1:]}")
            k = L.Dense(layer["units"], activation=layer["activation"], use_bias=b is not None, name=lname,
                        kernel_initializer="zeros")
            x = k(x)
            k.set_weights([np.ascontiguousarray(wm.T)] + ([b] if b is not None else []))
            del weights[lname], wm
        elif ltype == "maxpool2d":
            x = L.MaxPooling2D(tuple(layer["pool"]), strides=tuple(layer["strides"]),
                               padding=layer["padding"], name=lname)(x)
        elif ltype == "flatten":
            x = L.Flatten(name=lname)(x)
        elif ltype == "relu":
            x = L.ReLU(name=lname)(x)
        elif ltype == "softmax":
            x = L.Softmax(name=lname)(x)
        else:
            raise ValueError(f"{path}: layer {lname}: unknown type {ltype!r}")
    return keras.Model(inp, x, name=str(manifest.get("name", "model")))
