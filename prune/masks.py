"""Pruning masks: one 0/1 array per prunable kernel (Conv2D, Dense), held through training.

``threshold_mask`` prunes ``|w| < q * sigma`` on top of an existing mask (masks only ever
lose entries); ``apply_masks`` zeroes the pruned weights; ``MaskCallback`` re-applies the
masks after every optimizer step of ``model.fit`` so pruned weights stay exactly zero
(the optimizer's update is overwritten, whatever its momentum says). Masks are not layers:
the model keeps its ordinary Keras layers, so export_keras writes the masked kernels as
they are (zeros stored as CSR where that is smaller).

``dropout_rates`` implements Han et al. 2015's rule for the dropout after a pruned layer:
``D = D0 * sqrt(C / C0)`` with ``C`` the layer's remaining connections, ``C0`` its original.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["prunable_layers", "kernel_of", "threshold_mask", "apply_masks", "mask_callback",
           "densities", "dropout_rate", "dropout_rates", "set_dropout_rates"]


def prunable_layers(model: Any) -> list[Any]:
    """The model's Conv2D and Dense layers, in order."""
    import keras
    return [l for l in model.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]


def kernel_of(model: Any, name: str) -> np.ndarray:
    return np.asarray(model.get_layer(name).kernel.numpy())


def threshold_mask(kernel: np.ndarray, q: float, sigma: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask keeping ``|kernel| >= q * sigma`` (and only where ``mask`` keeps); bool,
    not float32, because VGG19's masks alone would otherwise take 575 MB per copy."""
    keep = np.abs(np.asarray(kernel)) >= np.float32(q * sigma)
    if mask is not None:
        keep &= np.asarray(mask) != 0
    return keep


def apply_masks(model: Any, masks: Mapping[str, np.ndarray]) -> None:
    """Zero every pruned weight (kernel * mask), in place."""
    for name, m in masks.items():
        k = model.get_layer(name).kernel
        k.assign(np.where(np.asarray(m) != 0, np.asarray(k.numpy()), np.float32(0)))


def densities(model: Any, names: list[str] | None = None) -> dict[str, float]:
    """Fraction of non-zero kernel weights per prunable layer."""
    out = {}
    for layer in prunable_layers(model):
        if names is None or layer.name in names:
            k = np.asarray(layer.kernel.numpy())
            out[layer.name] = float(np.count_nonzero(k)) / k.size
    return out


def mask_callback(masks: Mapping[str, np.ndarray]) -> Any:
    """A keras Callback that re-applies ``masks`` after every training batch (to the layers
    that train: a frozen layer's weights cannot move, and its mask as a float32 constant would
    only take memory)."""
    import keras
    import tensorflow as tf

    class MaskCallback(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            pairs = [(self.model.get_layer(n).kernel, tf.constant(np.asarray(m, dtype=np.float32)))
                     for n, m in masks.items() if self.model.get_layer(n).trainable]

            @tf.function
            def apply():  # one graph call per batch, not one eager op per layer
                for var, m in pairs:
                    var.assign(var * m)

            self._apply = apply
            self._apply()

        def on_train_batch_end(self, batch, logs=None):
            self._apply()

        def on_train_end(self, logs=None):
            self._apply()

    return MaskCallback()


def dropout_rate(d0: float, c: int, c0: int) -> float:
    """Han et al. 2015, eq. 2: the dropout rate after pruning a layer from ``c0`` to ``c``
    connections, ``D = D0 * sqrt(C / C0)``."""
    if c0 <= 0 or c < 0 or c > c0:
        raise ValueError(f"need 0 <= C <= C0 and C0 > 0, got C={c}, C0={c0}")
    if not 0.0 <= d0 < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {d0}")
    return float(d0 * math.sqrt(c / c0))


def dropout_rates(model: Any, base_rates: Mapping[str, float], original_connections: Mapping[str, int]) -> dict[str, float]:
    """New rate of each Dropout layer: the rule of dropout_rate applied with the
    connections of the nearest Conv2D/Dense layer before it (the layer whose outputs it drops).

    ``base_rates``: the Dropout layers' original rates; ``original_connections``: the
    prunable layers' kernel sizes before pruning.
    """
    import keras
    rates: dict[str, float] = {}
    last = None
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            last = layer
        elif isinstance(layer, keras.layers.Dropout) and layer.name in base_rates:
            if last is None:
                rates[layer.name] = float(base_rates[layer.name])
                continue
            c = int(np.count_nonzero(last.kernel.numpy()))
            rates[layer.name] = dropout_rate(float(base_rates[layer.name]), c,
                                             int(original_connections[last.name]))
    return rates


def set_dropout_rates(model: Any, rates: Mapping[str, float]) -> None:
    """Set the Dropout layers' rates (recompile afterwards: fit traces the rate in)."""
    for name, r in rates.items():
        model.get_layer(name).rate = float(r)
