"""Weight normalization (Salimans & Kingma 2016, arXiv:1602.07868) as a Keras 3 wrapper."""

import keras
import numpy as np
from keras import ops

from keras_norms.layers.batch_statistics import batch_mean
from keras_norms.layers.linear import channel_axis, is_plain_linear, kernel_output_axis
from keras_norms.policies import dtype_policy

# Floor on the squared norm of v, so that an all-zero direction gives a zero
# kernel instead of NaN (the same floor as `tf.nn.l2_normalize`).
_SQUARED_NORM_FLOOR = 1e-12
# Added to the variance of the init batch's pre-activation before the square
# root, as in Salimans & Kingma's reference code.
_INIT_EPSILON = 1e-10
# A pre-activation whose variance over the init batch is below this, relative
# to 1 + mean^2, is constant up to float32 rounding: data_dependent_init
# refuses it (it would set g near 1e5).
_CONSTANT_VARIANCE = 1e-12


def _check_wrappable(layer):
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "WeightNormalization expects a Keras layer to wrap. "
            f"Received: layer={layer!r} of type {type(layer).__name__}"
        )
    if is_plain_linear(layer):
        return
    if not hasattr(type(layer), "kernel"):
        raise ValueError(
            "WeightNormalization can only wrap a layer that has a kernel "
            "(Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose); "
            f"{type(layer).__name__} has no kernel. Received: layer={layer.name}"
        )
    raise ValueError(
        "WeightNormalization supports Dense, Conv1D/2D/3D and "
        "Conv1D/2D/3DTranspose layers. "
        f"Received: layer={layer.name} of type {type(layer).__name__}"
    )


@keras.saving.register_keras_serializable(package="keras_norms")
class WeightNormalization(keras.layers.Wrapper):
    """Weight normalization wrapper: `w = g * v / ||v||`.

    Reparameterizes the kernel of the wrapped layer so that its norm `g` and
    its direction `v / ||v||` are learned separately (Salimans & Kingma
    2016, eq. 2). The norm is taken, for each output feature, over every
    other kernel axis: the input axis of a `Dense` kernel
    `(in, units)`, the spatial and input axes of a convolution kernel
    `(*kernel_size, in / groups, filters)`, and the spatial and input axes of
    a transposed-convolution kernel `(*kernel_size, filters, in)`, whose
    output axis is the second to last (`keras_norms.layers.linear`).
    Gradients reach both `g` and `v` (paper eq. 3).

    The wrapped layer keeps `v` as its own `kernel` variable, and its bias
    and activation; this wrapper adds `g` (one per output feature) and
    computes the kernel itself (Keras 3 kernels are read-only properties).
    With `log_scale=True` the trainable variable is `s` with `g = exp(s)`
    (paper section 2).

    Data-dependent initialization (paper section 3) is done once for a
    whole model by `keras_norms.data_dependent_init(model, x_init)`, which
    sets `g = 1 / std(t)` and `b = -mean(t) / std(t)` from the init batch's
    pre-activation `t = x . v / ||v||`. Until then (and always with
    `data_init=False`), `g` starts at `||v||`, so wrapping leaves the wrapped
    layer's output unchanged. The non-trainable boolean `initialized` records
    that initialization happened; it is saved with the model, so a reloaded
    model is never initialized again. `call` holds no initialization logic.

    For deployment, `plain_layer()` returns the wrapped layer's type holding
    the constant kernel `g * v / ||v||` (as tensorflow-addons' `remove()` or
    torch's `remove_parametrizations`).

    Variables are float32; `g` is read with `autocast=False` (Keras
    `BatchNormalization`'s convention), and under a mixed-precision policy
    the kernel's norm and `g * v / ||v||` are computed in float32 and cast
    to the compute dtype. `v` is the wrapped layer's own kernel variable,
    which Keras creates with autocast: with the layer's default
    `autocast=True` it is read in the compute dtype, as Keras' own `Dense`
    and `Conv2D` read it, before its norm is taken in float32; pass
    `autocast=False` to read it (and the inputs) in float32.

    Args:
        layer: the layer to wrap: `keras.layers.Dense`, `Conv1D`, `Conv2D`,
            `Conv3D`, `Conv1DTranspose`, `Conv2DTranspose` or
            `Conv3DTranspose` (or a subclass that is not
            `keras_norms.layers.linear.NormalizedLinear`, e.g. not
            `NormPropConv2D` or `NormalizedConv2D`).
        data_init: whether `keras_norms.data_dependent_init` initializes this
            layer from data. Defaults to `True`.
        log_scale: if `True`, learn `s = log(g)` instead of `g`.
            Defaults to `False`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Raises:
        TypeError: if `layer` is not a Keras layer.
        ValueError: if `layer` has no kernel or is not a supported type.

    Call arguments:
        inputs: the wrapped layer's input, e.g. `(batch, ..., in)` for
            `Dense` or `(batch, H, W, C)` for `Conv2D` (channels last).

    Input shape:
        Whatever the wrapped layer accepts.

    Output shape:
        The wrapped layer's output shape, in the layer's compute dtype.

    Examples:

    >>> import numpy as np, keras, keras_norms
    >>> wn = keras_norms.layers.WeightNormalization(keras.layers.Dense(4))
    >>> y = wn(np.ones((2, 3), "float32"))
    >>> tuple(y.shape), tuple(wn.g.shape)
    ((2, 4), (4,))

    Reference:
        Salimans & Kingma, "Weight Normalization: A Simple Reparameterization
        to Accelerate Training of Deep Neural Networks", NeurIPS 2016
        (arXiv:1602.07868), eq. 2-3 and section 3.
    """

    def __init__(self, layer, data_init=True, log_scale=False, **kwargs):
        _check_wrappable(layer)
        super().__init__(layer, **kwargs)
        self.data_init = bool(data_init)
        self.log_scale = bool(log_scale)
        self._init_center = None  # set only by `data_dependent_init`
        self._init_synchronized = False  # all-reduce init statistics (tf.distribute)
        # Calls so far in an eager init pass, whose statistics are checked; None otherwise.
        self._init_calls = None

    def build(self, input_shape=None):
        super().build(input_shape)
        self._built_input_shape = None if input_shape is None else tuple(input_shape)
        self.input_spec = self.layer.input_spec
        self._channel_axis = channel_axis(self.layer)
        kernel_shape = tuple(self.layer.kernel.shape)
        rank = len(kernel_shape)
        out_axis = rank + kernel_output_axis(self.layer)
        self._norm_axes = tuple(a for a in range(rank) if a != out_axis)
        self._scale_shape = (kernel_shape[out_axis],) + (1,) * (rank - 1 - out_axis)
        self.g = self.add_weight(
            name="s" if self.log_scale else "g",
            shape=(kernel_shape[out_axis],),
            initializer=self._initial_scale,
            trainable=True,
            autocast=False,
        )
        self.initialized = self.add_weight(
            name="initialized",
            shape=(),
            dtype="bool",
            initializer="zeros",
            trainable=False,
            autocast=False,
        )

    def _initial_scale(self, shape, dtype=None):
        """`||v||` (or its log) per output feature, read from `v` when `g` is initialized.

        Read at initialization rather than captured at build: a build inside
        a traced function (a lazily built model) must not leak a tensor
        into the variable's initializer.
        """
        norm = ops.reshape(ops.sqrt(self._squared_norm()), shape)
        return ops.cast(ops.log(norm) if self.log_scale else norm, dtype)

    def _squared_norm(self):
        v = ops.cast(self.layer.kernel, "float32")
        squared = ops.sum(ops.square(v), axis=self._norm_axes, keepdims=True)
        return ops.maximum(squared, _SQUARED_NORM_FLOOR)

    def direction(self):
        """Unit-norm direction `v / ||v||`, float32, the kernel's shape."""
        return ops.cast(self.layer.kernel, "float32") * ops.rsqrt(self._squared_norm())

    @property
    def scale(self):
        """The norm `g` of each output feature's weights, float32, `(units,)`."""
        return ops.exp(self.g) if self.log_scale else ops.convert_to_tensor(self.g)

    @property
    def kernel(self):
        """The effective kernel `g * v / ||v||`, float32, the kernel's shape."""
        return self.direction() * ops.reshape(self.scale, self._scale_shape)

    def _linear(self, inputs, kernel, bias):
        layer = self.layer
        if isinstance(layer, keras.layers.Dense):
            outputs = ops.matmul(inputs, kernel)
        elif kernel_output_axis(layer) == -2:  # a transposed convolution
            outputs = ops.conv_transpose(
                inputs,
                kernel,
                strides=layer.strides,
                padding=layer.padding,
                output_padding=layer.output_padding,
                data_format=layer.data_format,
                dilation_rate=layer.dilation_rate,
            )
        else:
            padding = layer.padding
            if padding == "causal":
                inputs = ops.pad(inputs, self._causal_padding())
                padding = "valid"
            outputs = ops.conv(
                inputs,
                kernel,
                strides=layer.strides,
                padding=padding,
                data_format=layer.data_format,
                dilation_rate=layer.dilation_rate,
            )
        if bias is not None:
            outputs = outputs + self._per_channel(bias, ops.ndim(outputs))
        return outputs

    def _causal_padding(self):
        layer = self.layer
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        time_axis = 1 if layer.data_format == "channels_last" else 2
        padding = [[0, 0], [0, 0], [0, 0]]
        padding[time_axis] = [left, 0]
        return padding

    def _per_channel(self, vector, ndim):
        shape = [1] * ndim
        shape[self._channel_axis] = -1
        return ops.reshape(vector, shape)

    def _bias(self):
        return self.layer.bias if self.layer.use_bias else None

    def call(self, inputs):
        if self._init_center is not None:
            self._initialize(inputs, center=self._init_center)
        dtype = self.compute_dtype
        bias = self._bias()
        outputs = self._linear(
            ops.cast(inputs, dtype),
            ops.cast(self.kernel, dtype),
            None if bias is None else ops.cast(bias, dtype),
        )
        if self.layer.activation is not None:
            outputs = self.layer.activation(outputs)
        return outputs

    def _initialize(self, inputs, center):
        """Data-dependent init (paper section 3), only in `data_dependent_init`'s pass.

        Sets `g = 1 / std(t)` and, with `center`, `b = -mean(t) / std(t)`,
        from `t = x . v / ||v||` over every axis but the channel axis,
        all-reduced over `tf.distribute` replicas when `data_dependent_init`
        runs under a multi-replica strategy.
        """
        t = self._linear(ops.cast(inputs, "float32"), self.direction(), None)
        channel = self._channel_axis % ops.ndim(t)
        axes = [a for a in range(ops.ndim(t)) if a != channel]
        # Two passes (mean, then mean squared deviation), each all-reduced
        # if synchronized: E[t^2] - E[t]^2 would cancel in float32.
        mean = batch_mean(t, axes, self._init_synchronized, keepdims=True)
        variance = batch_mean(ops.square(t - mean), axes, self._init_synchronized)
        mean = ops.reshape(mean, ops.shape(variance))
        if self._init_calls is not None:
            values = 1
            for axis in axes:
                values *= ops.shape(t)[axis]
            self._check_init_call(mean, variance, values)
        inv_std = ops.rsqrt(variance + _INIT_EPSILON)
        self.g.assign(ops.log(inv_std) if self.log_scale else inv_std)
        bias = self._bias()
        if center and bias is not None:
            bias.assign(-mean * inv_std)
        self.initialized.assign(True)

    def _check_init_call(self, mean, variance, values):
        """A ValueError naming this layer for a second call, or a degenerate `t`.

        `values` is the number of values of `t` per output feature.
        """
        self._init_calls += 1
        if self._init_calls > 1:
            raise ValueError(
                f"data_dependent_init: {self.name} is called more than once in the model's "
                "forward pass (a shared layer, or inside TimeDistributed, which calls it once "
                "per time step), and its statistics would come from one call only; nothing "
                "was initialized. Pass data_init=False to that layer to initialize the rest."
            )
        if values < 2:
            raise ValueError(
                f"data_dependent_init: {self.name} needs at least 2 values per output feature "
                "of its pre-activation to take a standard deviation (examples times positions); "
                f"nothing was initialized. Received: {values} value per feature"
            )
        mean, variance = ops.convert_to_numpy(mean), ops.convert_to_numpy(variance)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(variance))):
            raise ValueError(
                f"data_dependent_init: the pre-activation of {self.name} on the init batch "
                "is not finite (NaN or inf in x_init, or from the layers before it); "
                f"nothing was initialized. Received: mean={mean.tolist()[:4]}..."
            )
        constant = variance <= _CONSTANT_VARIANCE * (1.0 + np.square(mean))
        if np.any(constant):
            raise ValueError(
                f"data_dependent_init: the pre-activation of {self.name} is constant over "
                f"the init batch for output features {np.flatnonzero(constant).tolist()[:8]} "
                "(a constant input or an all-zero kernel), so 1/std is undefined; "
                f"nothing was initialized. Received: variance={variance.tolist()[:4]}..."
            )

    def plain_layer(self):
        """The wrapped layer's type holding the constant kernel `g * v / ||v||`.

        The deployment form of this layer (as tensorflow-addons'
        `WeightNormalization.remove()` or torch's
        `remove_parametrizations`): a new layer built from the wrapped
        layer's config with `use_bias=True`, this wrapper's name and dtype
        float32, holding the kernel `g * v / ||v||` (computed in float32) and
        the wrapped layer's bias (zeros if it had none). Its output equals
        this layer's, float32 rounding aside.

        Returns:
            A new, built `Dense`, `Conv1D/2D/3D` or `Conv1D/2D/3DTranspose`
            (the wrapped layer's type) with float32 variables.

        Raises:
            ValueError: if the wrapper is not built.
        """
        if not self.built or self._built_input_shape is None:
            raise ValueError(
                "WeightNormalization.plain_layer needs a layer built on an input shape. "
                f"Received: built={self.built}"
            )
        kernel = np.asarray(ops.convert_to_numpy(self.kernel), "float32")
        units = kernel.shape[kernel_output_axis(self.layer)]
        bias = self._bias()
        bias = np.zeros(units, "float32") if bias is None else ops.convert_to_numpy(bias)
        config = self.layer.get_config()
        config.update(name=self.name, use_bias=True, dtype="float32")
        with dtype_policy("float32"):
            plain = type(self.layer).from_config(config)
            plain.build(self._built_input_shape)
        plain.set_weights([kernel, np.asarray(bias, "float32")])
        return plain

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = {"data_init": self.data_init, "log_scale": self.log_scale}
        return {**super().get_config(), **config}
