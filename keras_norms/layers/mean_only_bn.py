"""Mean-only batch normalization (Salimans & Kingma 2016, section 4)."""

import keras
from keras import ops

from keras_norms.layers.batch_statistics import (
    add_moving_statistic,
    batch_mean,
    check_momentum,
    check_synchronized,
    update_moving_average,
)


@keras.saving.register_keras_serializable(package="keras_norms")
class MeanOnlyBatchNormalization(keras.layers.Layer):
    """Mean-only batch normalization: subtract the mini-batch mean, add a bias.

    In training, `y = x - mean_B(x) + beta`, with the mean taken over every
    axis but `axis` (batch and spatial axes); nothing is divided by a
    standard deviation. A running mean is kept,
    `moving_mean = momentum * moving_mean + (1 - momentum) * mean_B(x)`,
    and used at inference: `y = x - moving_mean + beta`.
    (`../shared/papers/weight-normalization-convpool-cnn-c.md`, section 6A;
    Salimans & Kingma 2016, section 4.) Meant to follow a linear layer,
    typically weight-normalized, whose bias it replaces.

    Statistics and variables are float32; under a mixed-precision policy
    the output comes back in the compute dtype.

    Args:
        axis: integer, the feature axis (the one that is not averaged).
            Defaults to `-1` (channels last).
        momentum: float in [0, 1], the running mean's decay. Defaults to
            `0.9` (the paper's decay).
        center: if `True`, add the learned offset `beta`.
        beta_initializer: initializer for `beta`. Defaults to `"zeros"`.
        moving_mean_initializer: initializer for the running mean.
            Defaults to `"zeros"`.
        beta_regularizer: optional regularizer for `beta`.
        beta_constraint: optional constraint for `beta`.
        synchronized: if `True` (TensorFlow backend only), the mini-batch
            mean is all-reduced over the replicas of a `tf.distribute`
            strategy, so it is the global batch's mean, as in Keras
            `BatchNormalization(synchronized=True)`. Either way the running
            mean is aggregated so that every replica holds the same value.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Raises:
        ValueError: if `axis` is not an integer, `momentum` is outside
            [0, 1], `synchronized=True` off the TensorFlow backend, or the
            input has no such axis or an unknown size on it.
        TypeError: if `synchronized` is not a bool.

    Call arguments:
        inputs: a tensor of rank >= 2.
        training: Python boolean: use the mini-batch mean and update the
            running mean (`True`) or use the running mean (`False`).

    Input shape:
        Arbitrary, e.g. `(batch, H, W, C)`; the size along `axis` must be
        known.

    Output shape:
        Same shape as input, in the layer's compute dtype.

    Examples:

    >>> import numpy as np, keras_norms
    >>> mobn = keras_norms.layers.MeanOnlyBatchNormalization()
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]], "float32")
    >>> np.asarray(mobn(x, training=True)).tolist()
    [[-1.0, -10.0], [1.0, 10.0]]
    >>> np.asarray(mobn.moving_mean).tolist()
    [0.20000000298023224, 2.0]

    Reference:
        Salimans & Kingma, "Weight Normalization: A Simple Reparameterization
        to Accelerate Training of Deep Neural Networks", NeurIPS 2016
        (arXiv:1602.07868), section 4 (mean-only batch normalization).
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.9,
        center=True,
        beta_initializer="zeros",
        moving_mean_initializer="zeros",
        beta_regularizer=None,
        beta_constraint=None,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise ValueError(
                "MeanOnlyBatchNormalization expects `axis` to be an integer. "
                f"Received: axis={axis!r}"
            )
        self.axis = axis
        self.momentum = check_momentum(momentum, "MeanOnlyBatchNormalization")
        self.center = bool(center)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.moving_mean_initializer = keras.initializers.get(
            moving_mean_initializer
        )
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.synchronized = check_synchronized(synchronized, "MeanOnlyBatchNormalization")
        self.supports_masking = False

    def build(self, input_shape):
        rank = len(input_shape)
        if not -rank <= self.axis < rank or rank < 2:
            raise ValueError(
                f"MeanOnlyBatchNormalization(axis={self.axis}) expects an "
                f"input of rank >= 2 with that axis. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self._axis = self.axis % rank
        size = input_shape[self._axis]
        if size is None:
            raise ValueError(
                f"MeanOnlyBatchNormalization expects a known size on axis "
                f"{self.axis}. Received: input_shape={tuple(input_shape)}"
            )
        self.input_spec = keras.InputSpec(ndim=rank, axes={self._axis: size})
        self._reduction_axes = [a for a in range(rank) if a != self._axis]
        self._broadcast_shape = [1] * rank
        self._broadcast_shape[self._axis] = size
        self.beta = None
        if self.center:
            self.beta = self.add_weight(
                name="beta",
                shape=(size,),
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                trainable=True,
                autocast=False,
            )
        self.moving_mean = add_moving_statistic(
            self, "moving_mean", size, self.moving_mean_initializer
        )

    def call(self, inputs, training=None):
        x = ops.cast(inputs, "float32")
        if training and self.trainable:
            mean = batch_mean(x, self._reduction_axes, self.synchronized)
            update_moving_average(self.moving_mean, mean, self.momentum)
        else:
            mean = self.moving_mean
        shift = -mean
        if self.center:
            shift = shift + self.beta
        outputs = x + ops.reshape(shift, self._broadcast_shape)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            "axis": self.axis,
            "momentum": self.momentum,
            "center": self.center,
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "moving_mean_initializer": keras.initializers.serialize(
                self.moving_mean_initializer
            ),
            "beta_regularizer": keras.regularizers.serialize(self.beta_regularizer),
            "beta_constraint": keras.constraints.serialize(self.beta_constraint),
            "synchronized": self.synchronized,
        }
        return {**super().get_config(), **config}
