"""Keras Adam and SGD that do not leak a traced training step's memory on one replica.

Keras' TensorFlow optimizer sums the gradients over the replicas before it applies them
(``_all_reduce_sum_gradients``: the replica context's ``all_reduce``). Inside a
``tf.function`` that all-reduce registers a custom gradient in TensorFlow's global registry,
and the registry keeps the traced graph, and with it every variable the step captured: the
model's and the optimizer's moments stay resident after all of them are gone in Python.
One 400 MB variable with a new Adam and a new traced step each time grew a process by
1.2 GB per iteration; a VGG19 pruning run by 0.92 GB per step of its fully connected group
(docs/vgg19.md). Over one replica the sum is the gradients themselves, so these classes skip
it there, bit for bit the same updates; over several replicas they keep Keras' all-reduce
(and its memory: prune.distribute.MaskedTrainer.restart reuses one trainer instead).
"""
from __future__ import annotations

from typing import Any

__all__ = ["adam", "sgd"]

_CLASSES: dict[str, Any] = {}


def _one_replica(base: Any) -> Any:
    import tensorflow as tf

    if not hasattr(base, "_all_reduce_sum_gradients"):
        # tests/test_optimizers.py fails here first when Keras renames it
        raise RuntimeError(f"{base.__name__} has no _all_reduce_sum_gradients: this Keras is not the one "
                           "prune.optimizers was written for")

    class OneReplica(base):
        def _all_reduce_sum_gradients(self, grads_and_vars: Any) -> Any:
            ctx = tf.distribute.get_replica_context()
            if ctx is None or ctx.num_replicas_in_sync > 1:
                return super()._all_reduce_sum_gradients(grads_and_vars)
            return list(grads_and_vars)

    OneReplica.__name__ = OneReplica.__qualname__ = base.__name__
    return OneReplica


def _cls(name: str) -> Any:
    if name not in _CLASSES:
        import keras
        _CLASSES[name] = _one_replica(getattr(keras.optimizers, name))
    return _CLASSES[name]


def adam(learning_rate: Any, **kwargs: Any) -> Any:
    """``keras.optimizers.Adam(learning_rate, **kwargs)``, without the one-replica leak."""
    return _cls("Adam")(learning_rate, **kwargs)


def sgd(learning_rate: Any, **kwargs: Any) -> Any:
    """``keras.optimizers.SGD(learning_rate, **kwargs)``, without the one-replica leak."""
    return _cls("SGD")(learning_rate, **kwargs)
