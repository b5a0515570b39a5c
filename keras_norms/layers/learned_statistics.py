"""Normalization with learned statistics (Esposito & Ganaba, arXiv:2102.09685, section 5)."""

import math

import keras
from keras import ops

from keras_norms.layers.batch_statistics import (
    BatchStatisticsNormalization,
    batch_mean,
    check_image_axis,
)

# Section 5.1: (channels, kernel sizes) of the Conv1D stacks.
FIRST_LAYER_NETWORK = ((4, 4, 1), (4, 3, 3))
OTHER_LAYERS_NETWORK = ((4, 4, 2, 1), (4, 3, 2, 3))
# softplus(_SOFTPLUS_ONE) = 1, so the standard deviation starts unscaled.
_SOFTPLUS_ONE = math.log(math.e - 1.0)


@keras.saving.register_keras_serializable(package="keras_norms")
class LearnedStatisticsNormalization(BatchStatisticsNormalization):
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
      deviation of example `n`'s map `c` from `mu` (two passes: `mu` first,
      then the squared deviations, so nothing cancels for inputs far from
      zero): `sigma[c]^2 = mean_n (v * softplus(f_sigma(v) + log(e - 1)))[n, c]`,
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
      uses the running averages: the per-channel affine map
      `inference_affine()` returns. An empty batch changes nothing (see
      `BatchStatisticsNormalization`).

    A per-example reading (instance statistics) was tried first and does not
    train in ALL-CNN-C: a per-example mean subtracted before the final 1x1
    convolution and global average pooling removes every input-dependent
    term from the logits.

    Statistics and the networks run in float32 under mixed precision
    (float32 networks, variables read with `autocast=False`, inputs cast to
    float32, as Keras `BatchNormalization`); the output is in the compute
    dtype. The training/inference logic is `BatchStatisticsNormalization`'s.

    Args:
        network: `"other"` (default, the 4-layer networks) or `"first"`
            (the 3-layer networks of ALL-CNN-C's first normalized layer).
        axis: the channel axis: `-1` (default, `(N, H, W, C)`) or `1`
            (channels first, `(N, C, H, W)`), as Keras `BatchNormalization`.
        momentum: running-average momentum. Defaults to 0.99.
        epsilon: positive number added to the variance. Defaults to 1e-3.
        synchronized: if `True` (TensorFlow backend only), batch statistics
            are all-reduced over the replicas of a `tf.distribute` strategy
            (global-batch statistics, as Keras `BatchNormalization` offers).
            Running averages are aggregated so that replicas agree either way.
        **kwargs: base layer keyword arguments.

    Raises:
        ValueError: for an unknown `network`, an `axis` other than -1, 3, 1
            or -3, a `momentum` outside [0, 1), a non-positive or infinite
            `epsilon`, or `synchronized=True` off TensorFlow; at build time,
            for an input that is not rank 4 with a known C.
        TypeError: if `momentum` or `epsilon` is not a number, or
            `synchronized` is not a bool.

    Call arguments:
        inputs: `(N, H, W, C)` float tensor (`(N, C, H, W)` with `axis=1`).
        training: use batch statistics and update the running averages.

    Input shape:
        `(N, H, W, C)` or, with `axis=1`, `(N, C, H, W)`; the output has the
        same shape, in the compute dtype.

    Examples:

    >>> import numpy as np, keras_norms
    >>> layer = keras_norms.layers.LearnedStatisticsNormalization()
    >>> y = np.asarray(layer(np.random.rand(2, 4, 4, 96).astype("float32"), training=True))
    >>> bool(abs(y.mean()) < 1e-3), layer.count_params() - 2 * 96
    (True, 172)

    Reference:
        Esposito & Ganaba, "Convolutional Normalization" (arXiv:2102.09685),
        section 5 and 5.1.
    """

    def __init__(
        self, network="other", axis=-1, momentum=0.99, epsilon=1e-3, synchronized=False, **kwargs
    ):
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, synchronized=synchronized, **kwargs
        )
        check_image_axis(self, axis)
        if network not in ("first", "other"):
            raise ValueError(
                "LearnedStatisticsNormalization expects network 'first' or 'other'. "
                f"Received: network={network!r}"
            )
        self.network = network

    def build(self, input_shape):
        layout = "(N, H, W, C)" if self.axis in (-1, 3) else "(N, C, H, W)"
        if len(input_shape) != 4 or input_shape[self.axis] is None:
            raise ValueError(
                f"LearnedStatisticsNormalization expects a rank-4 {layout} input "
                f"with a known C. Received: input_shape={tuple(input_shape)}"
            )
        super().build(input_shape)
        channels = input_shape[self._channel]
        self._spatial_axes = tuple(self._reduction_axes[1:])
        self.mean_network = self._network("mean", channels)
        self.deviation_network = self._network("deviation", channels)

    def _network(self, name, channels):
        filters, sizes = FIRST_LAYER_NETWORK if self.network == "first" else OTHER_LAYERS_NETWORK
        last = len(filters) - 1
        network = keras.Sequential(
            [
                keras.layers.Conv1D(
                    f,
                    k,
                    padding="same",
                    use_bias=False,
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
        """`network` on each row of the float32 `(N, C)` `signal`, read as a length-C signal.

        A zero row is appended and dropped again, so that an empty batch never
        reaches a convolution (TensorFlow's oneDNN one mis-shapes it); without
        biases the network maps it to zeros and touches no other row.
        """
        h = ops.expand_dims(ops.pad(signal, ((0, 1), (0, 0))), -1)
        return network(h)[:-1, :, 0]

    def batch_statistics(self, x):
        """`(mu, sigma^2)`, float32 `(C,)` each, of a float32 batch `x`."""
        m = ops.mean(x, axis=self._spatial_axes)
        mu = batch_mean(m + self._apply(self.mean_network, m), 0, self.synchronized)
        # Two passes: the mean squared deviation from mu, per example and channel.
        v = ops.mean(ops.square(x - self._per_channel(mu)), axis=self._spatial_axes)
        scale = ops.softplus(self._apply(self.deviation_network, v) + _SOFTPLUS_ONE)
        return mu, batch_mean(v * scale, 0, self.synchronized)

    def get_config(self):
        return {**super().get_config(), "network": self.network}
