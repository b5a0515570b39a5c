"""Batch statistics shared by the layers that keep running averages.

Under `tf.distribute`, a layer's batch statistics are either each replica's
own (`synchronized=False`) or all-reduced over the global batch
(`synchronized=True`, as Keras `BatchNormalization` offers it, TensorFlow
backend only). Running averages are created with `aggregation="mean"`, so
the replicas' updates are averaged and every replica holds the same value
either way; Keras' default aggregation lets them drift apart.
"""

import keras
from keras import ops


def check_momentum(momentum, layer):
    """`momentum` as a float in [0, 1], or a ValueError naming `layer`."""
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"{layer} expects `momentum` in [0, 1]. Received: momentum={momentum}")
    return float(momentum)


def check_synchronized(synchronized, layer):
    """`synchronized` as a bool; a ValueError naming `layer` off TensorFlow."""
    if not isinstance(synchronized, bool):
        raise TypeError(
            f"{layer} expects `synchronized` to be a bool. Received: synchronized={synchronized!r}"
        )
    if synchronized and keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"{layer}: synchronized=True is only supported with the TensorFlow backend "
            f"(it all-reduces over tf.distribute replicas). Received: backend="
            f"{keras.backend.backend()!r}"
        )
    return synchronized


def batch_mean(x, axis, synchronized, keepdims=False):
    """Mean of float32 `x` over `axis`, all-reduced over replicas if `synchronized`.

    `synchronized=True` uses `keras.ops.moments(..., synchronized=True)`,
    which sums and counts across the replicas of the current
    `tf.distribute` replica context (and is a plain mean outside one).
    """
    if synchronized:
        return ops.moments(x, axes=axis, keepdims=keepdims, synchronized=True)[0]
    return ops.mean(x, axis=axis, keepdims=keepdims)


def add_moving_statistic(layer, name, size, initializer):
    """A float32 `(size,)` running average that replicas keep equal (mean aggregation)."""
    return layer.add_weight(
        name=name,
        shape=(size,),
        initializer=initializer,
        trainable=False,
        autocast=False,
        aggregation="mean",
    )


def update_moving_average(variable, value, momentum):
    """`variable = momentum * variable + (1 - momentum) * value`, as Keras BN does."""
    variable.assign(momentum * variable + (1.0 - momentum) * value)
