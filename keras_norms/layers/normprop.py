"""Normalization Propagation layers (Arpit et al. 2016): NormPropDense, NormPropConv2D."""

import keras
from keras import ops

from keras_norms.layers.arguments import conv_output_shape, int_pair

from keras_norms.activation_moments import (
    activation_moments,
    jacobian_factor,
    prelu_jacobian_factor,
    prelu_moments,
)

_SQUARED_NORM_FLOOR = 1e-12
PRELU = "prelu"
# He et al. (2015) initialize the PReLU slope at 0.25.
PRELU_INITIAL_SLOPE = 0.25


class _NormPropLayer(keras.layers.Layer):
    """Shared NormProp computation; subclasses define the linear map.

    o = (f(gamma * (W x) / ||W_i|| + beta) - c2) / c1, with `gamma / ||W_i||`
    folded into the kernel before the product.
    """

    def __init__(
        self,
        activation="relu",
        gamma_initializer=None,
        beta_initializer="zeros",
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        unit_norm_constraint=True,
        prelu_alpha_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.activation = activation
        self._prelu = activation == PRELU
        if self._prelu:
            self._c2, self._c1 = prelu_moments(PRELU_INITIAL_SLOPE)
            factor = prelu_jacobian_factor(PRELU_INITIAL_SLOPE)
            self._function = None
        else:
            self._c2, self._c1 = activation_moments(activation)
            factor = jacobian_factor(activation)
            self._function = None if activation is None else keras.activations.get(activation)
        self.gamma_initializer = keras.initializers.get(
            gamma_initializer or keras.initializers.Constant(1.0 / factor)
        )
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.unit_norm_constraint = bool(unit_norm_constraint)
        self.prelu_alpha_initializer = keras.initializers.get(
            prelu_alpha_initializer or keras.initializers.Constant(PRELU_INITIAL_SLOPE)
        )

    def _build_weights(self, kernel_shape, units):
        rank = len(kernel_shape)
        self._norm_axes = tuple(range(rank - 1))
        constraint = (
            keras.constraints.UnitNorm(axis=list(self._norm_axes))
            if self.unit_norm_constraint
            else None
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=constraint,
            autocast=False,
        )
        self.gamma = self.add_weight(
            name="gamma", shape=(units,), initializer=self.gamma_initializer, autocast=False
        )
        self.beta = self.add_weight(
            name="beta", shape=(units,), initializer=self.beta_initializer, autocast=False
        )
        self.alpha = None
        if self._prelu:
            self.alpha = self.add_weight(
                name="alpha", shape=(units,), initializer=self.prelu_alpha_initializer,
                autocast=False,
            )

    def normalized_kernel(self):
        """`gamma * W / ||W_i||` per output unit, float32, the kernel's shape."""
        kernel = ops.cast(self.kernel, "float32")
        squared = ops.sum(ops.square(kernel), axis=self._norm_axes, keepdims=True)
        return kernel * ops.rsqrt(ops.maximum(squared, _SQUARED_NORM_FLOOR)) * self.gamma

    def post_activation_moments(self):
        """`(c2, c1)`: floats, or float32 `(units,)` tensors for PReLU."""
        if self._prelu:
            return prelu_moments(ops.convert_to_tensor(self.alpha))
        return self._c2, self._c1

    def call(self, inputs):
        dtype = self.compute_dtype
        outputs = self._linear(ops.cast(inputs, dtype), ops.cast(self.normalized_kernel(), dtype))
        outputs = ops.cast(outputs, "float32") + self._per_channel(self.beta, outputs)
        if self.activation is None:
            return ops.cast(outputs, dtype)
        c2, c1 = self.post_activation_moments()
        if self._prelu:
            alpha = self._per_channel(self.alpha, outputs)
            activated = ops.where(outputs > 0, outputs, alpha * outputs)
            c2, c1 = self._per_channel(c2, outputs), self._per_channel(c1, outputs)
        else:
            activated = self._function(outputs)
        return ops.cast((activated - c2) / c1, dtype)

    def _per_channel(self, vector, like):
        shape = [1] * ops.ndim(like)
        shape[self._channel_axis] = -1
        return ops.reshape(ops.cast(vector, "float32"), shape)

    def get_config(self):
        config = {
            "activation": self.activation
            if self.activation is None or isinstance(self.activation, str)
            else keras.activations.serialize(self.activation),
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "unit_norm_constraint": self.unit_norm_constraint,
            "prelu_alpha_initializer": keras.initializers.serialize(
                self.prelu_alpha_initializer
            ),
        }
        return {**super().get_config(), **config}


_DOC_COMMON = """
    Normalization Propagation normalizes every hidden layer without batch
    statistics, so training and inference compute the same function and
    any batch size (1 included) works. Assuming the layer input has zero
    mean and unit variance per element (normalize the data first, section
    4.1), the pre-activation `W_i x / ||W_i||` is about N(0, 1)
    (Proposition 1), and after the activation `f` the output is restandardized
    with the known moments of `f(u)`, `u ~ N(0, 1)`:
    `o_i = (f(gamma_i * (W_i x) / ||W_i|| + beta_i) - c2) / c1`
    (eq. 9, 11, 12). For ReLU `c2 = 1/sqrt(2 pi)`, `c1 = sqrt((1 - 1/pi)/2)`
    (Remark 1); for `activation="prelu"` the learnable per-unit slope `a`
    gives `c2(a)`, `c1(a)` of Remark 2, with gradients; other activations
    use `keras_norms.activation_moments`. `gamma` starts at the inverse of
    the Jacobian factor (1/1.21 for ReLU, section 4.3.1;
    `keras_norms.jacobian_factor`), `beta` at 0. With `activation=None` the
    layer returns the normalized pre-activation (no c1/c2 step).

    After every optimizer update the kernel is projected back to unit L2
    norm per output unit (section 4.4) by `keras.constraints.UnitNorm`,
    which Keras optimizers apply after each step. Variables are float32;
    the kernel and its norm are computed in float32 and the output is
    returned in the compute dtype.
"""


@keras.saving.register_keras_serializable(package="keras_norms")
class NormPropDense(_NormPropLayer):
    __doc__ = (
        """Fully connected NormProp layer (Arpit et al. 2016, eq. 9).
"""
        + _DOC_COMMON
        + """
    Args:
        units: positive integer, the number of output units.
        activation: a Keras elementwise activation (name or callable),
            `"prelu"` (learnable slope per unit), or `None`. Defaults to
            `"relu"`.
        gamma_initializer: defaults to `Constant(1 / jacobian_factor)`.
        beta_initializer: defaults to `"zeros"`.
        kernel_initializer: defaults to `"glorot_uniform"` (the scale is
            irrelevant: rows are normalized).
        kernel_regularizer: optional, e.g. `keras.regularizers.L2(5e-4)`.
        unit_norm_constraint: project rows to unit norm after each update.
        prelu_alpha_initializer: for `"prelu"`, defaults to `Constant(0.25)`.
        **kwargs: base layer keyword arguments, such as `name`, `dtype`.

    Raises:
        ValueError: for a non-positive `units`, an unknown or
            non-elementwise activation, or an input whose last axis is unknown.

    Input shape:
        `(batch, ..., in)`.

    Output shape:
        `(batch, ..., units)`, in the compute dtype.

    Examples:

    >>> import numpy as np, keras_norms
    >>> layer = keras_norms.layers.NormPropDense(4)
    >>> tuple(layer(np.ones((2, 3), "float32")).shape)
    (2, 4)
    >>> round(float(layer.gamma[0]) * 1.21, 2)
    1.0

    Reference:
        Arpit, Zhou, Kota & Govindaraju, "Normalization Propagation: A
        Parametric Technique for Removing Internal Covariate Shift in Deep
        Networks", ICML 2016 (arXiv:1603.01431), eq. 9 and 12, Remarks 1-2,
        sections 3.4 and 4.4.
    """
    )

    def __init__(self, units, activation="relu", **kwargs):
        if not isinstance(units, int) or units <= 0:
            raise ValueError(
                f"NormPropDense expects a positive integer `units`. Received: units={units!r}"
            )
        super().__init__(activation=activation, **kwargs)
        self.units = units
        self._channel_axis = -1

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(
                "NormPropDense expects a known last input axis. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self._build_weights((input_shape[-1], self.units), self.units)
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def _linear(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="keras_norms")
class NormPropConv2D(_NormPropLayer):
    __doc__ = (
        """2D convolution NormProp layer (Arpit et al. 2016, eq. 11-12).
"""
        + _DOC_COMMON
        + """
    `||W_i||` is the Frobenius norm of filter i over `(kh, kw, C_in)`;
    `gamma_i`, `beta_i` and the constants broadcast over positions. Pool
    after this layer as usual: pooling keeps the statistics (section 3.2).

    Args:
        filters: positive integer, the number of filters.
        kernel_size: int or pair of ints.
        strides: int or pair of ints. Defaults to 1.
        padding: `"valid"` or `"same"` (zero padding); for the paper's
            explicit padding use `keras.layers.ZeroPadding2D` before.
        activation: as `NormPropDense`. Defaults to `"relu"`.
        data_format: `"channels_last"` (default) or `"channels_first"`.
        **kwargs: as `NormPropDense` (initializers, regularizer,
            `unit_norm_constraint`, base layer arguments).

    Raises:
        ValueError: for a non-positive `filters`, an unknown `padding`, an
            unknown or non-elementwise activation, or an input without
            rank 4 or with an unknown channel axis.

    Input shape:
        `(batch, H, W, C_in)` (channels last).

    Output shape:
        `(batch, H', W', filters)`, in the compute dtype.

    Examples:

    >>> import numpy as np, keras_norms
    >>> layer = keras_norms.layers.NormPropConv2D(8, 3, padding="same")
    >>> tuple(layer(np.ones((1, 5, 5, 3), "float32")).shape)
    (1, 5, 5, 8)

    Reference:
        Arpit et al., ICML 2016 (arXiv:1603.01431), eq. 11-12, section 3.2.
    """
    )

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        activation="relu",
        data_format="channels_last",
        **kwargs,
    ):
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(
                f"NormPropConv2D expects a positive integer `filters`. Received: filters={filters!r}"
            )
        if padding not in ("valid", "same"):
            raise ValueError(
                f"NormPropConv2D expects padding 'valid' or 'same'. Received: padding={padding!r}"
            )
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                "NormPropConv2D expects data_format 'channels_last' or "
                f"'channels_first'. Received: data_format={data_format!r}"
            )
        super().__init__(activation=activation, **kwargs)
        self.filters = filters
        self.kernel_size = int_pair(kernel_size, "kernel_size", "NormPropConv2D")
        self.strides = int_pair(strides, "strides", "NormPropConv2D")
        self.padding = padding
        self.data_format = data_format
        self._channel_axis = -1 if data_format == "channels_last" else 1

    def build(self, input_shape):
        channels = input_shape[self._channel_axis] if len(input_shape) == 4 else None
        if channels is None:
            raise ValueError(
                "NormPropConv2D expects a rank-4 input with a known channel axis. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self._build_weights(self.kernel_size + (channels, self.filters), self.filters)
        self.input_spec = keras.InputSpec(ndim=4, axes={self._channel_axis: channels})

    def _linear(self, inputs, kernel):
        return ops.conv(
            inputs, kernel, strides=self.strides, padding=self.padding,
            data_format=self.data_format,
        )

    def compute_output_shape(self, input_shape):
        spatial = (1, 2) if self.data_format == "channels_last" else (2, 3)
        return conv_output_shape(
            input_shape, self.filters, self.kernel_size, self.strides, self.padding,
            spatial_axes=spatial, channel_axis=self._channel_axis,
        )

    def get_config(self):
        config = {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
        }
        return {**super().get_config(), **config}
