"""Class names: a model's own (from its manifest), or ImageNet-1k's for 1000 outputs (the
packaged data/imagenet_classes.tsv), or the indices."""
from __future__ import annotations

from importlib import resources
from typing import Any


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (first lemma of each synset)."""
    text = resources.files("sparseinfer").joinpath("data/imagenet_classes.tsv").read_text("utf-8")
    names = [line.split("\t", 1)[1].split(",")[0].strip() for line in text.splitlines()
             if line and not line.startswith("#")]
    assert len(names) == 1000, "packaged imagenet_classes.tsv is damaged"
    return names


def class_names(model: Any) -> list[str]:
    """The model's own class names, ImageNet's for 1000 outputs, else the indices."""
    n = model.output_size
    own = model.classes
    if own and len(own) == n:
        return list(own)
    if n == 1000:
        return imagenet_class_names()
    return [str(i) for i in range(n)]
