"""Normalization with learned statistics (Esposito & Ganaba, section 5)."""

import math

import keras
from keras import ops

from keras_norms.layers.batch_statistics import (
    add_moving_statistic,
    batch_mean,
    check_momentum,
    check_synchronized,
    update_moving_average,
)

# Section 5.1: (channels, kernel sizes) of the Conv1D stacks.
FIRST_LAYER_NETWORK = ((4, 4, 1), (4, 3, 3))
OTHER_LAYERS_NETWORK = ((4, 4, 2, 1), (4, 3, 2, 3))
# softplus(_SOFTPLUS_ONE) = 1, so the standard deviation starts unscaled.
_SOFTPLUS_ONE = math.log(math.e - 1.0)


@keras.saving.register_keras_serializable(package="keras_norms")
class LearnedStatisticsNormalization(keras.layers.Layer):
    """Batch normalization whose mean and deviation come from small networks.

    Section 5 of the paper gives each statistic a network: global average
    pooling to a vector of C channel values, read as a one-dimensional
    signal of length C, then `Conv1D` layers (section 5.1: channels
    `(4, 4, 1)` with kernel sizes `(4, 3, 3)` for ALL-CNN-C's first
    normalized layer, `(4, 4, 2, 1)` with `(4, 3, 2, 3)` for the others),
    then average pooling. The paper leaves the axes and the parameterization
    open; this layer reads them as follows, giving one mean and one positive
    deviation per channel, like batch normalization:

    - Global average pooling per example: `m[n, c]`, the mean of feature map
      `c` of example `n`.
    - The mean network maps each example's signal over channels, `(C, 1)`,
      through the `Conv1D` layers ("same" padding, ReLU between, no biases):
      `m + f_mu(m)`; the final average pooling is over the batch:
      `mu[c] = mean_n (m + f_mu(m))[n, c]`.
    - The deviation network does the same with `v[n, c]`, the mean squared
      deviation of example `n`'s map `c` from `mu`:
      `sigma[c]^2 = mean_n (v * softplus(f_sigma(v) + log(e - 1)))[n, c]`,
      and `y = (x - mu) / sqrt(sigma^2 + epsilon)`. Softplus keeps the
      deviation positive, epsilon keeps it away from zero.
    - The last `Conv1D` of each network starts at zero, so the layer starts
      as `BatchNormalization(center=False, scale=False)` and learns its
      departure from it. The networks are the only trainable parameters:
      without biases they stay below Keras `BatchNormalization`'s `2 C`
      trainable parameters for `C >= 96` (the paper's claim): 152 for the
      first-layer networks, 172 for the others.
    - In training the batch's `mu` and `sigma^2` are used and their running
      averages updated with `momentum`; inference (and the exported graph)
      uses the running averages.

    A per-example reading (instance statistics) was tried first and does not
    train in ALL-CNN-C: a per-example mean subtracted before the final 1x1
    convolution and global average pooling removes every input-dependent
    term from the logits.

    Statistics and the networks run in float32; the output is in the
    compute dtype.

    Args:
        network: `"other"` (default, the 4-layer networks) or `"first"`
            (the 3-layer networks of ALL-CNN-C's first normalized layer).
        momentum: running-average momentum. Defaults to 0.99.
        epsilon: added to the variance. Defaults to 1e-3.
        synchronized: if `True` (TensorFlow backend only), batch statistics
            are all-reduced over the replicas of a `tf.distribute` strategy
            (global-batch statistics, as Keras `BatchNormalization` offers).
            Running averages are aggregated so that replicas agree either way.
        **kwargs: base layer keyword arguments.

    Raises:
        ValueError: for an unknown `network`, a `momentum` outside [0, 1]
            or `synchronized=True` off TensorFlow; at build time, for an
            input that is not rank 4 with a known C.
        TypeError: if `synchronized` is not a bool.

    Call arguments:
        inputs: `(N, H, W, C)` float tensor, channels last.
        training: use batch statistics and update the running averages.

    Input shape:
        `(N, H, W, C)`; output has the same shape, in the compute dtype.

    Examples:

    >>> import numpy as np, keras_norms
    >>> layer = keras_norms.layers.LearnedStatisticsNormalization()
    >>> y = np.asarray(layer(np.random.rand(2, 4, 4, 96).astype("float32"), training=True))
    >>> bool(abs(y.mean()) < 1e-3), layer.count_params() - 2 * 96
    (True, 172)

    Reference:
        Esposito & Ganaba, "Convolutional Normalization"
        (`../shared/papers/convolutional-normalization-dwck.md`), section 5, 5.1.
    """

    def __init__(self, network="other", momentum=0.99, epsilon=1e-3, synchronized=False, **kwargs):
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        if network not in ("first", "other"):
            raise ValueError(
                "LearnedStatisticsNormalization expects network 'first' or 'other'. "
                f"Received: network={network!r}"
            )
        self.network = network
        self.momentum = check_momentum(momentum, "LearnedStatisticsNormalization")
        self.epsilon = float(epsilon)
        self.synchronized = check_synchronized(synchronized, "LearnedStatisticsNormalization")

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "LearnedStatisticsNormalization expects a rank-4 (N, H, W, C) input "
                f"with a known C. Received: input_shape={tuple(input_shape)}"
            )
        channels = input_shape[-1]
        self.mean_network = self._network("mean", channels)
        self.deviation_network = self._network("deviation", channels)
        self.moving_mean = add_moving_statistic(self, "moving_mean", channels, "zeros")
        self.moving_variance = add_moving_statistic(self, "moving_variance", channels, "ones")
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: channels})

    def _network(self, name, channels):
        filters, sizes = FIRST_LAYER_NETWORK if self.network == "first" else OTHER_LAYERS_NETWORK
        last = len(filters) - 1
        network = keras.Sequential(
            [
                keras.layers.Conv1D(
                    f, k, padding="same", use_bias=False,
                    activation=None if index == last else "relu",
                    kernel_initializer="zeros" if index == last else "glorot_uniform",
                    dtype="float32",  # statistics in float32 under mixed precision
                    name=f"{name}_conv{index}",
                )
                for index, (f, k) in enumerate(zip(filters, sizes))
            ],
            name=f"{name}_network",
        )
        network.build((None, channels, 1))
        return network

    def _apply(self, network, signal):
        return ops.squeeze(network(ops.expand_dims(signal, -1)), -1)

    def batch_statistics(self, x):
        """`(mu, sigma^2)`, float32 `(C,)` each, of a float32 batch `x`."""
        m = ops.mean(x, axis=(1, 2))
        mu = batch_mean(m + self._apply(self.mean_network, m), 0, self.synchronized)
        # E[(x - mu)^2] = E[x^2] - 2 mu m + mu^2: one more reduction of x
        # instead of a second pass over (x - mu).
        second = ops.mean(ops.square(x), axis=(1, 2))
        v = ops.maximum(second - 2.0 * mu * m + ops.square(mu), 0.0)
        scale = ops.softplus(self._apply(self.deviation_network, v) + _SOFTPLUS_ONE)
        return mu, batch_mean(v * scale, 0, self.synchronized)

    def call(self, inputs, training=None):
        x = ops.cast(inputs, "float32")
        if training and self.trainable:
            mean, variance = self.batch_statistics(x)
            update_moving_average(self.moving_mean, mean, self.momentum)
            update_moving_average(self.moving_variance, variance, self.momentum)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        outputs = (x - mean) * ops.rsqrt(variance + self.epsilon)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            "network": self.network,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "synchronized": self.synchronized,
        }
        return {**super().get_config(), **config}
