"""Shared helpers for tests that compare the runtime with a reference."""
from __future__ import annotations

import socket

import numpy as np


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float, what: str) -> None:
    """|actual - expected| <= atol + rtol * |expected| elementwise; on failure, name the
    worst element (sample, index) and both values."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    excess = np.abs(actual - expected) - (atol + rtol * np.abs(expected))
    if (excess > 0).any():
        idx = np.unravel_index(int(np.argmax(excess)), excess.shape)
        n_bad = int((excess > 0).sum())
        raise AssertionError(
            f"{what}: {n_bad} of {excess.size} elements out of tolerance (rtol {rtol}, atol {atol}); "
            f"worst at {tuple(int(i) for i in idx)}: got {actual[idx]!r}, expected {expected[idx]!r}")


def randomize_keras(model, seed: int, logit_scale: float = 1.0) -> None:
    """He-scaled random weights and small random biases, so activations neither vanish nor
    explode through a deep net; the last layer is scaled so the softmax is not saturated."""
    rng = np.random.default_rng(seed)
    weighted = [l for l in model.layers if l.get_weights()]
    for i, layer in enumerate(weighted):
        ws = layer.get_weights()
        k = ws[0]
        fan_in = int(np.prod(k.shape[:-1]))
        scale = np.sqrt(2.0 / fan_in) * (logit_scale if i == len(weighted) - 1 else 1.0)
        new = [(rng.standard_normal(k.shape) * scale).astype(np.float32)]
        if len(ws) > 1:
            new.append((rng.standard_normal(ws[1].shape) * 0.01).astype(np.float32))
        layer.set_weights(new)


def prune_keras_magnitude(layer, keep: float) -> None:
    """Zero all but the largest-magnitude `keep` fraction of a layer's kernel."""
    ws = layer.get_weights()
    k = ws[0]
    thr = np.quantile(np.abs(k), 1.0 - keep)
    ws[0] = np.where(np.abs(k) >= thr, k, 0).astype(np.float32)
    layer.set_weights(ws)


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports on localhost that were free a moment ago (for test clusters; racy on a
    busy machine, so pick them just before launching)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def keras_float64(model, x: np.ndarray) -> np.ndarray:
    """The model's outputs computed by TensorFlow in float64 on its (float32) weights: Conv2D,
    MaxPooling2D, Flatten, Dense and their activations, layer by layer. A reference whose own
    rounding is ~1e-13, for deep nets where TensorFlow's float32 result is itself most of the
    float32 tolerance away from the exact one (VGG19: 0.81 of 1e-4 on one probability)."""
    import tensorflow as tf

    h = tf.constant(np.asarray(x, np.float64))
    for layer in model.layers:
        kind = layer.__class__.__name__
        if kind == "InputLayer":
            continue
        if kind == "Conv2D":
            w = layer.get_weights()
            h = tf.nn.conv2d(h, tf.constant(w[0], tf.float64), strides=layer.strides, padding=layer.padding.upper())
            if len(w) > 1:
                h = h + tf.constant(w[1], tf.float64)
        elif kind == "MaxPooling2D":
            h = tf.nn.max_pool2d(h, layer.pool_size, layer.strides, layer.padding.upper())
        elif kind == "Flatten":
            h = tf.reshape(h, (h.shape[0], -1))
        elif kind == "Dense":
            w = layer.get_weights()
            # 1024 units at a time: VGG19's fc1 whole in float64 would be 822 MB more
            h = tf.concat([tf.matmul(h, tf.constant(w[0][:, j:j + 1024], tf.float64))
                           for j in range(0, w[0].shape[1], 1024)], axis=1)
            if len(w) > 1:
                h = h + tf.constant(w[1], tf.float64)
        elif kind not in ("Dropout", "Activation", "ReLU", "Softmax"):
            raise ValueError(f"keras_float64: layer {layer.name} ({kind}) is not supported")
        act = getattr(layer, "activation", None)
        name = getattr(act, "__name__", "linear") if kind != "ReLU" else "relu"
        if kind == "Softmax":
            name = "softmax"
        if name == "relu":
            h = tf.nn.relu(h)
        elif name == "softmax":
            h = tf.nn.softmax(h, axis=-1)
        elif name != "linear":
            raise ValueError(f"keras_float64: activation {name} of layer {layer.name} is not supported")
    return h.numpy()
