"""Normalization Propagation layers (Arpit et al. 2016, arXiv:1603.01431).

`NormPropDense` and `NormPropConv2D` (a `keras.layers.Conv2D` whose
`convolution_op` normalizes the kernel).
"""

import keras
import numpy as np
from keras import ops

from keras_norms.gaussian_moments import (
    activation_moments,
    jacobian_factor,
    prelu_jacobian_factor,
    prelu_moments,
)
from keras_norms.layers.arguments import (
    PADDINGS,
    check_bool,
    check_choice,
    check_conv_arguments,
    check_data_format,
    check_image_input,
    check_positive_int,
)
from keras_norms.layers.linear import NormalizedLinear
from keras_norms.layers.precision import Float32Variables
from keras_norms.policies import dtype_policy

_SQUARED_NORM_FLOOR = 1e-12
PRELU = "prelu"
# He et al. (2015) initialize the PReLU slope at 0.25.
PRELU_INITIAL_SLOPE = 0.25
# Conv2D arguments that NormPropConv2D sets itself (no bias: `beta` is the
# offset; the kernel constraint is `unit_norm_constraint`).
_FIXED_CONV_ARGUMENTS = (
    "use_bias",
    "bias_initializer",
    "bias_regularizer",
    "bias_constraint",
    "kernel_constraint",
)


class _Activation:
    """The activation's NormProp constants, checked when the layer is constructed."""

    def __init__(self, layer, activation):
        try:
            self._set(activation)
        except ValueError as error:
            raise ValueError(f"{type(layer).__name__}: {error}") from None

    def _set(self, activation):
        self.prelu = activation == PRELU
        self.standardize = activation is not None
        if self.prelu:
            self.c2, self.c1 = prelu_moments(PRELU_INITIAL_SLOPE)
            self.factor = prelu_jacobian_factor(PRELU_INITIAL_SLOPE)
        else:
            self.c2, self.c1 = activation_moments(activation)
            self.factor = jacobian_factor(activation)
        # The elementwise function as Dense and Conv2D hold it (None: linear).
        self.function = None if self.prelu or activation is None else activation
        if activation is None or isinstance(activation, str):
            self.config = activation
        else:
            self.config = keras.activations.serialize(activation)


class _NormProp(Float32Variables, NormalizedLinear):
    """The NormProp computation shared by the Dense and Conv2D variants.

    `o = (f(gamma * (W x) / ||W_i|| + beta) - c2) / c1`, with
    `gamma / ||W_i||` folded into the kernel before the product. Subclasses
    provide `_normalized_linear(inputs)` (the product with the normalized
    kernel), `_plain_linear(activation, name)` (the plain Keras layer of the
    same shape) and `_channel_axis`.
    """

    def _set_normprop(
        self,
        activation,
        gamma_initializer,
        beta_initializer,
        unit_norm_constraint,
        prelu_alpha_initializer,
    ):
        self._prelu = activation.prelu
        self._standardize = activation.standardize
        self._c2, self._c1 = activation.c2, activation.c1
        self._activation_config = activation.config
        self.activation = keras.activations.get(activation.function)
        self.gamma_initializer = keras.initializers.get(
            gamma_initializer or keras.initializers.Constant(1.0 / activation.factor)
        )
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.unit_norm_constraint = check_bool(self, "unit_norm_constraint", unit_norm_constraint)
        self.prelu_alpha_initializer = keras.initializers.get(
            prelu_alpha_initializer or keras.initializers.Constant(PRELU_INITIAL_SLOPE)
        )

    def _build_normprop(self, input_shape, units):
        self._built_input_shape = tuple(input_shape)
        self.gamma = self.add_weight(
            name="gamma", shape=(units,), initializer=self.gamma_initializer
        )
        self.beta = self.add_weight(name="beta", shape=(units,), initializer=self.beta_initializer)
        self.alpha = None
        if self._prelu:
            self.alpha = self.add_weight(
                name="alpha", shape=(units,), initializer=self.prelu_alpha_initializer
            )

    def _normalize(self, kernel):
        kernel = ops.cast(kernel, "float32")
        axes = tuple(range(len(kernel.shape) - 1))
        squared = ops.sum(ops.square(kernel), axis=axes, keepdims=True)
        return kernel * ops.rsqrt(ops.maximum(squared, _SQUARED_NORM_FLOOR)) * self.gamma

    def normalized_kernel(self):
        """`gamma * W / ||W_i||` per output unit, float32, the kernel's shape."""
        return self._normalize(self.kernel)

    def post_activation_moments(self):
        """`(c2, c1)`: floats, or float32 `(units,)` tensors for PReLU."""
        if self._prelu:
            return prelu_moments(ops.convert_to_tensor(self.alpha))
        return self._c2, self._c1

    def _per_channel(self, vector, ndim):
        shape = [1] * ndim
        shape[self._channel_axis] = -1
        return ops.reshape(ops.cast(vector, "float32"), shape)

    def call(self, inputs):
        dtype = self.compute_dtype
        outputs = ops.cast(self._normalized_linear(ops.cast(inputs, dtype)), "float32")
        ndim = len(outputs.shape)
        outputs = outputs + self._per_channel(self.beta, ndim)
        if not self._standardize:
            return ops.cast(outputs, dtype)
        c2, c1 = self.post_activation_moments()
        if self._prelu:
            alpha = self._per_channel(self.alpha, ndim)
            activated = ops.where(outputs > 0, outputs, alpha * outputs)
            c2, c1 = self._per_channel(c2, ndim), self._per_channel(c1, ndim)
        else:
            activated = self.activation(outputs)
        return ops.cast((activated - c2) / c1, dtype)

    def _normprop_config(self):
        return {
            "activation": self._activation_config,
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "unit_norm_constraint": self.unit_norm_constraint,
            "prelu_alpha_initializer": keras.initializers.serialize(self.prelu_alpha_initializer),
        }

    def plain_layer(self):
        """A built, float32 plain Keras layer that computes this layer's function.

        With `activation=None`: a `Dense` / `Conv2D` named like this layer,
        holding the kernel `gamma * W / ||W_i||` and the bias `beta`.
        Otherwise a `keras.Sequential` named like this layer: that linear
        layer (named `<name>_dense` / `<name>_conv`) with the elementwise
        activation, then `keras.layers.Rescaling(1 / c1, -c2 / c1)` (eq. 9,
        11). For `"prelu"` the linear layer has no activation and is followed
        by `keras.layers.PReLU` with this layer's slopes (shared over the
        spatial axes); as `c1(a) > 0` varies per channel and PReLU is
        positively homogeneous, `1 / c1` is folded into the linear layer's
        kernel and bias and the `Rescaling` has scale 1 and the per-channel
        offset `-c2 / c1` (Keras' `Rescaling` reshapes a per-channel scale by
        the global image data format, its offset it leaves alone).

        Returns:
            A new built `keras.layers.Layer` (float32 variables and compute)
            whose output on any input equals this layer's, float32 rounding
            aside.

        Raises:
            ValueError: if the layer is not built.
        """
        if not self.built:
            raise ValueError(
                f"{type(self).__name__}.plain_layer needs a built layer. "
                f"Received: built={self.built}"
            )
        shape = self._built_input_shape
        kernel = np.asarray(ops.convert_to_numpy(self.normalized_kernel()), "float64")
        bias = np.asarray(ops.convert_to_numpy(self.beta), "float64")
        with dtype_policy("float32"):
            if not self._standardize:
                linear = self._plain_linear(None, self.name)
                linear.build(shape)
                linear.set_weights([kernel.astype("float32"), bias.astype("float32")])
                return linear
            activation = None if self._prelu else self._activation_config
            linear = self._plain_linear(activation, f"{self.name}_{self._plain_suffix}")
            parts = [linear]
            rank = len(shape)
            channel = self._channel_axis % rank
            if self._prelu:
                alpha = np.asarray(ops.convert_to_numpy(self.alpha), "float64")
                c2, c1 = np.array([prelu_moments(float(a)) for a in alpha]).T
                kernel, bias = kernel / c1, bias / c1  # PReLU(z / c1) = PReLU(z) / c1
                shared = [axis for axis in range(1, rank) if axis != channel]
                prelu = keras.layers.PReLU(shared_axes=shared or None, name=f"{self.name}_prelu")
                offset_shape = [1] * (rank - 1)
                offset_shape[channel - 1] = -1
                parts += [
                    prelu,
                    keras.layers.Rescaling(
                        1.0,
                        np.reshape(-c2 / c1, offset_shape).astype("float32"),
                        name=f"{self.name}_shift",
                    ),
                ]
            else:
                c2, c1 = self._c2, self._c1
                parts.append(keras.layers.Rescaling(1.0 / c1, -c2 / c1, name=f"{self.name}_shift"))
            plain = keras.Sequential(parts, name=self.name)
            plain.build(shape)
        linear.set_weights([kernel.astype("float32"), bias.astype("float32")])
        if self._prelu:
            prelu.set_weights([np.reshape(alpha, prelu.alpha.shape).astype("float32")])
        return plain


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
    which Keras optimizers apply after each step. Variables are float32 and
    read with `autocast=False` (Keras `BatchNormalization`'s convention);
    the kernel and its norm are computed in float32, the product in the
    compute dtype, the activation and restandardization in float32, and the
    output is returned in the compute dtype. The `activation` attribute is
    the elementwise Keras function applied (`linear` for `None` and
    `"prelu"`, whose slopes are the `alpha` weight); `plain_layer()` gives
    the equivalent plain Keras layer for deployment.
"""


@keras.saving.register_keras_serializable(package="keras_norms")
class NormPropDense(_NormProp, keras.layers.Layer):
    __doc__ = (
        """Fully connected NormProp layer (Arpit et al. 2016, arXiv:1603.01431, eq. 9).
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
        ValueError: for a non-positive `units`; an unknown, non-elementwise,
            constant or piecewise-constant activation (the message names the
            layer); an input whose last axis is unknown.
        TypeError: for a `units` that is not an integer (a float, a bool)
            or a `unit_norm_constraint` that is not a bool.

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

    _plain_suffix = "dense"
    _channel_axis = -1

    def __init__(
        self,
        units,
        activation="relu",
        gamma_initializer=None,
        beta_initializer="zeros",
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        unit_norm_constraint=True,
        prelu_alpha_initializer=None,
        **kwargs,
    ):
        units = check_positive_int(self, "units", units)
        constants = _Activation(self, activation)
        super().__init__(**kwargs)
        self.units = units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self._set_normprop(
            constants,
            gamma_initializer,
            beta_initializer,
            unit_norm_constraint,
            prelu_alpha_initializer,
        )

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(
                "NormPropDense expects a known last input axis. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=keras.constraints.UnitNorm(axis=[0]) if self.unit_norm_constraint else None,
        )
        self._build_normprop(input_shape, self.units)
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def _normalized_linear(self, inputs):
        return ops.matmul(inputs, ops.cast(self.normalized_kernel(), inputs.dtype))

    def _plain_linear(self, activation, name):
        return keras.layers.Dense(self.units, activation=activation, name=name)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = {
            "units": self.units,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            **self._normprop_config(),
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="keras_norms")
class NormPropConv2D(_NormProp, keras.layers.Conv2D):
    __doc__ = (
        """2D convolution NormProp layer (Arpit et al. 2016, arXiv:1603.01431, eq. 11-12).
"""
        + _DOC_COMMON
        + """
    `||W_i||` is the Frobenius norm of filter i over `(kh, kw, C_in / groups)`;
    `gamma_i`, `beta_i` and the constants broadcast over positions. Pool
    after this layer as usual: pooling keeps the statistics (section 3.2).

    A `keras.layers.Conv2D` whose `convolution_op` uses the kernel
    `gamma * W / ||W_i||`: `data_format`, `strides`, `dilation_rate`,
    `groups`, `compute_output_shape` and the config are Conv2D's (the
    arguments are checked before Conv2D sees them, so that messages name
    this layer); it has no bias (`beta` is the offset) and its kernel
    constraint is `unit_norm_constraint`.

    Args:
        filters: positive integer, the number of filters.
        kernel_size: int or pair of ints.
        strides: int or pair of ints. Defaults to 1.
        padding: `"valid"` or `"same"` (zero padding); for the paper's
            explicit padding use `keras.layers.ZeroPadding2D` before.
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`, as `Conv2D`.
        dilation_rate: int or pair of ints. Defaults to 1.
        groups: as `Conv2D`. Defaults to 1.
        activation: as `NormPropDense`. Defaults to `"relu"`.
        gamma_initializer, beta_initializer, kernel_initializer,
        kernel_regularizer, unit_norm_constraint, prelu_alpha_initializer:
            as `NormPropDense`.
        **kwargs: other `Conv2D` arguments (`activity_regularizer`) and base
            layer keyword arguments.

    Raises:
        ValueError: for a `kernel_size`, `strides` or `dilation_rate` that
            is not a positive int or a pair of them, a non-positive
            `filters` or `groups`, a `filters` that is not a multiple of
            `groups`, a `padding` other than `"valid"` or `"same"` (any
            case), a `data_format` other than `None`, `"channels_last"` or
            `"channels_first"`; for an unknown, non-elementwise, constant or
            piecewise-constant activation; at call time, for an input
            without rank 4 or with an unknown channel axis. Every message
            names the layer.
        TypeError: for a `filters` or `groups` that is not an integer (a
            float, a bool) or a `unit_norm_constraint` that is not a bool.

    Input shape:
        `(batch, H, W, C_in)`, or `(batch, C_in, H, W)` for channels first.

    Output shape:
        `(batch, H', W', filters)` (or `(batch, filters, H', W')`), in the
        compute dtype.

    Examples:

    >>> import numpy as np, keras_norms
    >>> layer = keras_norms.layers.NormPropConv2D(8, 3, padding="same")
    >>> tuple(layer(np.ones((1, 5, 5, 3), "float32")).shape)
    (1, 5, 5, 8)

    Reference:
        Arpit et al., ICML 2016 (arXiv:1603.01431), eq. 11-12, section 3.2.
    """
    )

    _plain_suffix = "conv"

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        activation="relu",
        gamma_initializer=None,
        beta_initializer="zeros",
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        unit_norm_constraint=True,
        prelu_alpha_initializer=None,
        **kwargs,
    ):
        constants = _Activation(self, activation)
        shape = check_conv_arguments(self, 2, filters, kernel_size, strides, dilation_rate)
        groups = check_positive_int(self, "groups", groups)
        if shape["filters"] % groups:
            raise ValueError(
                "NormPropConv2D expects `filters` to be a multiple of `groups`. "
                f"Received: filters={shape['filters']}, groups={groups}"
            )
        # Checked here, so that the messages name the layer (Conv2D's do not).
        super().__init__(
            **shape,
            padding=check_choice(self, "padding", padding, PADDINGS),
            data_format=check_data_format(self, data_format),
            groups=groups,
            use_bias=False,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            kernel_constraint=(
                keras.constraints.UnitNorm(axis=[0, 1, 2]) if unit_norm_constraint else None
            ),
            **kwargs,
        )
        self._set_normprop(
            constants,
            gamma_initializer,
            beta_initializer,
            unit_norm_constraint,
            prelu_alpha_initializer,
        )
        self._channel_axis = -1 if self.data_format == "channels_last" else 1
        self.input_spec = None  # build's check names the layer; Conv2D.build sets it

    def build(self, input_shape):
        check_image_input(self, input_shape, self._channel_axis)
        super().build(input_shape)
        self._build_normprop(input_shape, self.filters)

    def convolution_op(self, inputs, kernel):
        """Conv2D's convolution with the kernel `gamma * kernel / ||kernel_i||`.

        The kernel is normalized in float32 and cast to the inputs' dtype.
        """
        normalized = ops.cast(self._normalize(kernel), inputs.dtype)
        return super().convolution_op(inputs, normalized)

    def _normalized_linear(self, inputs):
        return self.convolution_op(inputs, self.kernel)

    def _plain_linear(self, activation, name):
        config = keras.layers.Conv2D.get_config(self)
        config.update(
            activation=activation,
            use_bias=True,
            kernel_constraint=None,
            activity_regularizer=None,
            name=name,
            dtype="float32",
        )
        return keras.layers.Conv2D.from_config(config)

    def save_own_variables(self, store):
        # Every variable in creation order (kernel, gamma, beta, alpha), as
        # keras.layers.Layer stores them; Conv2D would store kernel and bias.
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self):
        config = super().get_config()
        for key in _FIXED_CONV_ARGUMENTS:
            config.pop(key, None)
        return {**config, **self._normprop_config()}
