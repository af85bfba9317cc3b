"""Export a Keras 3 model (a single chain of supported layers) as a sparseinfer model file.

Supported layers (see docs/format.md): InputLayer, Conv2D, Dense, MaxPooling2D, Flatten,
ReLU, Softmax, Activation('relu' | 'softmax' | 'linear'), Dropout (skipped: inference).
Keras is imported lazily, inside export_keras, so ``import sparseinfer`` never pulls in
TensorFlow.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

import numpy as np

from .format import conv_kernel_to_matrix, write_model

__all__ = ["export_keras", "default_input_spec", "CAFFE_BGR_MEAN"]

#: per-channel means (BGR order) of keras.applications' "caffe" preprocessing (VGG, ResNet50)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

_ACTIVATIONS = ("linear", "relu", "softmax")


def default_input_spec(shape: Iterable[int]) -> dict:
    """The input spec export_keras uses when none is given, for an ``(h, w, c)`` input.

    1 channel: gray, stretched to (h, w), ``x = pixel / 255``.
    3 channels: BGR with the Keras/caffe VGG means and std 1; a 224x224x3 input is
    resized so the shorter side is 256 and centre-cropped to 224 (the ImageNet recipe),
    any other size is stretched to (h, w).
    """
    h, w, c = (int(s) for s in shape)
    if c == 1:
        return {"shape": [h, w, 1], "color": "gray", "resize": {"mode": "stretch", "size": [h, w]},
                "crop": None, "mean": [0.0], "std": [255.0], "invert": False}
    if c == 3:
        if (h, w) == (224, 224):
            resize: dict[str, Any] = {"mode": "shorter", "size": 256}
            crop: list[int] | None = [224, 224]
        else:
            resize, crop = {"mode": "stretch", "size": [h, w]}, None
        return {"shape": [h, w, 3], "color": "bgr", "resize": resize, "crop": crop,
                "mean": list(CAFFE_BGR_MEAN), "std": [1.0, 1.0, 1.0], "invert": False}
    raise ValueError(f"no default input spec for {c} channels (input shape {(h, w, c)}); "
                     "pass input_spec explicitly")


def _what(layer: Any) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _activation_name(layer: Any, keras: Any) -> str:
    act = getattr(layer, "activation", None)
    try:
        name = keras.activations.serialize(act)
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{_what(layer)}: cannot identify activation {act!r}; "
                         f"supported: {_ACTIVATIONS}") from e
    if isinstance(name, dict):  # a configured/custom activation object
        name = name.get("config", {}).get("name", name.get("class_name"))
    if name not in _ACTIVATIONS:
        raise ValueError(f"{_what(layer)}: activation {name!r} is not supported; "
                         f"supported: {_ACTIVATIONS}")
    return str(name)


def _np(keras: Any, v: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float32)


def _pair(v: Any) -> list[int]:
    if isinstance(v, (int, np.integer)):
        return [int(v), int(v)]
    return [int(x) for x in v]


def _same_or_valid(layer: Any, padding: str) -> str:
    padding = str(padding).lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"{_what(layer)}: padding {padding!r} not supported, expected 'valid' or 'same'")
    return padding


def _out_size(n: int, k: int, s: int, padding: str) -> int:
    return -(-n // s) if padding == "same" else (n - k) // s + 1


def _chain(model: Any, keras: Any) -> list[Any]:
    """The model's layers in order, after checking that they form a single chain."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"export_keras needs a keras.Model, got {type(model).__name__}")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError) as e:
        raise ValueError(f"model {model.name!r} is not built: give it a keras.Input "
                         f"with the input shape ({e})") from e
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"model {model.name!r}: needs exactly one input and one output, has "
                         f"{len(inputs)} inputs and {len(outputs)} outputs")
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    if not layers:
        raise ValueError(f"model {model.name!r} has no layers")
    prev = model.inputs[0]
    for layer in layers:
        try:
            inp = layer.input
        except (AttributeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{_what(layer)}: not part of a single chain "
                             f"(used more than once or not connected: {e})") from e
        if inp is not prev:
            raise ValueError(f"{_what(layer)}: model is not a single chain; its input is not "
                             "the output of the layer before it")
        prev = layer.output
    if model.outputs[0] is not prev:
        raise ValueError(f"model {model.name!r}: its output is not the last layer's output")
    return layers


def export_keras(model: Any, path: str | os.PathLike, input_spec: Mapping[str, Any] | None = None,
                 classes: Iterable[str] | None = None, name: str | None = None,
                 storage: str = "auto") -> dict:
    """Write a Keras 3 model as a sparseinfer model file and return its manifest.

    ``model``: a Sequential or functional model that is a single chain of InputLayer,
    Conv2D (channels_last, dilation 1, groups 1), Dense (on a flat input), MaxPooling2D,
    Flatten, ReLU / Softmax / Activation('relu'|'softmax'|'linear') and Dropout (skipped).
    Activations linear, relu and softmax. Anything else raises ValueError naming the layer.
    ``input_spec``: the manifest's ``input`` (docs/format.md); None for
    default_input_spec(model input shape); a given spec without ``shape`` gets the model's.
    ``classes``: optional class names, one per output. ``name``: defaults to model.name.
    ``storage``: ``auto`` (CSR where smaller), ``dense`` or ``csr``; see write_model.
    """
    import keras  # lazy: TensorFlow is only needed to export

    layers = _chain(model, keras)
    in_shape = tuple(model.inputs[0].shape)[1:]
    if len(in_shape) != 3 or any(s is None for s in in_shape):
        raise ValueError(f"model {model.name!r}: input shape {in_shape} must be a fixed (h, w, c)")
    shape: tuple[int, ...] = tuple(int(s) for s in in_shape)

    if input_spec is None:
        spec = default_input_spec(shape)
    else:
        spec = dict(input_spec)
        spec.setdefault("shape", list(shape))
        if [int(s) for s in spec["shape"]] != list(shape):
            raise ValueError(f"input_spec shape {list(spec['shape'])} does not match the model's "
                             f"input shape {list(shape)}")

    L = keras.layers
    out: list[dict[str, Any]] = []
    for layer in layers:
        lname = layer.name
        if isinstance(layer, L.Dropout):  # includes SpatialDropout*: identity at inference
            continue
        if isinstance(layer, L.Conv2D):
            if len(shape) != 3:
                raise ValueError(f"{_what(layer)}: input must be (h, w, c), got shape {shape}")
            if layer.data_format != "channels_last":
                raise ValueError(f"{_what(layer)}: data_format {layer.data_format!r}, expected channels_last")
            if _pair(layer.dilation_rate) != [1, 1]:
                raise ValueError(f"{_what(layer)}: dilation_rate {layer.dilation_rate}, expected 1")
            if int(getattr(layer, "groups", 1)) != 1:
                raise ValueError(f"{_what(layer)}: groups {layer.groups}, expected 1")
            padding = _same_or_valid(layer, layer.padding)
            kh, kw = _pair(layer.kernel_size)
            sh, sw = _pair(layer.strides)
            kernel = _np(keras, layer.kernel)
            if kernel.shape != (kh, kw, shape[2], layer.filters):
                raise ValueError(f"{_what(layer)}: kernel shape {kernel.shape}, expected "
                                 f"{(kh, kw, shape[2], layer.filters)}")
            bias = _np(keras, layer.bias) if layer.use_bias else None
            out.append({"name": lname, "type": "conv2d", "kernel": [kh, kw], "strides": [sh, sw],
                        "padding": padding, "activation": _activation_name(layer, keras),
                        "W": conv_kernel_to_matrix(kernel), "b": bias})
            oh, ow = _out_size(shape[0], kh, sh, padding), _out_size(shape[1], kw, sw, padding)
            if oh < 1 or ow < 1:
                raise ValueError(f"{_what(layer)}: output would be empty for input {shape}")
            shape = (oh, ow, int(layer.filters))
        elif isinstance(layer, L.Dense):
            if len(shape) != 1:
                raise ValueError(f"{_what(layer)}: input must be flat (add Flatten before it), "
                                 f"got shape {shape}")
            kernel = _np(keras, layer.kernel)
            if kernel.shape != (shape[0], layer.units):
                raise ValueError(f"{_what(layer)}: kernel shape {kernel.shape}, expected "
                                 f"{(shape[0], layer.units)}")
            bias = _np(keras, layer.bias) if layer.use_bias else None
            out.append({"name": lname, "type": "dense", "activation": _activation_name(layer, keras),
                        "W": np.ascontiguousarray(kernel.T), "b": bias})
            shape = (int(layer.units),)
        elif isinstance(layer, L.MaxPooling2D):
            if len(shape) != 3:
                raise ValueError(f"{_what(layer)}: input must be (h, w, c), got shape {shape}")
            if layer.data_format != "channels_last":
                raise ValueError(f"{_what(layer)}: data_format {layer.data_format!r}, expected channels_last")
            padding = _same_or_valid(layer, layer.padding)
            ph, pw = _pair(layer.pool_size)
            sh, sw = _pair(layer.strides if layer.strides is not None else layer.pool_size)
            out.append({"name": lname, "type": "maxpool2d", "pool": [ph, pw], "strides": [sh, sw],
                        "padding": padding})
            oh, ow = _out_size(shape[0], ph, sh, padding), _out_size(shape[1], pw, sw, padding)
            if oh < 1 or ow < 1:
                raise ValueError(f"{_what(layer)}: output would be empty for input {shape}")
            shape = (oh, ow, shape[2])
        elif isinstance(layer, L.Flatten):
            if getattr(layer, "data_format", "channels_last") != "channels_last":
                raise ValueError(f"{_what(layer)}: data_format {layer.data_format!r}, expected channels_last")
            out.append({"name": lname, "type": "flatten"})
            shape = (int(np.prod(shape)),)
        elif isinstance(layer, L.ReLU):
            cfg = layer.get_config()
            if (cfg.get("max_value") is not None or float(cfg.get("negative_slope", 0.0)) != 0.0
                    or float(cfg.get("threshold", 0.0)) != 0.0):
                raise ValueError(f"{_what(layer)}: only a plain ReLU is supported (max_value None, "
                                 f"negative_slope 0, threshold 0), got {cfg.get('max_value')}, "
                                 f"{cfg.get('negative_slope')}, {cfg.get('threshold')}")
            out.append({"name": lname, "type": "relu"})
        elif isinstance(layer, L.Softmax):
            axis = layer.axis
            axes = [axis] if isinstance(axis, int) else list(axis)
            if len(axes) != 1 or axes[0] not in (-1, len(shape)):
                raise ValueError(f"{_what(layer)}: softmax over axis {axis}, only the last axis is supported")
            out.append({"name": lname, "type": "softmax"})
        elif isinstance(layer, L.Activation):
            act = _activation_name(layer, keras)
            if act != "linear":
                out.append({"name": lname, "type": act})
        else:
            raise ValueError(f"{_what(layer)}: unsupported layer; supported: InputLayer, Conv2D, "
                             "Dense, MaxPooling2D, Flatten, ReLU, Softmax, Activation, Dropout")

    if classes is not None:
        classes = [str(c) for c in classes]
        n_out = int(np.prod(shape))
        if len(classes) != n_out:
            raise ValueError(f"model {model.name!r}: {len(classes)} class names for {n_out} outputs")
    return write_model(path, out, spec, classes=classes, name=name or model.name, storage=storage)
