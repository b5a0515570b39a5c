"""Normalized Convolution (Kim et al. 2020, arXiv:2005.05274): standardized im2col patches."""

import keras
from keras import ops

from keras_norms.layers.arguments import (
    PADDINGS,
    check_bool,
    check_conv_arguments,
    check_data_format,
    check_epsilon,
    check_image_input,
    is_integer,
)
from keras_norms.layers.linear import NormalizedLinear
from keras_norms.layers.precision import Float32Variables

IMPLEMENTATIONS = ("fast", "im2col")
PADDING_FORMS = "'valid', 'same', a non-negative int or ((top, bottom), (left, right))"


def _is_size(value):
    return is_integer(value) and value >= 0


def _check_padding(padding):
    """`"valid"` or `"same"` (any case, lower-cased), an int, or `((top, bottom), (left, right))`.

    Sizes are non-negative ints, lists are read as tuples.
    """
    if isinstance(padding, str) and padding.lower() in PADDINGS:
        return padding.lower()
    if _is_size(padding):
        return int(padding)
    pairs = padding if isinstance(padding, (tuple, list)) else ()
    if len(pairs) == 2 and all(
        isinstance(pair, (tuple, list)) and len(pair) == 2 and all(map(_is_size, pair))
        for pair in pairs
    ):
        return tuple(tuple(int(size) for size in pair) for pair in pairs)
    raise ValueError(
        f"NormalizedConv2D expects padding {PADDING_FORMS}. Received: padding={padding!r}"
    )


def _same_padding(length, extent, stride):
    """TensorFlow's "same" zeros `(before, after)` on an axis of `length` (maybe dynamic).

    `max((ceil(L / s) - 1) * s + extent - L, 0)` in all, that is
    `max(t, 0)` with `t = extent - 1 - (L - 1) % s`: `extent - 1` at stride 1,
    whatever `L`. A JAX symbolic `L` cannot be compared, so where the maximum
    matters (`extent < s`, `-s < t < s`) it is `(t % s) * ((t + s) // s)`, two
    factors that JAX bounds below by 0 (the second is 1 if `t >= 0`, else 0).
    """
    total = extent - 1
    if stride > 1:
        total -= (length - 1) % stride
        if extent < stride:
            total = (total % stride) * ((total + stride) // stride)
    return (total // 2, (total + 1) // 2)


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
    `compute_output_shape` and the config are Conv2D's (the shape, padding
    and layout arguments are checked before Conv2D sees them, so that
    messages name this layer), except that `padding` also takes explicit
    sizes and that strides and dilation may both exceed 1 (on the JAX and
    PyTorch backends: TensorFlow's convolution refuses the pair).

    Padding adds explicit zeros, counted in the patch statistics. `"same"`
    uses TensorFlow's split of
    `max((ceil(L / s) - 1) * s + (k - 1) * d + 1 - L, 0)` zeros on an axis of
    size `L` (the odd one at the bottom or right; `ceil(L / s)` outputs),
    computed from the input's dynamic size: unknown `H` and `W` work traced
    (`tf.function`, `jax.jit`) and exported; at stride 1 it is static. At
    stride > 1 it differs from the reference code's symmetric `unfold`
    padding on some sizes (kernel 3, stride 2, even size: TensorFlow pads
    `(0, 1)`, the reference `(1, 1)`): pass the reference's padding as an int
    to compute its function.

    `implementation="fast"` (default) never builds the im2col matrix: it uses
    `sum(W_f (P - mu)) / sigma = (conv(x, W_f) - mu * sum(W_f)) / sigma`, with
    the patch mean and mean square from a box filter over the channel-summed
    input and over its square (an average pooling, or with dilation an
    all-ones convolution; same strides, on the explicitly zero-padded input,
    so padded zeros are counted). The variance is clamped at zero before
    epsilon.
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
        padding: `"valid"` (none), `"same"` (see above), an int `p` (`p`
            zeros on every side, as PyTorch's `Conv2d(padding=p)` and the
            reference code's `unfold(padding=p)`) or
            `((top, bottom), (left, right))` zeros.
        data_format: `"channels_last"` (`(N, H, W, C)`) or
            `"channels_first"` (`(N, C, H, W)`); defaults to
            `keras.config.image_data_format()`, as `Conv2D`.
        dilation_rate: int or pair. Defaults to 1.
        groups: must be 1: a grouped convolution would need each group's
            own patch statistics.
        activation: applied after the bias, as `Conv2D`. Defaults to `None`.
        use_bias: add the per-filter bias. Defaults to `True`.
        use_scale: multiply by a per-filter scale first. Defaults to `False`.
        epsilon: positive number added to each patch's variance, inside
            the square root. Defaults to 1e-5, where the reference code uses
            1e-14 (the paper's eq. 2 adds epsilon to the standard deviation
            instead). In float32 the variance of a (near-)constant patch (a
            flat region, padding as wide as the dilated kernel) is rounding
            noise, and its standardized values are that noise times up to
            `1 / sqrt(epsilon)`: 316 at 1e-5, 1e7 at 1e-14. Pass
            `epsilon=1e-14` to compute the reference's formula: outputs then
            agree with it within 1e-4 of their largest magnitude (tested on
            both paths), except in patches of padding zeros only, exactly 0
            before the bias in the reference and noise here (the
            per-example mean shift makes them constant, not zero): of order
            10 for inputs of mean 5, against 1e-3 at the default.
        implementation: `"fast"` or `"im2col"`.
        **kwargs: `Conv2D`'s other arguments (`kernel_initializer`,
            `bias_initializer`, regularizers, constraints) and base layer
            keyword arguments.

    Raises:
        ValueError: for a `kernel_size`, `strides` or `dilation_rate` that
            is not a positive int or a pair of them, a non-positive
            `filters`; for a `padding` of none of the forms above (a string
            other than `"valid"` or `"same"`, in any case), a `data_format`
            other than `None`, `"channels_last"` or `"channels_first"`,
            `groups != 1`, an unknown `implementation`, a non-positive or
            infinite `epsilon`, or, on the TensorFlow backend, strides and
            dilation both above 1; at build or call time, for an input that
            is not rank 4 with a known channel axis, or whose padded size is
            smaller than the dilated kernel.
        TypeError: for a `filters` that is not an integer, an `epsilon`
            that is not a number, or a `use_bias` or `use_scale` that is
            not a bool.

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
    >>> reference = keras_norms.layers.NormalizedConv2D(4, 3, strides=2, padding=1)
    >>> tuple(reference(np.random.rand(2, 8, 8, 3).astype("float32")).shape)
    (2, 4, 4, 4)

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
        # Checked before Conv2D sees them, so that the messages name this layer.
        shape = check_conv_arguments(self, 2, filters, kernel_size, strides, dilation_rate)
        padding = _check_padding(padding)
        if not is_integer(groups) or groups != 1:
            raise ValueError(
                "NormalizedConv2D supports groups=1 only (a grouped convolution would "
                f"need each group's own patch statistics). Received: groups={groups!r}"
            )
        # Conv2D refuses strides and dilation both above 1, and padding sizes: both are set below.
        dilation_rate = shape.pop("dilation_rate")
        super().__init__(
            **shape,
            padding=padding if isinstance(padding, str) else "valid",
            data_format=check_data_format(self, data_format),
            dilation_rate=1,
            groups=groups,
            activation=activation,
            use_bias=check_bool(self, "use_bias", use_bias),
            **kwargs,
        )
        self.dilation_rate = dilation_rate
        self.input_spec = None  # build's check names the layer; Conv2D.build sets it
        if not isinstance(padding, str):
            self.padding = padding
        if keras.backend.backend() == "tensorflow" and (
            max(self.strides) > 1 and max(self.dilation_rate) > 1
        ):
            raise ValueError(
                "NormalizedConv2D supports strides > 1 with dilation_rate > 1 on the JAX and "
                "PyTorch backends only (TensorFlow's convolution refuses the pair). Received: "
                f"strides={self.strides}, dilation_rate={self.dilation_rate}"
            )
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"NormalizedConv2D expects implementation in {IMPLEMENTATIONS}. "
                f"Received: implementation={implementation!r}"
            )
        self.use_scale = check_bool(self, "use_scale", use_scale)
        self.epsilon = check_epsilon(self, epsilon)  # finite: a constant patch has variance 0
        self.implementation = implementation
        self.scale = None
        self._channel_axis = -1 if self.data_format == "channels_last" else 1
        self._spatial_axes = (1, 2) if self.data_format == "channels_last" else (2, 3)

    def build(self, input_shape):
        check_image_input(self, input_shape, self._channel_axis)
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

    def _extents(self):
        """The dilated kernel's size on each spatial axis."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation_rate))

    def _explicit_pads(self):
        """`((top, bottom), (left, right))` of an int or explicit `padding`."""
        if isinstance(self.padding, int):
            return ((self.padding, self.padding),) * 2
        return self.padding

    def _zero_pad(self, x):
        """The padding's zeros, made explicit ("same": from the dynamic spatial sizes)."""
        if self.padding == "valid":
            return x
        spatial = self._explicit_pads()
        if self.padding == "same":
            shape = ops.shape(x)
            spatial = [
                _same_padding(shape[axis], extent, stride)
                for axis, extent, stride in zip(self._spatial_axes, self._extents(), self.strides)
            ]
        pads = [(0, 0)] * 4
        for axis, pad in zip(self._spatial_axes, spatial):
            pads[axis] = pad
        return ops.pad(x, pads)

    def _padded_and_shifted(self, x):
        """Zero-padded input, shifted (zeros included) by each example's mean.

        The shift is an exact no-op for standardized patches and avoids
        cancellation for inputs far from zero.
        """
        return self._zero_pad(x) - ops.mean(x, axis=(1, 2, 3), keepdims=True)

    def _patch_mean(self, channel_sum):
        """Each patch's mean, from the `(N, H, W, 1)` (or `(N, 1, H, W)`) channel sum of the
        padded input: a box filter, as an average pooling where it can be one (undilated:
        one cheaper op than a convolution with a ones kernel, on every backend)."""
        if self.dilation_rate != (1, 1):
            box = ops.ones(self.kernel_size + (1, 1), "float32")
            return self._conv(channel_sum, box) / self._patch_size
        window = self.kernel_size[0] * self.kernel_size[1]
        pooled = ops.average_pool(
            channel_sum,
            self.kernel_size,
            strides=self.strides,
            padding="valid",
            data_format=self.data_format,
        )
        return pooled * (window / self._patch_size)

    def _fast(self, x, kernel):
        channel = self._channel_axis
        mean = self._patch_mean(ops.sum(x, axis=channel, keepdims=True))
        mean_square = self._patch_mean(ops.sum(ops.square(x), axis=channel, keepdims=True))
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

    def compute_output_shape(self, input_shape):
        if isinstance(self.padding, str):
            return super().compute_output_shape(input_shape)
        shape = list(input_shape)
        shape[self._channel_axis] = self.filters
        for axis, (before, after), extent, stride in zip(
            self._spatial_axes, self._explicit_pads(), self._extents(), self.strides
        ):
            if shape[axis] is None:
                continue
            padded = shape[axis] + before + after
            if padded < extent:
                raise ValueError(
                    "NormalizedConv2D expects a padded input at least as large as the dilated "
                    f"kernel {self._extents()}. Received: input_shape={tuple(input_shape)}, "
                    f"padding={self.padding}"
                )
            shape[axis] = (padded - extent) // stride + 1
        return tuple(shape)

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
