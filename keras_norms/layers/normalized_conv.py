"""Normalized Convolution (Kim et al. 2020, arXiv:2005.05274): standardized im2col patches."""

import math

import keras
from keras import ops

from keras_norms.layers.linear import NormalizedLinear
from keras_norms.layers.precision import Float32Variables

IMPLEMENTATIONS = ("fast", "im2col")


@keras.saving.register_keras_serializable(package="keras_norms")
class NormalizedConv2D(Float32Variables, NormalizedLinear, keras.layers.Conv2D):
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

    A `keras.layers.Conv2D` whose `convolution_op` standardizes the patches:
    `data_format`, `strides`, `dilation_rate`, the initializers,
    regularizers, constraints, `activation` (applied after the bias),
    argument validation, `compute_output_shape` and the config are Conv2D's.
    `padding="same"` pads explicitly with TensorFlow's split (the extra zero
    row or column at the bottom or right), so padded zeros are counted.

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

    Statistics are float32; variables are float32 and read with
    `autocast=False`, inputs are cast to float32 (Keras
    `BatchNormalization`'s convention); under mixed precision the output is
    in the compute dtype.

    Args:
        filters: positive int, the number of filters.
        kernel_size: int or pair of ints.
        strides: int or pair. Defaults to 1.
        padding: `"valid"` or `"same"` (zero padding, counted in the patch
            statistics).
        data_format: `"channels_last"` (`(N, H, W, C)`) or
            `"channels_first"` (`(N, C, H, W)`); defaults to
            `keras.config.image_data_format()`, as `Conv2D`.
        dilation_rate: int or pair. Defaults to 1.
        groups: must be 1: a grouped convolution would need each group's
            own patch statistics.
        activation: applied after the bias, as `Conv2D`. Defaults to `None`.
        use_bias: add the per-filter bias. Defaults to `True`.
        use_scale: multiply by a per-filter scale first. Defaults to `False`.
        epsilon: positive number added to each patch's variance. Defaults to
            1e-5.
        implementation: `"fast"` or `"im2col"`.
        **kwargs: `Conv2D`'s other arguments (`kernel_initializer`,
            `bias_initializer`, regularizers, constraints) and base layer
            keyword arguments.

    Raises:
        ValueError: as `Conv2D`, for a bad `filters`, `kernel_size`,
            `strides`, `dilation_rate`, `padding` or `data_format`, or
            strides and dilation both above 1; for `groups != 1`, an unknown
            `implementation` or a non-positive `epsilon`; at build or call
            time, for an input that is not rank 4 with a known channel axis
            (and, with `"same"` padding, known spatial sizes).

    Input shape:
        `(N, H, W, C_in)`, or `(N, C_in, H, W)` for channels first.

    Output shape:
        `(N, H', W', filters)` (or `(N, filters, H', W')`) as `Conv2D`, in the
        compute dtype.

    Examples:

    >>> import numpy as np, keras_norms
    >>> layer = keras_norms.layers.NormalizedConv2D(4, 3, padding="same")
    >>> tuple(layer(np.random.rand(2, 5, 5, 3).astype("float32")).shape)
    (2, 5, 5, 4)

    Reference:
        Kim et al., "Normalized Convolutional Neural Network"
        (arXiv:2005.05274), eq. 2 and the reference code of section 2.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        activation=None,
        use_bias=True,
        use_scale=False,
        epsilon=1e-5,
        implementation="fast",
        **kwargs,
    ):
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            groups=groups,
            activation=activation,
            use_bias=use_bias,
            **kwargs,
        )
        if self.padding not in ("valid", "same"):
            raise ValueError(
                f"NormalizedConv2D expects padding 'valid' or 'same'. Received: padding={padding!r}"
            )
        if groups != 1:
            raise ValueError(
                "NormalizedConv2D supports groups=1 only (a grouped convolution would "
                f"need each group's own patch statistics). Received: groups={groups!r}"
            )
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"NormalizedConv2D expects implementation in {IMPLEMENTATIONS}. "
                f"Received: implementation={implementation!r}"
            )
        if not (float(epsilon) > 0 and math.isfinite(float(epsilon))):
            raise ValueError(
                "NormalizedConv2D expects a positive `epsilon` (finite: a constant patch "
                f"has zero variance). Received: epsilon={epsilon}"
            )
        self.use_scale = bool(use_scale)
        self.epsilon = float(epsilon)
        self.implementation = implementation
        self.scale = None
        self._channel_axis = -1 if self.data_format == "channels_last" else 1
        self._spatial_axes = (1, 2) if self.data_format == "channels_last" else (2, 3)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[self._channel_axis] is None:
            raise ValueError(
                "NormalizedConv2D expects a rank-4 input with a known channel axis. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        super().build(input_shape)
        self._patch_size = (
            self.kernel_size[0] * self.kernel_size[1] * input_shape[self._channel_axis]
        )
        self.scale = None
        if self.use_scale:
            self.scale = self.add_weight(
                name="scale", shape=(self.filters,), initializer="ones", dtype=self.dtype
            )

    def _per_filter(self, vector):
        shape = [1, 1, 1, 1]
        shape[self._channel_axis] = -1
        return ops.reshape(vector, shape)

    def _conv(self, x, kernel):
        return ops.conv(
            x,
            kernel,
            strides=self.strides,
            padding="valid",
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )

    def _zero_pad(self, x):
        """The zeros a "same" convolution adds, made explicit (TensorFlow's split)."""
        if self.padding == "valid":
            return x
        pads = [[0, 0]] * 4
        for axis, size, stride, dilation in zip(
            self._spatial_axes, self.kernel_size, self.strides, self.dilation_rate
        ):
            length = x.shape[axis]
            if length is None:
                raise ValueError(
                    "NormalizedConv2D with padding='same' needs known spatial sizes. "
                    f"Received: input_shape={tuple(x.shape)}"
                )
            extent = (size - 1) * dilation + 1
            total = max((-(-length // stride) - 1) * stride + extent - length, 0)
            pads[axis] = [total // 2, total - total // 2]
        return ops.pad(x, pads)

    def _padded_and_shifted(self, x):
        """Zero-padded input, shifted (zeros included) by each example's mean.

        The shift is an exact no-op for standardized patches and avoids
        cancellation for inputs far from zero.
        """
        return self._zero_pad(x) - ops.mean(x, axis=(1, 2, 3), keepdims=True)

    def _fast(self, x, kernel):
        box = ops.ones(self.kernel_size + (1, 1), "float32")
        channel = self._channel_axis
        mean = self._conv(ops.sum(x, axis=channel, keepdims=True), box) / self._patch_size
        mean_square = (
            self._conv(ops.sum(ops.square(x), axis=channel, keepdims=True), box) / self._patch_size
        )
        variance = ops.maximum(mean_square - ops.square(mean), 0.0)
        centered = self._conv(x, kernel) - mean * self._per_filter(ops.sum(kernel, axis=(0, 1, 2)))
        return centered * ops.rsqrt(variance + self.epsilon)

    def _im2col(self, x, kernel):
        if self.data_format == "channels_first":
            x = ops.transpose(x, (0, 2, 3, 1))
        patches = ops.image.extract_patches(
            x,
            self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            padding="valid",
            data_format="channels_last",
        )
        mean = ops.mean(patches, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(patches - mean), axis=-1, keepdims=True)
        standardized = (patches - mean) * ops.rsqrt(variance + self.epsilon)
        outputs = ops.matmul(standardized, ops.reshape(kernel, (self._patch_size, self.filters)))
        if self.data_format == "channels_first":
            outputs = ops.transpose(outputs, (0, 3, 1, 2))
        return outputs

    def convolution_op(self, inputs, kernel):
        """`sum(W_f (P - mean(P)) / sqrt(var(P) + epsilon))` (times `s_f`) for every patch `P`.

        Float32 `inputs` and `kernel` (Conv2D's layout `(kh, kw, C_in,
        filters)`); returns the float32 output before the bias.
        """
        x = self._padded_and_shifted(ops.cast(inputs, "float32"))
        kernel = ops.cast(kernel, "float32")
        if self.implementation == "fast":
            outputs = self._fast(x, kernel)
        else:
            outputs = self._im2col(x, kernel)
        if self.use_scale:
            outputs = outputs * self._per_filter(self.scale)
        return outputs

    def call(self, inputs):
        # Conv2D's call (convolution_op, bias, activation), all in float32.
        outputs = super().call(ops.cast(inputs, "float32"))
        return ops.cast(outputs, self.compute_dtype)

    def _stored_variables(self):
        """Kernel, scale, bias: the order this layer's `.keras` files have always used."""
        return [v for v in (self._kernel, self.scale, self.bias) if v is not None]

    def save_own_variables(self, store):
        if not self.built:
            return
        for index, variable in enumerate(self._stored_variables()):
            store[str(index)] = variable

    def load_own_variables(self, store):
        if not self.built:
            return
        variables = self._stored_variables()
        if len(store.keys()) != len(variables):
            raise ValueError(
                f"Layer '{self.name}' expects {len(variables)} variables (kernel, "
                f"scale if use_scale, bias if use_bias). Received: {len(store.keys())} "
                "variables"
            )
        for index, variable in enumerate(variables):
            variable.assign(store[str(index)])

    def get_config(self):
        config = {
            "use_scale": self.use_scale,
            "epsilon": self.epsilon,
            "implementation": self.implementation,
        }
        return {**super().get_config(), **config}
