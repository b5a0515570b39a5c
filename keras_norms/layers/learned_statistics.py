"""Normalization with learned statistics (Esposito & Ganaba, section 5)."""

import math

import keras
from keras import ops

# Section 5.1: (channels, kernel sizes) of the Conv1D stacks.
FIRST_LAYER_NETWORK = ((4, 4, 1), (4, 3, 3))
OTHER_LAYERS_NETWORK = ((4, 4, 2, 1), (4, 3, 2, 3))
_POOL_SIZE = 3
# softplus(_SOFTPLUS_ONE) = 1, so the standard deviation starts unscaled.
_SOFTPLUS_ONE = math.log(math.e - 1.0)


@keras.saving.register_keras_serializable(package="keras_norms")
class LearnedStatisticsNormalization(keras.layers.Layer):
    """Normalize each feature map with a mean and a deviation produced by small networks.

    Section 5 of the paper gives each statistic a network: global average
    pooling to a vector of C channel values, read as a one-dimensional
    signal of length C, then `Conv1D` layers (section 5.1: channels
    `(4, 4, 1)` with kernel sizes `(4, 3, 3)` for ALL-CNN-C's first
    normalized layer, `(4, 4, 2, 1)` with `(4, 3, 2, 3)` for the others),
    then average pooling. The paper leaves the axes and the parameterization
    open; this layer reads them as follows, per example `n` and channel `c`:

    - `m[n, c]` and `s[n, c]`: mean and standard deviation of feature map
      `c` of example `n` over positions (global average pooling of `x` and
      of `(x - m)^2`).
    - Each network maps the signal over channels, `(N, C, 1)`, through the
      `Conv1D` layers ("same" padding, ReLU between, no biases) and an
      `AveragePooling1D(3, strides=1, padding="same")` along the channel
      axis, to `(N, C)`: one value per channel, so every channel gets its
      own statistics, informed by its neighbours.
    - `mu = m + f_mu(m)` and `sigma = s * softplus(f_sigma(s) + log(e - 1))
      + epsilon`: the deviation stays positive (softplus plus epsilon). The
      last `Conv1D` of each network starts at zero, so the layer starts as
      instance normalization and learns its departure from it.
    - `y = (x - mu) / sigma`; the networks are the only trainable
      parameters. Without biases they stay below Keras `BatchNormalization`'s
      `2 C` trainable parameters for `C >= 96` (the paper's claim): 152 for
      the first-layer networks, 172 for the others.

    The statistics depend on each example only: training and inference
    compute the same function, with no running averages. They are computed
    in float32; the output is in the compute dtype.

    Args:
        network: `"other"` (default, the 4-layer networks) or `"first"`
            (the 3-layer networks of ALL-CNN-C's first normalized layer).
        epsilon: added to the deviation. Defaults to 1e-3.
        **kwargs: base layer keyword arguments.

    Raises:
        ValueError: for an unknown `network`; at build time, for an input
            that is not rank 4 with a known channel axis.

    Input shape:
        `(N, H, W, C)`, channels last; output has the same shape.

    Examples:

    >>> import numpy as np, keras_norms
    >>> layer = keras_norms.layers.LearnedStatisticsNormalization()
    >>> y = np.asarray(layer(np.random.rand(2, 4, 4, 96).astype("float32")))
    >>> bool(abs(y.mean()) < 1e-3), layer.count_params()
    (True, 172)

    Reference:
        Esposito & Ganaba, "Convolutional Normalization"
        (`../shared/papers/convolutional-normalization-dwck.md`), section 5, 5.1.
    """

    def __init__(self, network="other", epsilon=1e-3, **kwargs):
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        if network not in ("first", "other"):
            raise ValueError(
                "LearnedStatisticsNormalization expects network 'first' or 'other'. "
                f"Received: network={network!r}"
            )
        self.network = network
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "LearnedStatisticsNormalization expects a rank-4 (N, H, W, C) input "
                f"with a known C. Received: input_shape={tuple(input_shape)}"
            )
        channels = input_shape[-1]
        self.mean_network = self._network("mean", channels)
        self.deviation_network = self._network("deviation", channels)
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: channels})

    def _network(self, name, channels):
        filters, sizes = FIRST_LAYER_NETWORK if self.network == "first" else OTHER_LAYERS_NETWORK
        layers = [
            keras.layers.Conv1D(
                f, k, padding="same", use_bias=False,
                activation=None if last else "relu",
                kernel_initializer="zeros" if last else "glorot_uniform",
                dtype="float32",  # statistics in float32 under mixed precision
                name=f"{name}_conv{index}",
            )
            for index, (f, k, last) in enumerate(
                zip(filters, sizes, [False] * (len(filters) - 1) + [True])
            )
        ]
        layers.append(
            keras.layers.AveragePooling1D(
                _POOL_SIZE, strides=1, padding="same", dtype="float32", name=f"{name}_pool"
            )
        )
        network = keras.Sequential(layers, name=f"{name}_network")
        network.build((None, channels, 1))
        return network

    def _apply(self, network, signal):
        return ops.squeeze(network(ops.expand_dims(signal, -1)), -1)

    def statistics(self, x):
        """`(mu, sigma)`, float32 `(N, C)` each, for float32 input `x`."""
        m = ops.mean(x, axis=(1, 2))
        s = ops.sqrt(ops.mean(ops.square(x - m[:, None, None, :]), axis=(1, 2)))
        mu = m + self._apply(self.mean_network, m)
        raw = self._apply(self.deviation_network, s) + _SOFTPLUS_ONE
        return mu, s * ops.softplus(raw) + self.epsilon

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        mu, sigma = self.statistics(x)
        outputs = (x - mu[:, None, None, :]) / sigma[:, None, None, :]
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "network": self.network, "epsilon": self.epsilon}
