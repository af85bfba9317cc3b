"""Model topologies used by the pruner, built with Keras 3 (nothing is downloaded)."""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["lenet5", "vgg19", "VGG19_BLOCKS"]

#: VGG19's conv blocks: (filters, number of 3x3 convs), each followed by a 2x2 max-pool
VGG19_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))


def lenet5(classes: int = 10, input_shape: Sequence[int] = (28, 28, 1)) -> Any:
    """LeNet-5 as in Han et al. 2015 (the Caffe LeNet): 431K parameters for 10 classes.

    conv1 20@5x5 valid (linear) - pool1 2x2 - conv2 50@5x5 valid (linear) - pool2 2x2 -
    flatten - fc1 500 relu - fc2 ``classes`` softmax. No dropout.
    """
    import keras
    from keras import layers as L

    return keras.Sequential([
        keras.Input(shape=tuple(input_shape), name="input"),
        L.Conv2D(20, 5, padding="valid", name="conv1"),
        L.MaxPooling2D(2, 2, name="pool1"),
        L.Conv2D(50, 5, padding="valid", name="conv2"),
        L.MaxPooling2D(2, 2, name="pool2"),
        L.Flatten(name="flatten"),
        L.Dense(500, activation="relu", name="fc1"),
        L.Dense(classes, activation="softmax", name="fc2"),
    ], name="lenet5")


def vgg19(classes: int = 1000, input_shape: Sequence[int] = (224, 224, 3),
          fc_units: int = 4096, width: float = 1.0) -> Any:
    """VGG19 with keras.applications.VGG19's topology and layer names, randomly initialised.

    16 conv 3x3 same relu layers in 5 blocks (64,64 | 128,128 | 256x4 | 512x4 | 512x4),
    a 2x2 max-pool after each block (``block1_conv1`` ... ``block5_pool``), ``flatten``,
    ``fc1`` and ``fc2`` (``fc_units`` relu) and ``predictions`` (``classes`` softmax).
    The defaults are the real VGG19 (143.7M parameters); ``input_shape``, ``fc_units``
    and ``width`` (a multiplier on the conv filters) allow small variants for tests.
    """
    import keras
    from keras import layers as L

    inp = keras.Input(shape=tuple(input_shape), name="input_layer")
    x = inp
    for b, (filters, n) in enumerate(VGG19_BLOCKS, start=1):
        f = max(1, int(round(filters * width)))
        for i in range(1, n + 1):
            x = L.Conv2D(f, (3, 3), activation="relu", padding="same", name=f"block{b}_conv{i}")(x)
        x = L.MaxPooling2D((2, 2), strides=(2, 2), name=f"block{b}_pool")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(fc_units, activation="relu", name="fc1")(x)
    x = L.Dense(fc_units, activation="relu", name="fc2")(x)
    x = L.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, x, name="vgg19")
