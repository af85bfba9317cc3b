"""Pruning schedules: which layers are pruned together, and the q steps of their threshold.

A layer's weights are pruned where ``|w| < q * sigma`` (``sigma``: the std of the layer's
original, unpruned weights; docs/pruning.md says why). ``q`` rises step by step; after
each step the model is fine-tuned, and raising stops for a group as soon as validation
accuracy cannot come back within ``tolerance`` of the baseline (the last good step is kept).

Every class validates its arguments in the constructor (ValueError naming the argument)
and round-trips through ``to_config()`` / ``from_config()`` (plain JSON types), modelled on
TensorFlow Model Optimization's ``pruning_schedule.py``.
"""
from __future__ import annotations

import json
import math
import numbers
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["QSchedule", "LayerGroup", "PruningSchedule", "DEFAULT_CONV_STEP", "DEFAULT_DENSE_STEP"]

#: default q step of a group of convolutional layers (fewer, more sensitive weights)
DEFAULT_CONV_STEP = 0.1
#: default q step of a group of fully connected layers
DEFAULT_DENSE_STEP = 0.2


def _number(name: str, v: Any, *, low: float | None = None, low_open: bool = False,
            high: float | None = None, high_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    v = float(v)
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {v}")
    return v


def _int(name: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    if int(v) < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    return int(v)


def _check_keys(cls: str, config: Mapping[str, Any], allowed: Iterable[str]) -> None:
    if not isinstance(config, Mapping):
        raise ValueError(f"{cls} config must be a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"{cls}: unknown config keys {unknown} (allowed: {sorted(allowed)})")


class QSchedule:
    """The q values tried in turn: ``start, start + step, ...`` up to ``max_q``, or an
    explicit increasing list ``values``.

    ``QSchedule(step=0.2)`` tries 0.2, 0.4, ... 4.0 (``max_q`` default 4.0: at ``4 sigma``
    virtually every weight of a bell-shaped layer is gone, so the accuracy check stops
    long before). ``QSchedule(values=[0.5, 1.0, 1.2])`` tries exactly those.
    """

    def __init__(self, step: float | None = None, start: float | None = None, max_q: float = 4.0,
                 values: Sequence[float] | None = None):
        if values is not None:
            if step is not None or start is not None:
                raise ValueError("QSchedule: give either values or start/step, not both")
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ValueError(f"QSchedule: values must be a non-empty list of numbers, got {values!r}")
            vals = [_number(f"values[{i}]", v, low=0.0, low_open=True) for i, v in enumerate(values)]
            if any(b <= a for a, b in zip(vals, vals[1:])):
                raise ValueError(f"QSchedule: values must be strictly increasing, got {vals}")
            self.values: tuple[float, ...] | None = tuple(vals)
            self.step = self.start = None
            self.max_q = vals[-1]
            return
        if step is None:
            raise ValueError("QSchedule: give step (and optionally start, max_q) or values")
        self.step = _number("step", step, low=0.0, low_open=True)
        self.start = self.step if start is None else _number("start", start, low=0.0, low_open=True)
        self.max_q = _number("max_q", max_q, low=self.start)
        self.values = None

    def __len__(self) -> int:
        if self.values is not None:
            return len(self.values)
        return int(math.floor((self.max_q - self.start) / self.step + 1e-9)) + 1

    def q(self, i: int) -> float:
        """The q of step ``i`` (0-based); IndexError past the last step."""
        if not 0 <= i < len(self):
            raise IndexError(f"step {i} out of range (schedule has {len(self)} steps)")
        if self.values is not None:
            return self.values[i]
        return round(self.start + i * self.step, 10)

    def __iter__(self):
        return (self.q(i) for i in range(len(self)))

    def to_config(self) -> dict:
        if self.values is not None:
            return {"values": list(self.values)}
        return {"start": self.start, "step": self.step, "max_q": self.max_q}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "QSchedule":
        _check_keys("QSchedule", config, ("start", "step", "max_q", "values"))
        return cls(**dict(config))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QSchedule) and self.to_config() == other.to_config()

    def __repr__(self) -> str:
        return f"QSchedule({self.to_config()})"


class LayerGroup:
    """Layers pruned together with one q (one layer: layer-by-layer pruning).

    ``tolerance``: a step is good if validation accuracy after fine-tuning is at least
    ``baseline - tolerance`` (a fraction: 0.001 = 0.1 percentage points).
    ``epochs``: fine-tuning epochs after each step before the first check;
    ``max_epochs``: how long accuracy may take to come back (checked after every epoch).
    ``learning_rate``: fine-tuning learning rate (lowered: the model is already trained).
    ``freeze_others``: train only this group's layers while fine-tuning it.
    """

    KEYS = ("name", "layers", "q", "tolerance", "epochs", "max_epochs", "learning_rate", "freeze_others")

    def __init__(self, layers: Sequence[str], q: QSchedule | Mapping[str, Any] | None = None,
                 name: str | None = None, tolerance: float = 0.001, epochs: int = 1,
                 max_epochs: int = 2, learning_rate: float = 1e-4, freeze_others: bool = False,
                 kind: str | None = None):
        if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
            raise ValueError(f"LayerGroup: layers must be a non-empty list of layer names, got {layers!r}")
        if not all(isinstance(l, str) and l for l in layers):
            raise ValueError(f"LayerGroup: layer names must be non-empty strings, got {list(layers)!r}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"LayerGroup: duplicate layer names in {list(layers)}")
        self.layers = tuple(layers)
        self.name = str(name) if name else "+".join(self.layers)
        if q is None:
            if kind not in ("conv", "dense"):
                raise ValueError(f"LayerGroup {self.name}: give q (a QSchedule) or kind 'conv'/'dense' "
                                 "for the default step")
            q = QSchedule(step=DEFAULT_CONV_STEP if kind == "conv" else DEFAULT_DENSE_STEP)
        elif isinstance(q, Mapping):
            q = QSchedule.from_config(q)
        elif not isinstance(q, QSchedule):
            raise ValueError(f"LayerGroup {self.name}: q must be a QSchedule or its config, got {q!r}")
        self.q = q
        self.tolerance = _number("tolerance", tolerance, low=0.0, high=1.0)
        self.epochs = _int("epochs", epochs, 0)
        self.max_epochs = _int("max_epochs", max_epochs, max(1, self.epochs))
        self.learning_rate = _number("learning_rate", learning_rate, low=0.0)
        if not isinstance(freeze_others, bool):
            raise ValueError(f"freeze_others must be true or false, got {freeze_others!r}")
        self.freeze_others = freeze_others

    def to_config(self) -> dict:
        return {"name": self.name, "layers": list(self.layers), "q": self.q.to_config(),
                "tolerance": self.tolerance, "epochs": self.epochs, "max_epochs": self.max_epochs,
                "learning_rate": self.learning_rate, "freeze_others": self.freeze_others}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "LayerGroup":
        _check_keys("LayerGroup", config, cls.KEYS + ("kind",))
        if "layers" not in config:
            raise ValueError("LayerGroup config needs 'layers'")
        return cls(**dict(config))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerGroup) and self.to_config() == other.to_config()

    def __repr__(self) -> str:
        return f"LayerGroup({self.to_config()})"


class PruningSchedule:
    """The groups, pruned one after the other in the given order, and the final fine-tuning.

    ``final_epochs``: epochs of fine-tuning of all layers (masks held) after the last
    group; the epoch with the best validation accuracy is kept (0: none).
    ``final_learning_rate``: its learning rate.
    """

    KEYS = ("groups", "final_epochs", "final_learning_rate")

    def __init__(self, groups: Sequence[LayerGroup | Mapping[str, Any]], final_epochs: int = 0,
                 final_learning_rate: float = 1e-4):
        if isinstance(groups, (str, bytes, Mapping)) or not isinstance(groups, Sequence) or not groups:
            raise ValueError(f"PruningSchedule: groups must be a non-empty list, got {groups!r}")
        gs = [g if isinstance(g, LayerGroup) else LayerGroup.from_config(g) for g in groups]
        seen: dict[str, str] = {}
        for g in gs:
            for l in g.layers:
                if l in seen:
                    raise ValueError(f"PruningSchedule: layer {l!r} is in groups {seen[l]!r} and {g.name!r}")
                seen[l] = g.name
        names = [g.name for g in gs]
        if len(set(names)) != len(names):
            raise ValueError(f"PruningSchedule: duplicate group names {names}")
        self.groups = tuple(gs)
        self.final_epochs = _int("final_epochs", final_epochs, 0)
        self.final_learning_rate = _number("final_learning_rate", final_learning_rate, low=0.0)

    @property
    def layers(self) -> list[str]:
        return [l for g in self.groups for l in g.layers]

    def to_config(self) -> dict:
        return {"groups": [g.to_config() for g in self.groups], "final_epochs": self.final_epochs,
                "final_learning_rate": self.final_learning_rate}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "PruningSchedule":
        _check_keys("PruningSchedule", config, cls.KEYS)
        if "groups" not in config:
            raise ValueError("PruningSchedule config needs 'groups'")
        return cls(**dict(config))

    def to_json(self) -> str:
        return json.dumps(self.to_config(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "PruningSchedule":
        return cls.from_config(json.loads(text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PruningSchedule) and self.to_config() == other.to_config()

    def __repr__(self) -> str:
        return f"PruningSchedule({self.to_config()})"
