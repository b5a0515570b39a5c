"""Normalized Convolution (Kim et al. 2020): every im2col patch standardized before the product."""

import keras
from keras import ops

from keras_norms.layers.arguments import conv_output_shape, int_pair

IMPLEMENTATIONS = ("fast", "im2col")


@keras.saving.register_keras_serializable(package="keras_norms")
class NormalizedConv2D(keras.layers.Layer):
    """2D convolution of standardized patches: Normalized Convolution.

    Every im2col column, the `kh * kw * C_in` patch `P` that one output
    position sees, is standardized by its own mean and biased standard
    deviation before the product with the kernel (eq. 2):
    `y_f = sum(W_f * (P - mean(P)) / sqrt(var(P) + epsilon)) * s_f + b_f`,
    with the semantics of the authors' reference code: zero padding as
    `unfold` does it (padded zeros count in a border patch's statistics),
    epsilon inside the square root, a per-filter bias `b` (and, with
    `use_scale`, a per-filter scale `s`) after the convolution. The
    normalization depends on each example only: training and inference
    compute the same function, at any batch size.

    `implementation="fast"` (default) never builds the im2col matrix: it uses
    `sum(W_f (P - mu)) / sigma = (conv(x, W_f) - mu * sum(W_f)) / sigma`, with
    the patch mean and mean square from one all-ones box-filter convolution
    of the channel-summed input and of its square (same strides and
    dilation, on the explicitly zero-padded input, so padded zeros are
    counted). The variance is clamped at zero before epsilon.
    `implementation="im2col"` extracts the patches with
    `keras.ops.image.extract_patches` and is the reference the fast path is
    tested against. Both paths pad explicitly and then shift the padded
    input (zeros included) by each example's mean, which changes nothing in
    exact arithmetic and avoids cancellation for inputs far from zero.

    Statistics are float32; under mixed precision the output is in the
    compute dtype.

    Args:
        filters: positive int, the number of filters.
        kernel_size: int or pair of ints.
        strides: int or pair. Defaults to 1.
        padding: `"valid"` or `"same"` (zero padding).
        dilation_rate: int or pair. Defaults to 1.
        use_bias: add the per-filter bias. Defaults to `True`.
        use_scale: multiply by a per-filter scale first. Defaults to `False`.
        epsilon: added to each patch's variance. Defaults to 1e-5.
        implementation: `"fast"` or `"im2col"`.
        kernel_initializer, bias_initializer, kernel_regularizer: as `Conv2D`.
        **kwargs: base layer keyword arguments.

    Raises:
        ValueError: for a bad `filters`, `kernel_size`, `strides`,
            `dilation_rate`, `padding`, `implementation` or a non-positive
            `epsilon`, strides and
            dilation both above 1, or an input that is not rank 4 with a
            known channel axis.

    Input shape:
        `(N, H, W, C_in)`, channels last.

    Output shape:
        `(N, H', W', filters)` as `Conv2D`, in the compute dtype.

    Examples:

    >>> import numpy as np, keras_norms
    >>> layer = keras_norms.layers.NormalizedConv2D(4, 3, padding="same")
    >>> tuple(layer(np.random.rand(2, 5, 5, 3).astype("float32")).shape)
    (2, 5, 5, 4)

    Reference:
        Kim et al., "Normalized Convolution"
        (`../shared/papers/normalized-convolution.md`), eq. 2 and the
        reference code of section 2.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        dilation_rate=1,
        use_bias=True,
        use_scale=False,
        epsilon=1e-5,
        implementation="fast",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(
                f"NormalizedConv2D expects a positive integer `filters`. Received: filters={filters!r}"
            )
        if padding not in ("valid", "same"):
            raise ValueError(
                f"NormalizedConv2D expects padding 'valid' or 'same'. Received: padding={padding!r}"
            )
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"NormalizedConv2D expects implementation in {IMPLEMENTATIONS}. "
                f"Received: implementation={implementation!r}"
            )
        self.filters = filters
        self.kernel_size = int_pair(kernel_size, "kernel_size", "NormalizedConv2D")
        self.strides = int_pair(strides, "strides", "NormalizedConv2D")
        self.dilation_rate = int_pair(dilation_rate, "dilation_rate", "NormalizedConv2D")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "NormalizedConv2D does not combine strides and dilation above 1 "
                f"(as Conv2D). Received: strides={self.strides}, "
                f"dilation_rate={self.dilation_rate}"
            )
        if not float(epsilon) > 0:
            raise ValueError(
                "NormalizedConv2D expects a positive `epsilon` (a constant patch has "
                f"zero variance). Received: epsilon={epsilon}"
            )
        self.padding = padding
        self.use_bias = bool(use_bias)
        self.use_scale = bool(use_scale)
        self.epsilon = float(epsilon)
        self.implementation = implementation
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "NormalizedConv2D expects a rank-4 (N, H, W, C) input with a known C. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            autocast=False,
        )
        self.scale = self._vector("scale", "ones") if self.use_scale else None
        self.bias = self._vector("bias", self.bias_initializer) if self.use_bias else None
        self._patch_size = self.kernel_size[0] * self.kernel_size[1] * channels
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: channels})

    def _vector(self, name, initializer):
        return self.add_weight(
            name=name, shape=(self.filters,), initializer=initializer, autocast=False
        )

    def _conv(self, x, kernel):
        return ops.conv(x, kernel, strides=self.strides, padding="valid", dilation_rate=self.dilation_rate)

    def _zero_pad(self, x):
        """The zeros a "same" convolution adds, made explicit (TensorFlow's split)."""
        if self.padding == "valid":
            return x
        pads = [[0, 0]]
        for axis, size, stride, dilation in zip((1, 2), self.kernel_size, self.strides, self.dilation_rate):
            length = x.shape[axis]
            extent = (size - 1) * dilation + 1
            total = max((-(-length // stride) - 1) * stride + extent - length, 0)
            pads.append([total // 2, total - total // 2])
        return ops.pad(x, pads + [[0, 0]])

    def _padded_and_shifted(self, x):
        """Zero-padded input, shifted (zeros included) by each example's mean.

        The shift is an exact no-op for standardized patches and avoids
        cancellation for inputs far from zero.
        """
        return self._zero_pad(x) - ops.mean(x, axis=(1, 2, 3), keepdims=True)

    def _fast(self, x, kernel):
        box = ops.ones(self.kernel_size + (1, 1), "float32")
        mean = self._conv(ops.sum(x, axis=-1, keepdims=True), box) / self._patch_size
        mean_square = self._conv(ops.sum(ops.square(x), axis=-1, keepdims=True), box) / self._patch_size
        variance = ops.maximum(mean_square - ops.square(mean), 0.0)
        centered = self._conv(x, kernel) - mean * ops.sum(kernel, axis=(0, 1, 2))
        return centered * ops.rsqrt(variance + self.epsilon)

    def _im2col(self, x, kernel):
        patches = ops.image.extract_patches(
            x, self.kernel_size, strides=self.strides, dilation_rate=self.dilation_rate,
            padding="valid", data_format="channels_last",
        )
        mean = ops.mean(patches, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(patches - mean), axis=-1, keepdims=True)
        standardized = (patches - mean) * ops.rsqrt(variance + self.epsilon)
        return ops.matmul(standardized, ops.reshape(kernel, (self._patch_size, self.filters)))

    def call(self, inputs):
        x = self._padded_and_shifted(ops.cast(inputs, "float32"))
        kernel = ops.cast(self.kernel, "float32")
        outputs = self._fast(x, kernel) if self.implementation == "fast" else self._im2col(x, kernel)
        if self.use_scale:
            outputs = outputs * self.scale
        if self.use_bias:
            outputs = outputs + self.bias
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return conv_output_shape(
            input_shape, self.filters, self.kernel_size, self.strides, self.padding,
            spatial_axes=(1, 2), channel_axis=-1, dilation_rate=self.dilation_rate,
        )

    def get_config(self):
        config = {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
            "use_bias": self.use_bias,
            "use_scale": self.use_scale,
            "epsilon": self.epsilon,
            "implementation": self.implementation,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }
        return {**super().get_config(), **config}
