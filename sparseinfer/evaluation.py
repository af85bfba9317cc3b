"""Accuracy of a model file on MNIST's 10,000 test images, run by the C runtime alone (no
TensorFlow): the images come from sparseinfer.datasets, preprocessed by the model's input
spec (sparseinfer.preprocess.normalize)."""
from __future__ import annotations

import time
from typing import Any

import numpy as np


def evaluate_mnist(model: Any, source: str | None = None, batch: int = 256) -> dict:
    """Accuracy of a model on the 10,000 MNIST test images, run by the C runtime."""
    from .datasets import load_mnist
    from .preprocess import normalize

    _, _, x_test, y_test = load_mnist(source)
    spec = model.input_spec
    if tuple(model.input_shape) != (28, 28, 1):
        raise ValueError(f"MNIST needs a 28x28x1 model, this one takes {model.input_shape}")
    x = normalize(x_test[..., None], spec)
    model.predict(x[:batch])
    t0 = time.perf_counter()
    pred = np.concatenate([model.predict(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    dt = time.perf_counter() - t0
    correct = int((pred == y_test).sum())
    return {"images": int(len(y_test)), "correct": correct, "accuracy": correct / len(y_test),
            "seconds": dt, "images_per_second": len(y_test) / dt, "predictions": pred}
