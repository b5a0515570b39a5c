"""Mean-only batch normalization (Salimans & Kingma 2016, arXiv:1602.07868, section 4)."""

import keras

from keras_norms.layers.arguments import check_bool
from keras_norms.layers.batch_statistics import BatchStatisticsNormalization, batch_mean


@keras.saving.register_keras_serializable(package="keras_norms")
class MeanOnlyBatchNormalization(BatchStatisticsNormalization):
    """Mean-only batch normalization: subtract the mini-batch mean, add a bias.

    In training, `y = x - mean_B(x) + beta`, with the mean taken over every
    axis but `axis` (batch and spatial axes); nothing is divided by a
    standard deviation. A running mean is kept,
    `moving_mean = momentum * moving_mean + (1 - momentum) * mean_B(x)`,
    and used at inference: `y = x - moving_mean + beta`.
    (Salimans & Kingma 2016, arXiv:1602.07868, section 4.) Meant to follow a
    linear layer, typically weight-normalized, whose bias it replaces; at
    inference it is the affine map `inference_affine()` returns
    (`scale = 1`, `shift = beta - moving_mean`).

    Statistics and variables are float32 (variables with `autocast=False`,
    inputs cast to float32, as Keras `BatchNormalization`); under a
    mixed-precision policy the output comes back in the compute dtype. The
    training/inference logic is `BatchStatisticsNormalization`'s.

    Args:
        axis: integer, the feature axis (the one that is not averaged).
            Defaults to `-1` (channels last).
        momentum: float in [0, 1), the running mean's decay. Defaults to
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
            [0, 1), `synchronized=True` off the TensorFlow backend; at build
            time, if the input has no such axis or an unknown size on it.
        TypeError: if `momentum` is not a number, or `center` or
            `synchronized` is not a bool.

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

    normalizes_variance = False

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
        super().__init__(axis=axis, momentum=momentum, synchronized=synchronized, **kwargs)
        self.center = check_bool(self, "center", center)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.supports_masking = False

    def build(self, input_shape):
        super().build(input_shape)
        if self.center:
            self.beta = self.add_weight(
                name="beta",
                shape=(input_shape[self._channel],),
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                trainable=True,
            )

    def batch_statistics(self, x):
        """`(mean_B(x), None)`: the float32 `(C,)` batch mean and no variance."""
        return batch_mean(x, self._reduction_axes, self.synchronized), None

    def get_config(self):
        config = {
            "center": self.center,
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "moving_mean_initializer": keras.initializers.serialize(self.moving_mean_initializer),
            "beta_regularizer": keras.regularizers.serialize(self.beta_regularizer),
            "beta_constraint": keras.constraints.serialize(self.beta_constraint),
        }
        return {**super().get_config(), **config}
