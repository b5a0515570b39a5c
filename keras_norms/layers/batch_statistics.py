"""The base class of the layers that normalize with batch statistics and keep running averages.

Under `tf.distribute`, a layer's batch statistics are either each replica's
own (`synchronized=False`) or all-reduced over the global batch
(`synchronized=True`, as Keras `BatchNormalization` offers it, TensorFlow
backend only). Running averages are created with `aggregation="mean"`, so
the replicas' updates are averaged and every replica holds the same value
either way; Keras' default aggregation lets them drift apart.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_norms.layers.arguments import check_bool, check_epsilon, check_momentum
from keras_norms.layers.precision import Float32Variables

# Keras BatchNormalization's default epsilon.
_DEFAULT_EPSILON = 1e-3
# `epsilon` not given: the default for layers that divide, none for mean-only ones.
_NO_EPSILON = object()


def batch_mean(x, axis, synchronized, keepdims=False):
    """Mean of float32 `x` over `axis`, all-reduced over replicas if `synchronized`.

    `synchronized=True` uses `keras.ops.moments(..., synchronized=True)`,
    which sums and counts across the replicas of the current
    `tf.distribute` replica context (and is a plain mean outside one).
    Otherwise the sum over the count, taken as at least 1: an empty batch
    gives 0, not NaN, so that a training step on it has zero gradients
    rather than NaN ones (a NaN statistic times a zero gradient is NaN).
    """
    if synchronized:
        return ops.moments(x, axes=axis, keepdims=keepdims, synchronized=True)[0]
    axes = axis if isinstance(axis, (list, tuple)) else (axis,)
    count = math.prod(ops.shape(x)[a] for a in axes)  # traced if the batch size is
    return ops.divide(ops.sum(x, axis=axis, keepdims=keepdims), ops.maximum(count, 1))


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


def update_moving_average(variable, value, momentum, batch_size):
    """`variable = momentum * variable + (1 - momentum) * value`, as Keras BN does.

    Only for a non-empty batch: with `batch_size` 0 there are no statistics
    (`value` is 0 from `batch_mean`, or NaN from a plain mean), and the
    variable keeps its value exactly (Keras BN's becomes NaN for good).
    `batch_size` may be a traced size (`tf.function` with an unknown batch),
    so the choice is `ops.where`, not a Python `if`; a replica with an empty
    shard keeps its value, which mean aggregation averages with the others'.
    """
    current = variable.value
    updated = momentum * current + (1.0 - momentum) * value
    variable.assign(ops.where(ops.greater(batch_size, 0), updated, current))


def check_image_axis(layer, axis):
    """For rank-4 image layers: `axis` -1 or 3 (channels last) or 1 or -3 (channels first)."""
    if axis not in (-1, 3, 1, -3):
        raise ValueError(
            f"{type(layer).__name__} expects `axis` -1 (channels last) or 1 (channels "
            f"first). Received: axis={axis!r}"
        )


def as_float64(variable):
    """A variable or tensor as a float64 numpy array (the precision of folding algebra)."""
    return np.asarray(ops.convert_to_numpy(variable), "float64")


def affine_from_statistics(mean, variance, epsilon, gamma=None, beta=None):
    """`(scale, shift)` with `gamma (x - mean) / sqrt(variance + epsilon) + beta = x scale + shift`.

    Args:
        mean: the per-channel mean, `(C,)` (a variable, tensor or array).
        variance: the per-channel variance, `(C,)`, or `None` for a
            mean-only normalization (no division).
        epsilon: float added to the variance.
        gamma: the per-channel scale, `(C,)`, or `None` for 1.
        beta: the per-channel offset, `(C,)`, or `None` for 0.

    Returns:
        Two float64 numpy arrays of shape `(C,)`.
    """
    mean = as_float64(mean)
    scale = np.ones_like(mean)
    if variance is not None:
        scale = scale / np.sqrt(as_float64(variance) + epsilon)
    if gamma is not None:
        scale = scale * as_float64(gamma)
    shift = -mean * scale
    if beta is not None:
        shift = shift + as_float64(beta)
    return scale, shift


@keras.saving.register_keras_serializable(package="keras_norms")
class BatchStatisticsNormalization(Float32Variables, keras.layers.Layer):
    """Base class: normalization with batch statistics in training, running averages after.

    In training (`training=True` and `layer.trainable`), a subclass's
    `batch_statistics(x)` gives the per-channel `mean` and `variance` of the
    float32 batch `x` (`variance` is `None` for a mean-only layer), the
    running averages are updated as in Keras `BatchNormalization`,
    `moving = momentum * moving + (1 - momentum) * batch`, and the output is
    `normalize(x, mean, variance)`:
    `y = (x - mean) / sqrt(variance + epsilon) * gamma + beta` along the
    channel axis `axis`, each factor present only if the layer has it
    (`gamma`, `beta` and `variance` may be `None`). An empty batch (`N = 0`)
    gives the empty output, leaves the running averages exactly as they
    were, traced or not, and gives zero gradients (Keras
    `BatchNormalization` makes its running averages and weights NaN for
    good). At inference the running
    averages take the place of the batch statistics, and the layer is the
    per-channel affine map that `inference_affine()` returns.

    Mixed precision follows Keras `BatchNormalization`: every variable the
    layer creates is float32 and read with `autocast=False` (the
    `Float32Variables` mixin makes that `add_weight`'s default), inputs are
    cast to float32 in `call`, statistics are float32, and the output is
    cast to the compute dtype. The layer's own `autocast` argument is the
    user's, as in Keras.

    A subclass sets `normalizes_variance` (class attribute, `False` for a
    mean-only layer), implements `batch_statistics(x)`, creates its own
    weights in `build` after calling `super().build(input_shape)`, and sets
    `self.gamma` / `self.beta` to variables if it has them.

    Args:
        axis: integer, the channel axis (the one that is not reduced).
        momentum: float in [0, 1), the running averages' momentum.
        epsilon: positive finite float added to the variance. Defaults to
            1e-3; mean-only layers take none.
        synchronized: if `True` (TensorFlow backend only), batch statistics
            are all-reduced over the replicas of a `tf.distribute` strategy.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Raises:
        ValueError: if `axis` is not an integer, `momentum` is not in
            [0, 1), `epsilon` is not positive and finite,
            `synchronized=True` off the TensorFlow backend; at build time,
            for an input without the axis or with an unknown size on it.
        TypeError: if `momentum` or `epsilon` is not a number (a string,
            `None`, a bool), `synchronized` is not a bool, or an `epsilon`
            is given to a mean-only layer.

    Call arguments:
        inputs: a float tensor of rank >= 2 whose size along `axis` is known.
        training: Python boolean: batch statistics and running-average
            updates (`True`, if the layer is trainable) or running averages.

    Input shape:
        Arbitrary (the subclasses take `(N, H, W, C)` or `(N, C, H, W)`).

    Output shape:
        Same shape as the input, in the layer's compute dtype.

    Examples:

    >>> import numpy as np, keras_norms
    >>> layer = keras_norms.layers.MeanOnlyBatchNormalization(momentum=0.5)
    >>> _ = layer(np.array([[1.0, 2.0], [3.0, 6.0]], "float32"), training=True)
    >>> scale, shift = layer.inference_affine()
    >>> scale.tolist(), shift.tolist()
    ([1.0, 1.0], [-1.0, -2.0])

    Reference:
        Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network
        Training by Reducing Internal Covariate Shift", ICML 2015
        (arXiv:1502.03167), Algorithm 1 and section 3.1 (inference with
        population statistics).
    """

    # Mean-only layers (no variance, no epsilon) set this to False.
    normalizes_variance = True

    def __init__(self, axis=-1, momentum=0.99, epsilon=_NO_EPSILON, synchronized=False, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise ValueError(f"{name} expects `axis` to be an integer. Received: axis={axis!r}")
        self.axis = axis
        self.momentum = check_momentum(self, momentum)
        if self.normalizes_variance:
            given = epsilon is not _NO_EPSILON
            self.epsilon = check_epsilon(self, epsilon if given else _DEFAULT_EPSILON)
        elif epsilon is not _NO_EPSILON:
            raise TypeError(
                f"{name} takes no `epsilon` (it divides by no deviation). "
                f"Received: epsilon={epsilon}"
            )
        else:
            self.epsilon = None
        synchronized = check_bool(self, "synchronized", synchronized)
        if synchronized and keras.backend.backend() != "tensorflow":
            raise ValueError(
                f"{name}: synchronized=True is only supported with the TensorFlow backend "
                f"(it all-reduces over tf.distribute replicas). Received: backend="
                f"{keras.backend.backend()!r}"
            )
        self.synchronized = synchronized
        self.moving_mean_initializer = keras.initializers.get("zeros")
        self.gamma = None
        self.beta = None
        self.moving_mean = None
        self.moving_variance = None

    def build(self, input_shape):
        rank = len(input_shape)
        name = type(self).__name__
        if rank < 2 or not -rank <= self.axis < rank:
            raise ValueError(
                f"{name}(axis={self.axis}) expects an input of rank >= 2 with that axis. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        channel = self.axis % rank
        size = input_shape[channel]
        if size is None:
            raise ValueError(
                f"{name} expects a known size on axis {self.axis}. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self._channel = channel
        self._reduction_axes = [a for a in range(rank) if a != channel]
        self._broadcast_shape = [1] * rank
        self._broadcast_shape[channel] = size
        self.input_spec = keras.InputSpec(ndim=rank, axes={channel: size})
        self.moving_mean = add_moving_statistic(
            self, "moving_mean", size, self.moving_mean_initializer
        )
        if self.normalizes_variance:
            self.moving_variance = add_moving_statistic(self, "moving_variance", size, "ones")

    def batch_statistics(self, x):
        """`(mean, variance)` of the float32 batch `x`, float32 `(C,)` each.

        `variance` is `None` for a mean-only layer. Subclasses implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement batch_statistics")

    def _per_channel(self, vector):
        return ops.reshape(ops.cast(vector, "float32"), self._broadcast_shape)

    def normalize(self, x, mean, variance):
        """`(x - mean) / sqrt(variance + epsilon) * gamma + beta` along the channel axis.

        `x` is float32; `mean`, `variance` are `(C,)` (`variance` `None` for
        a mean-only layer); `gamma` and `beta` enter if the layer has them.
        The `(C,)` factors are combined first; the full-size work stays
        `(x - mean) * scale (+ beta)` because a subclass's variance pass
        computes the same `x - mean`, which TensorFlow's and XLA's
        common-subexpression elimination share (`x * scale + shift` measured
        ~1 % slower in training, and cancels to ~1e-3 at inputs near 1e4).
        """
        outputs = x - self._per_channel(mean)
        scale = None if variance is None else ops.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            scale = self.gamma if scale is None else scale * self.gamma
        if scale is not None:
            outputs = outputs * self._per_channel(scale)
        if self.beta is not None:
            outputs = outputs + self._per_channel(self.beta)
        return outputs

    def call(self, inputs, training=None):
        x = ops.cast(inputs, "float32")
        if training and self.trainable:
            mean, variance = self.batch_statistics(x)
            batch_size = ops.shape(x)[0]
            update_moving_average(self.moving_mean, mean, self.momentum, batch_size)
            if variance is not None:
                update_moving_average(self.moving_variance, variance, self.momentum, batch_size)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        return ops.cast(self.normalize(x, mean, variance), self.compute_dtype)

    def inference_affine(self):
        """The inference-mode layer as a per-channel affine map `y = x * scale + shift`.

        `scale = gamma / sqrt(moving_variance + epsilon)` (1 without a
        variance, without `gamma` the factor is 1) and
        `shift = beta - moving_mean * scale` (`beta` 0 if absent): for
        `MeanOnlyBatchNormalization`, `scale = 1` and
        `shift = beta - moving_mean`. A deployment fold merges this map into
        the kernel and bias of the linear layer before it.

        Returns:
            `(scale, shift)`, float64 numpy arrays of shape `(C,)`, to be
            broadcast along the channel axis `axis`.

        Raises:
            ValueError: if the layer is not built.
        """
        if not self.built:
            raise ValueError(
                f"{type(self).__name__}.inference_affine needs a built layer. "
                f"Received: built={self.built}"
            )
        return affine_from_statistics(
            self.moving_mean, self.moving_variance, self.epsilon, self.gamma, self.beta
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {"axis": self.axis, "momentum": self.momentum, "synchronized": self.synchronized}
        if self.normalizes_variance:
            config["epsilon"] = self.epsilon
        return {**super().get_config(), **config}
