"""Remove dead neurons from a pruned chain model, leaving its outputs unchanged.

A neuron (a Dense unit or a Conv2D filter) of a prunable layer that is followed by another
prunable layer is *dead* when

* it has no outgoing connections: every weight of the next layer reading it is zero, so
  its output is never used; it is dropped with its bias; or
* it has no incoming connections: all its kernel weights are zero, so it outputs the
  constant ``act(bias)`` everywhere. The constant goes through the layers in between
  (max-pooling, dropout, flatten and ReLU keep a constant constant) and adds a fixed
  amount to each of the next layer's outputs; that amount is folded into the next
  layer's bias, then the neuron is dropped. For a next Conv2D this is exact only with
  ``valid`` padding (with ``same`` padding the zero border makes the input non-constant),
  so there it is done only when the constant is 0.

Removal shrinks the layer (fewer units/filters) and the next layer's input (Dense:
its kernel rows; Conv2D: its kernel's input channels; Dense after Flatten: the rows of
every spatial position of that channel). It repeats until nothing changes (removing a
neuron can leave the one before it without outgoing connections). The last prunable
layer's outputs are the model's outputs and are never removed.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["remove_dead_neurons"]

_PASS = ("MaxPooling2D", "Dropout", "SpatialDropout2D", "Flatten", "ReLU", "Activation")


def _act_name(layer: Any) -> str | None:
    import keras
    act = getattr(layer, "activation", None)
    if act is None:
        return "linear"
    try:
        name = keras.activations.serialize(act)
    except (ValueError, TypeError, AttributeError):
        return None
    if isinstance(name, dict):
        name = name.get("config", {}).get("name", name.get("class_name"))
    return name if name in ("linear", "relu") else None


def _apply_act(name: str | None, v: np.ndarray) -> np.ndarray | None:
    if name == "linear":
        return v
    if name == "relu":
        return np.maximum(v, 0)
    return None


def _plain_relu(layer: Any) -> bool:
    cfg = layer.get_config()
    return (cfg.get("max_value") is None and float(cfg.get("negative_slope", 0.0)) == 0.0
            and float(cfg.get("threshold", 0.0)) == 0.0)


def remove_dead_neurons(model: Any) -> tuple[Any, dict]:
    """A new Sequential model without ``model``'s dead neurons, and a report
    ``{"layers": {name: {"before": n, "after": n, "removed_no_in": k, "removed_no_out": k}},
    "connections_removed": nnz of removed weights}``.

    ``model``: a single chain (Sequential or functional) of InputLayer, Conv2D, Dense,
    MaxPooling2D, Dropout, Flatten, ReLU and Activation layers.
    """
    import keras

    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    kinds = []
    for l in layers:
        if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense)):
            kinds.append("p")
        elif type(l).__name__ in _PASS:
            kinds.append(type(l).__name__)
        else:
            raise ValueError(f"remove_dead_neurons: layer {l.name!r} ({type(l).__name__}) not supported")
    weights = {l.name: [np.array(w, dtype=np.float32) for w in l.get_weights()] for l in layers}
    pidx = [i for i, k in enumerate(kinds) if k == "p"]
    report = {"layers": {layers[i].name: {"before": int(weights[layers[i].name][0].shape[-1]),
                                          "after": None, "removed_no_in": 0, "removed_no_out": 0}
                         for i in pidx[:-1]},
              "connections_removed": 0, "bias_folds": 0}

    changed = True
    while changed:
        changed = False
        for a, b in zip(pidx, pidx[1:]):
            la, lb = layers[a], layers[b]
            between = layers[a + 1:b]
            wa = weights[la.name]
            wb = weights[lb.name]
            ka = wa[0]
            n = ka.shape[-1]
            if n <= 1:
                continue
            ba = wa[1] if len(wa) > 1 else np.zeros(n, np.float32)
            kb = wb[0]
            flat_from_conv = isinstance(lb, keras.layers.Dense) and ka.ndim == 4
            # the next layer's weights reading each neuron: (n, ...) view
            if isinstance(lb, keras.layers.Conv2D):
                reads = np.moveaxis(kb, 2, 0)                 # (n, kh, kw, m)
            elif flat_from_conv:
                reads = np.moveaxis(kb.reshape(-1, n, kb.shape[-1]), 1, 0)   # (n, positions, m)
            else:
                reads = kb                                     # (n, m)
            no_out = ~reads.reshape(n, -1).any(axis=1)
            no_in = ~ka.reshape(-1, n).any(axis=0)
            # the constant a neuron without inputs feeds the next layer
            const = _apply_act(_act_name(la), ba.astype(np.float64))
            for l in between:
                if const is None:
                    break
                if type(l).__name__ == "ReLU":
                    const = np.maximum(const, 0) if _plain_relu(l) else None
                elif type(l).__name__ == "Activation":
                    const = _apply_act(_act_name(l), const)
            foldable = np.zeros(n, bool) if const is None else no_in.copy()
            if const is not None and isinstance(lb, keras.layers.Conv2D) and lb.padding != "valid":
                foldable &= const == 0
            remove = no_out | foldable
            if remove.all():
                remove[np.argmax(~no_out) if (~no_out).any() else 0] = False
            if not remove.any():
                continue
            changed = True
            fold = remove & ~no_out & (const != 0) if const is not None else np.zeros(n, bool)
            if fold.any():
                if len(wb) < 2:
                    raise ValueError(f"layer {lb.name!r} has no bias to fold a constant input into")
                c = const.astype(np.float64)
                add = np.einsum("k,k...->...", c[fold], reads[fold].astype(np.float64))
                add = add.reshape(-1, kb.shape[-1]).sum(axis=0)
                wb[1] = (wb[1].astype(np.float64) + add).astype(np.float32)
                report["bias_folds"] += int(fold.sum())
            keep = ~remove
            rep = report["layers"][la.name]
            rep["removed_no_out"] += int(no_out.sum())
            rep["removed_no_in"] += int((remove & ~no_out).sum())
            report["connections_removed"] += int(np.count_nonzero(ka[..., remove]))
            report["connections_removed"] += int(np.count_nonzero(reads[remove]))
            wa[0] = np.ascontiguousarray(ka[..., keep])
            if len(wa) > 1:
                wa[1] = np.ascontiguousarray(ba[keep])
            if isinstance(lb, keras.layers.Conv2D):
                wb[0] = np.ascontiguousarray(kb[:, :, keep, :])
            elif flat_from_conv:
                wb[0] = np.ascontiguousarray(kb.reshape(-1, n, kb.shape[-1])[:, keep, :].reshape(-1, kb.shape[-1]))
            else:
                wb[0] = np.ascontiguousarray(kb[keep])

    for name, rep in report["layers"].items():
        rep["after"] = int(weights[name][0].shape[-1])

    # rebuild with the new widths
    new_layers = []
    for l in layers:
        cfg = l.get_config()
        if l.name in report["layers"]:
            key = "filters" if isinstance(l, keras.layers.Conv2D) else "units"
            cfg[key] = report["layers"][l.name]["after"]
        new_layers.append(type(l).from_config(cfg))
    in_shape = tuple(model.inputs[0].shape[1:])
    new = keras.Sequential([keras.Input(shape=in_shape, name=model.inputs[0].name or "input")] + new_layers,
                           name=model.name)
    for l in new_layers:
        if weights[l.name]:
            l.set_weights(weights[l.name])
    return new, report
