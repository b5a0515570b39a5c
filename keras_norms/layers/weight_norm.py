"""Weight normalization (Salimans & Kingma 2016, arXiv:1602.07868) as a Keras 3 wrapper."""

import contextlib
import types
import warnings
import weakref

import keras
import numpy as np
from keras import ops

from keras_norms.layers.arguments import check_bool, check_names, is_integer
from keras_norms.layers.kernels import (
    is_known,
    is_recurrent,
    kernel_owner,
    kernel_variables,
    output_axes,
    output_kernel,
)
from keras_norms.layers.linear import NormalizedLinear
from keras_norms.policies import dtype_policy

# Floor on the squared norm of v, so that an all-zero direction gives a zero
# kernel instead of NaN (the same floor as `tf.nn.l2_normalize`).
_SQUARED_NORM_FLOOR = 1e-12
# Added to the variance of the init batch's pre-activation before the square
# root, as in Salimans & Kingma's reference code.
_INIT_EPSILON = 1e-10
# The observers of the init passes in progress (`observe_calls`), innermost
# last. A list, not a context variable: tf.distribute traces each replica's
# call in a thread of its own.
_OBSERVERS = []
# Every WeightNormalization alive: data-dependent init looks for those a model runs
# without tracking them.
_LAYERS = weakref.WeakSet()


def _value_outside_traces(variable):
    """`variable`'s value as a Python bool, read outside any trace being built; None where
    it cannot be read (inside a JAX trace, which holds a tracer in its place; a variable
    created inside the `tf.function` being traced, which has no value outside it yet)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.init_scope():  # the eager context, also while a tf.function is traced
            value = np.asarray(ops.convert_to_numpy(variable.value))
        return bool(value) if value.size == 1 else None
    value = variable.value
    if keras.backend.backend() == "jax":
        import jax

        if isinstance(value, jax.core.Tracer):
            return None
    return bool(ops.convert_to_numpy(value))


def live_layers():
    """Every `WeightNormalization` layer that exists now (a list, in no particular order)."""
    return list(_LAYERS)


@contextlib.contextmanager
def observe_calls(observer):
    """Within the block, every `WeightNormalization` call reports itself to `observer`.

    The protocol of data-dependent initialization
    (`keras_norms.data_dependent_init`, Salimans & Kingma 2016,
    arXiv:1602.07868, section 3): at the start of each call of a layer that
    is not folded in place, before its output is computed,
    `observer(layer, inputs, *args, **kwargs)` is called with the call's
    arguments, so that an observer can measure `layer.pre_activation(...)`
    and set `g` with `layer.initialize_from_moments(...)`, and the call's
    output already uses them. Every layer that runs is reported, also one
    that the model's layer tree does not hold, and one called inside a
    traced function (then with symbolic inputs). Nested blocks report to
    the innermost observer only.

    Args:
        observer: a callable `(layer, inputs, *args, **kwargs)`; what it
            returns is ignored.

    Yields:
        `None`.
    """
    _OBSERVERS.append(observer)
    try:
        yield
    finally:
        _OBSERVERS.remove(observer)


def _check_wrappable(layer, kernel_names):
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "WeightNormalization expects a Keras layer to wrap. "
            f"Received: layer={layer!r} of type {type(layer).__name__}"
        )
    if isinstance(kernel_owner(layer), NormalizedLinear):
        raise ValueError(
            "WeightNormalization cannot wrap a layer that already normalizes its kernel or "
            f"its inputs. Received: layer={layer.name} of type {type(layer).__name__}"
        )
    if kernel_names is None and not is_known(layer):
        raise ValueError(
            "WeightNormalization wraps Dense, EinsumDense, Conv1D/2D/3D, "
            "Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D, Embedding, "
            "SimpleRNN/LSTM/GRU and their cells; for any other layer with a kernel, name "
            "its kernel variables with kernel_names=(...). "
            f"Received: layer={layer.name} of type {type(layer).__name__}"
        )
    if is_recurrent(layer) and not isinstance(layer, keras.layers.RNN):  # a cell
        if getattr(layer, "dropout", 0) or getattr(layer, "recurrent_dropout", 0):
            raise ValueError(
                "WeightNormalization cannot wrap a recurrent cell with dropout (the RNN "
                "layer resets a cell's dropout masks only when it holds the cell itself); "
                "wrap the RNN layer instead, e.g. WeightNormalization(keras.layers.LSTM(...)). "
                f"Received: layer={layer.name} with dropout={layer.dropout}, "
                f"recurrent_dropout={layer.recurrent_dropout}"
            )


def _check_axis(axis):
    if axis is None or axis == "output":
        return axis
    axes = (axis,) if is_integer(axis) else axis
    if not isinstance(axes, (tuple, list)) or not all(is_integer(a) for a in axes):
        raise TypeError(
            'WeightNormalization expects axis to be "output", None, an int or a tuple of '
            f"ints. Received: axis={axis!r}"
        )
    return tuple(int(a) for a in axes)


def _is_shape(shape):
    """Whether `shape` is one input's shape (ints and `None`), not several or none."""
    return isinstance(shape, (tuple, list)) and all(d is None or is_integer(d) for d in shape)


def _shape_text(shape):
    return tuple(shape) if _is_shape(shape) else repr(shape)


def _check_initializer(scale_init):
    """`scale_init` as a Keras initializer (a name, a config dict or an instance)."""
    try:
        return keras.initializers.get(scale_init)
    except (ValueError, TypeError):
        raise ValueError(
            "WeightNormalization expects scale_init to be a Keras initializer (a name such as "
            f"'ones', a config or an instance). Received: scale_init={scale_init!r}"
        ) from None


def _data_init_defined(layer, axis, kernel_names):
    return (
        not is_recurrent(layer)
        and axis == "output"
        and (kernel_names is None or len(kernel_names) == 1)
    )


@keras.saving.register_keras_serializable(package="keras_norms")
class WeightNormalization(keras.layers.Wrapper):
    """Weight normalization wrapper: each kernel `w` of the wrapped layer is `g * v / ||v||`.

    Reparameterizes the kernels of the wrapped layer so that their norms `g`
    and directions `v / ||v||` are learned separately (Salimans & Kingma
    2016, eq. 2). By default (`axis="output"`) the norm is the paper's: one
    per output feature, over every other kernel axis: the input axis of a
    `Dense` kernel `(in, units)`, the spatial and input axes of a
    convolution kernel `(*kernel_size, in / groups, filters)` or of a
    transposed-convolution kernel `(*kernel_size, filters, in)`, the spatial
    axes of a depthwise kernel `(*kernel_size, in, multiplier)`
    (`keras_norms.layers.kernels` lists every layer type). Gradients reach
    both `g` and `v` (paper eq. 3).

    Any layer with a kernel can be wrapped: `Dense`, `EinsumDense`,
    `Conv1D/2D/3D` (grouped too), `Conv1D/2D/3DTranspose`,
    `DepthwiseConv1D/2D`, `SeparableConv1D/2D` (both kernels), `Embedding`,
    `SimpleRNN`/`LSTM`/`GRU` (kernel and recurrent kernel) and their cells
    (inside `keras.layers.RNN`; for a bidirectional one,
    `Bidirectional(RNN(WeightNormalization(LSTMCell(n))))`, since
    `Bidirectional` rebuilds the layer it holds), and a user layer whose kernel variables are
    named by `kernel_names`. Each kernel gets its own `g`. The wrapped
    layer keeps `v` as its own kernel variables, its bias, activation and
    everything else; this wrapper runs the wrapped layer's own call with
    its kernel variables read as `g * v / ||v||` (a `keras.StatelessScope`),
    and passes on the updates of any other state (e.g. dropout seeds).
    With `log_scale=True` the trainable variables are `s` with `g = exp(s)`
    (paper section 2).

    Data-dependent initialization (paper section 3) is done once for a
    whole model by `keras_norms.data_dependent_init(model, x_init)`, which
    sets `g = 1 / std(t)` and `b = -mean(t) / std(t)` from the init batch's
    pre-activation `t`: the wrapped layer's output without bias and
    activation, with its output kernel (a separable convolution's pointwise
    kernel) at `v / ||v||`. It is defined for feed-forward layers with the
    per-output-feature norm only. Until then (and always with
    `data_init=False`), `g` starts at `||v||`, so wrapping leaves the wrapped
    layer's output unchanged. The non-trainable boolean `initialized`
    records that initialization happened; it is saved with the model, so a
    reloaded model is never initialized again. `call` holds no
    initialization logic: during an init pass it reports itself to the
    pass (`observe_calls`), which measures `pre_activation` and calls
    `initialize_from_moments`.

    For deployment, `plain_layer()` returns the wrapped layer's type holding
    the constant kernels `g * v / ||v||` (as tensorflow-addons' `remove()` or
    torch's `remove_parametrizations`).

    Variables are float32; `g` is read with `autocast=False` (Keras
    `BatchNormalization`'s convention), and under a mixed-precision policy
    the kernels' norms and `g * v / ||v||` are computed in float32; the
    wrapped layer reads them in its compute dtype, as its own kernels. `v`
    is read as the wrapped layer reads its kernel (in the compute dtype with
    Keras' default `autocast=True`) before its norm is taken in float32.

    Args:
        layer: the layer to wrap (see above); not one that normalizes its
            kernel or inputs itself (`NormPropConv2D`, `NormalizedConv2D`).
        data_init: whether `keras_norms.data_dependent_init` initializes this
            layer from data. Defaults to `True` where data-dependent
            initialization is defined (a feed-forward layer with
            `axis="output"` and one output kernel), else `False`.
        log_scale: if `True`, learn `s = log(g)` instead of `g`.
            Defaults to `False`.
        axis: the kernel axes that keep their own `g`; the norm is taken
            over the others. `"output"` (default): the output features of
            each kernel (the paper). `None`: one norm for the whole kernel.
            An int or a tuple of ints: those axes of every kernel, e.g.
            `axis=-1` on a `Conv1DTranspose` for torch's default `dim=0`
            (per input channel), or `axis=0` on a `Conv1D` for
            wav2vec2's `dim=2` (per kernel position).
        kernel_names: the names (`variable.name`) of the kernel variables
            to normalize. Defaults to those of `keras_norms.layers.kernels`;
            needed for a user layer, whose output features are taken to lie
            along the kernels' last axis.
        use_scale: if `False`, no `g` is learned: the kernel is the
            direction `v / ||v||` alone (flax's `WeightNorm(use_scale=False)`);
            then `data_init` is `False` and `log_scale`, `scale_init` are
            refused. Defaults to `True`.
        scale_init: a Keras initializer (name, config or instance) for `g`
            (for `s` with `log_scale`), e.g. `"ones"` as flax's default;
            `None` (default): `g = ||v||`, so wrapping leaves the wrapped
            layer's output unchanged (the paper, tensorflow-addons, torch).
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Raises:
        TypeError: if `layer` is not a Keras layer, `axis` is not
            `"output"`, `None`, an int or a tuple of ints, or `data_init`
            (other than `None`), `log_scale` or `use_scale` is not a bool, or
            `kernel_names` is not `None`, a string or a list of strings.
            At call, for an integer or bool input that the wrapped layer's own
            call fails on, as it does unwrapped (Keras' convolutions on the
            TensorFlow and PyTorch backends): cast the input to float.
        ValueError: if `layer` is not a supported type and no `kernel_names`
            is given; if it normalizes its own kernel; if it is a recurrent
            cell with dropout (wrap the RNN layer); if `data_init=True`
            where data-dependent initialization is not defined; if
            `use_scale=False` comes with `log_scale`, `scale_init` or
            `data_init=True`, or `scale_init` is no initializer; at build,
            for an input whose rank the wrapped layer's `input_spec`
            refuses, or that the wrapped layer's build refuses (its message
            inside), or if a kernel named is missing or an axis is out of
            range.

    Call arguments:
        inputs: the wrapped layer's input, e.g. `(batch, ..., in)` for
            `Dense` or `(batch, H, W, C)` for `Conv2D` (channels last).
        *args, training, **kwargs: passed on to the wrapped layer (e.g.
            an RNN cell's `states`). As with tensorflow-addons' wrapper, a
            Keras mask is not passed on by itself: pass `mask=` explicitly.

    Input shape:
        Whatever the wrapped layer accepts.

    Output shape:
        The wrapped layer's output, in the layer's compute dtype.

    Examples:

    >>> import numpy as np, keras, keras_norms
    >>> wn = keras_norms.layers.WeightNormalization(keras.layers.Dense(4))
    >>> y = wn(np.ones((2, 3), "float32"))
    >>> tuple(y.shape), tuple(wn.g.shape)
    ((2, 4), (4,))
    >>> lstm = keras_norms.layers.WeightNormalization(keras.layers.LSTM(3))
    >>> _ = lstm(np.ones((2, 5, 4), "float32"))
    >>> {name: tuple(g.shape) for name, g in lstm.scales.items()}
    {'kernel': (12,), 'recurrent_kernel': (12,)}

    Reference:
        Salimans & Kingma, "Weight Normalization: A Simple Reparameterization
        to Accelerate Training of Deep Neural Networks", NeurIPS 2016
        (arXiv:1602.07868), eq. 2-3 and section 3.
    """

    def __init__(
        self,
        layer,
        data_init=None,
        log_scale=False,
        axis="output",
        kernel_names=None,
        use_scale=True,
        scale_init=None,
        **kwargs,
    ):
        kernel_names = check_names(self, "kernel_names", kernel_names, "variable names")
        _check_wrappable(layer, kernel_names)
        super().__init__(layer, **kwargs)
        self.axis = _check_axis(axis)
        self.kernel_names = kernel_names
        self.log_scale = check_bool(self, "log_scale", log_scale)
        self.use_scale = check_bool(self, "use_scale", use_scale)
        self.scale_init = None if scale_init is None else _check_initializer(scale_init)
        if not self.use_scale and (self.log_scale or scale_init is not None or data_init):
            raise ValueError(
                "WeightNormalization with use_scale=False learns no g (w = v / ||v||), so it "
                "takes no log_scale, scale_init or data_init=True. Received: "
                f"log_scale={log_scale!r}, scale_init={scale_init!r}, data_init={data_init!r}"
            )
        if data_init is not None:
            data_init = check_bool(self, "data_init", data_init)
        defined = self.use_scale and _data_init_defined(layer, self.axis, kernel_names)
        if data_init and not defined:
            raise ValueError(
                "WeightNormalization: data-dependent initialization (Salimans & Kingma, "
                "section 3) is defined for a feed-forward layer with one output kernel and "
                f'axis="output"; pass data_init=False. Received: layer={layer.name} of type '
                f"{type(layer).__name__}, axis={axis!r}, data_init={data_init!r}"
            )
        self.data_init = defined if data_init is None else data_init
        self._folded = False  # set by `fold_in_place`
        self._known_initialized = None  # see `build`
        self._warned_uninitialized = False
        _LAYERS.add(self)

    def build(self, input_shape=None):
        self._check_input_rank(input_shape)
        try:
            super().build(input_shape)
        except ValueError as error:
            raise ValueError(
                f"WeightNormalization could not build the wrapped layer {self._wrapped()} on "
                f"its input: {error} Received: input_shape={_shape_text(input_shape)}"
            ) from error
        self._built_input_shape = None if input_shape is None else tuple(input_shape)
        self.input_spec = self.layer.input_spec
        # A read-only mapping, not a dict: Keras would track the wrapped layer's
        # variables as this wrapper's own.
        self._kernels = types.MappingProxyType(kernel_variables(self.layer, self.kernel_names))
        self._norm_axes = {name: self._axes_to_norm(name) for name in self._kernels}
        self._scale_variables = (
            [self._add_scale(name) for name in self._kernels] if self.use_scale else []
        )
        self._output_kernel = output_kernel(list(self._kernels))
        self.g = self.scales.get(self._output_kernel)  # None with use_scale=False
        self.initialized = self.add_weight(
            name="initialized",
            shape=(),
            dtype="bool",
            initializer="zeros",
            trainable=False,
            autocast=False,
        )
        # What this layer knows of `initialized` where it cannot read it (a JAX trace):
        # False when built, True once initialized here, None (unknown) once loaded.
        self._known_initialized = False

    def _wrapped(self):
        return f"{self.layer.name} of type {type(self.layer).__name__}"

    def _check_input_rank(self, input_shape):
        """The rank the wrapped layer's `input_spec` asks for, checked first, naming this layer.

        As Keras checks a layer's `input_spec` before its build; the
        wrapper's own `input_spec` is the wrapped layer's only once built.
        """
        spec = self.layer.input_spec
        if isinstance(spec, (list, tuple)):
            spec = spec[0] if len(spec) == 1 else None
        if not isinstance(spec, keras.InputSpec) or not _is_shape(input_shape):
            return
        rank = len(input_shape)
        low, high = (
            (spec.ndim, spec.ndim) if spec.ndim is not None else (spec.min_ndim, spec.max_ndim)
        )
        if (low is None or rank >= low) and (high is None or rank <= high):
            return
        if low == high:
            expected = f"rank {low}"
        elif high is None:
            expected = f"rank {low} or more"
        elif low is None:
            expected = f"rank {high} or less"
        else:
            expected = f"rank {low} to {high}"
        raise ValueError(
            f"WeightNormalization expects an input of {expected} for the wrapped layer "
            f"{self._wrapped()} (its input_spec). Received: input_shape={tuple(input_shape)}"
        )

    @contextlib.contextmanager
    def _explaining_a_non_float_input(self, inputs):
        """Within the block, a wrapped call that fails on an integer input is a clear TypeError.

        The wrapped layer's own call runs as it would unwrapped: where it
        takes an integer input (`Dense`, RNNs; `Conv2D` on JAX), so does
        this layer; where it fails (Keras' convolutions on TensorFlow and
        PyTorch), the error names this layer and says what to do. An
        `Embedding`'s input is indices: its errors pass unchanged.
        """
        try:
            yield
        except Exception as error:
            dtype = getattr(inputs, "dtype", None)
            dtype = "float32" if dtype is None else keras.backend.standardize_dtype(dtype)
            if not dtype.startswith(("int", "uint", "bool")) or isinstance(
                kernel_owner(self.layer), keras.layers.Embedding
            ):
                raise
            raise TypeError(
                f"WeightNormalization expects a float input for the wrapped layer "
                f"{self._wrapped()}, whose call fails on this one (as it does unwrapped on the "
                f"{keras.backend.backend()} backend); cast the input to float first, e.g. "
                f'keras.ops.cast(x, "float32"). Received: dtype={dtype}'
            ) from error

    def _axes_to_norm(self, name):
        rank = len(self._kernels[name].shape)
        if self.axis == "output":
            kept = output_axes(self.layer, name)
        else:
            kept = () if self.axis is None else self.axis
        if any(not -rank <= a < rank for a in kept):
            raise ValueError(
                f"WeightNormalization {self.name}: axis out of range for {name} of rank {rank}. "
                f"Received: axis={self.axis!r}"
            )
        kept = {a % rank for a in kept}
        return tuple(a for a in range(rank) if a not in kept)

    def _add_scale(self, name):
        kernel_shape = self._kernels[name].shape
        shape = tuple(n for a, n in enumerate(kernel_shape) if a not in self._norm_axes[name])
        symbol = "s" if self.log_scale else "g"
        initializer = self.scale_init or (
            lambda shape, dtype=None: self._initial_scale(name, shape, dtype)
        )
        return self.add_weight(
            name=symbol if name == "kernel" else f"{name}_{symbol}",
            shape=shape,
            initializer=initializer,
            trainable=True,
            autocast=False,
        )

    def norm_axes(self, name=None):
        """The axes of kernel `name` (the output kernel by default) that its norm is taken over."""
        return self._norm_axes[self._output_kernel if name is None else name]

    @property
    def scales(self):
        """The `g` (or `s`) variable of each kernel, by kernel name, float32; empty with
        `use_scale=False`."""
        return dict(zip(self._kernels, self._scale_variables))

    def _initial_scale(self, name, shape, dtype=None):
        """`||v||` (or its log) of kernel `name`, read from `v` when `g` is initialized.

        Read at initialization rather than captured at build: a build inside
        a traced function (a lazily built model) must not leak a tensor
        into the variable's initializer.
        """
        v = ops.cast(self._kernels[name], "float32")
        norm = ops.reshape(ops.sqrt(self._squared_norm(v, name)), shape)
        return ops.cast(ops.log(norm) if self.log_scale else norm, dtype)

    def _squared_norm(self, v, name):
        """`||v||^2` of kernel `name`'s value `v` over its norm axes, floored, kept dims."""
        squared = ops.sum(ops.square(v), axis=self._norm_axes[name], keepdims=True)
        return ops.maximum(squared, _SQUARED_NORM_FLOOR)

    def direction(self, name=None):
        """Unit-norm direction `v / ||v||` of kernel `name` (the output kernel's by default).

        Float32, the kernel's shape.
        """
        return self._normalized(self._output_kernel if name is None else name)

    def _scale(self, name):
        if not self.use_scale:
            return None
        g = self.scales[name]
        return ops.exp(g) if self.log_scale else ops.convert_to_tensor(g)

    @property
    def scale(self):
        """The norm `g` of the output kernel, float32, its `g` variable's shape; `None` with
        `use_scale=False`."""
        return self._scale(self._output_kernel)

    def effective_kernel(self, name=None):
        """The kernel `g * v / ||v||` of kernel `name` (the output kernel's by default), float32."""
        name = self._output_kernel if name is None else name
        return self._normalized(name, self._scale(name))

    def _normalized(self, name, scale=None):
        """`scale * v / ||v||` of kernel `name` (`v / ||v||` without `scale`), float32.

        `v` is read once; the factor `scale / ||v||` is formed on the small
        per-feature tensor, then multiplies `v` once.
        """
        v = ops.cast(self._kernels[name], "float32")
        squared = self._squared_norm(v, name)
        factor = ops.rsqrt(squared)
        if scale is not None:
            factor = ops.reshape(scale, ops.shape(squared)) * factor
        return v * factor

    @property
    def kernel(self):
        """The effective output kernel `g * v / ||v||`, float32, the kernel's shape."""
        return self.effective_kernel()

    def _call_with_kernels(self, values, inputs, *args, **kwargs):
        """The wrapped layer's own call, with its variables in `values` (by id) read as given.

        Every other variable of the wrapped layer keeps its value, and what
        the call assigns to it (e.g. a dropout seed) is assigned after.
        """
        mapping = [(v, values.get(id(v), v.value)) for v in self.layer.variables]
        with self._explaining_a_non_float_input(inputs), keras.StatelessScope(mapping) as scope:
            before = [scope.get_current_value(v) for v, _ in mapping]
            outputs = self.layer(inputs, *args, **kwargs)
        for (variable, _), value in zip(mapping, before):
            updated = scope.get_current_value(variable)
            if updated is not value:
                variable.assign(updated)
        return outputs

    def _effective_kernels(self):
        return {id(v): self.effective_kernel(name) for name, v in self._kernels.items()}

    def call(self, inputs, *args, training=None, **kwargs):
        if training is not None:
            kwargs["training"] = training
        if self._folded:
            with self._explaining_a_non_float_input(inputs):
                return self.layer(inputs, *args, **kwargs)
        if _OBSERVERS:
            _OBSERVERS[-1](self, inputs, *args, **kwargs)
        elif training is True:
            self._warn_if_uninitialized(inputs)
        return self._call_with_kernels(self._effective_kernels(), inputs, *args, **kwargs)

    def pre_activation(self, inputs, *args, **kwargs):
        """`t`: the wrapped layer's output with no bias or activation, its output kernel `v/||v||`.

        What data-dependent initialization measures (Salimans & Kingma
        2016, arXiv:1602.07868, section 3: `t = v . x / ||v||`), before `g`
        and the bias: the init sets them so that the layer's output before
        its activation, `g * t + b`, has mean 0 and standard deviation 1 per
        feature on the init batch (`t` itself has standard deviation
        `1 / g` there). The wrapped layer's other kernels (a separable
        convolution's depthwise kernel) are at their effective values
        `g * v / ||v||`; its `activation` is set to `None` for this one call.

        Args:
            inputs, *args, **kwargs: as for `call`.

        Returns:
            A float32 tensor, the shape of the wrapped layer's output; its
            output features lie along
            `keras_norms.layers.kernels.output_feature_axes`.
        """
        values = {
            id(v): self.direction(name)
            if name == self._output_kernel
            else self.effective_kernel(name)
            for name, v in self._kernels.items()
        }
        bias = self._bias()
        if bias is not None:
            values[id(bias)] = ops.zeros(bias.shape, bias.dtype)
        activation = getattr(self.layer, "activation", None)
        if activation is not None:
            self.layer.activation = None
        try:
            t = self._call_with_kernels(values, inputs, *args, **kwargs)
        finally:
            if activation is not None:
                self.layer.activation = activation
        return ops.cast(t, "float32")

    def initialization_variables(self):
        """The variables `initialize_from_moments` writes: each `g`, the bias, `initialized`."""
        bias = self._bias()
        return self._scale_variables + ([] if bias is None else [bias]) + [self.initialized]

    def _bias(self):
        return getattr(self.layer, "bias", None) if getattr(self.layer, "use_bias", True) else None

    def initialize_from_moments(self, mean, variance, center=True):
        """Set `g` (and the bias) so that the pre-activation `t` has mean 0 and variance 1.

        Salimans & Kingma 2016 (arXiv:1602.07868), section 3:
        `g = 1 / sqrt(variance + 1e-10)` (`log` of it with `log_scale`)
        and, with `center` and a bias, `b = -mean / sqrt(variance + 1e-10)`;
        then `initialized` is set. `keras_norms.data_dependent_init` measures
        the moments of `pre_activation` and calls this.

        Args:
            mean: the pre-activation's mean per output feature, shape
                `(F,)` for the output kernel's `F` features (`g.shape`
                flattened), float.
            variance: its variance per output feature, shape `(F,)`, float.
            center: whether to set the bias too (`False` where a mean-only
                batch normalization after the layer owns the mean).
        """
        inv_std = ops.rsqrt(ops.cast(variance, "float32") + _INIT_EPSILON)
        scale = ops.log(inv_std) if self.log_scale else inv_std
        self.g.assign(ops.reshape(scale, self.g.shape))
        bias = self._bias()
        if center and bias is not None:
            mean = ops.cast(mean, "float32")
            bias.assign(ops.cast(ops.reshape(-mean * inv_std, bias.shape), bias.dtype))
        self.initialized.assign(True)
        self._known_initialized = True

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self._known_initialized = None  # `initialized` as saved: read at the next eager call

    def _warn_if_uninitialized(self, inputs):
        """Warn once when this layer trains before its data-dependent initialization.

        Python-side, at an eager call or when a training step is traced (no
        op is added to any graph): `initialized` is read outside the trace
        where the backend allows (TensorFlow's `init_scope`, an eager call);
        inside a JAX trace this layer's own record of it decides, and a
        loaded layer whose value cannot be read is not warned about.
        """
        if not self.data_init or self._warned_uninitialized or self._known_initialized:
            return
        if isinstance(keras.tree.flatten(inputs)[0], keras.KerasTensor):
            return  # a shape inference
        value = _value_outside_traces(self.initialized)
        if value is not None:
            self._known_initialized = value
        if self._known_initialized is False:
            self._warned_uninitialized = True
            warnings.warn(
                f"WeightNormalization {self.name!r} trains (training=True) before its "
                "data-dependent initialization: g = ||v||, so its pre-activations are not "
                "standardized as Salimans & Kingma's init makes them (arXiv:1602.07868, "
                "section 3). Call keras_norms.data_dependent_init(model, x_init) before fit, "
                "or pass keras_norms.callbacks.DataDependentInit(x_init) to fit; pass "
                "data_init=False to this layer to train from g = ||v|| without this warning.",
                stacklevel=2,
            )

    def plain_layer(self):
        """The wrapped layer's type holding the constant kernels `g * v / ||v||`.

        The deployment form of this layer (as tensorflow-addons'
        `WeightNormalization.remove()` or torch's
        `remove_parametrizations`): a new layer built from the wrapped
        layer's config, with this wrapper's name, dtype float32 and, where the
        config has `use_bias`, `use_bias=True` (so that a following affine
        map can be folded into it). It holds the kernels `g * v / ||v||`
        (computed in float32), the wrapped layer's other variables, and a
        zero bias if the wrapped layer had none. Its output equals this
        layer's, float32 rounding aside.

        Returns:
            A new, built layer of the wrapped layer's type with float32
            variables.

        Raises:
            ValueError: if the wrapper is not built on an input shape.
        """
        if not self.built or self._built_input_shape is None:
            raise ValueError(
                "WeightNormalization.plain_layer needs a layer built on an input shape. "
                f"Received: built={self.built}"
            )
        config = self.layer.get_config()
        config.update(name=self.name, dtype="float32")
        if "use_bias" in config:
            config["use_bias"] = True
        with dtype_policy("float32"):
            plain = type(self.layer).from_config(config)
            plain.build(self._built_input_shape)
        values = {v.name: v for v in self.layer.weights}
        values.update({name: self.effective_kernel(name) for name in self._kernels})
        plain.set_weights(
            [
                np.asarray(ops.convert_to_numpy(values[v.name]), "float32")
                if v.name in values
                else np.zeros(v.shape, "float32")
                for v in plain.weights
            ]
        )
        return plain

    def fold_in_place(self):
        """Write `g * v / ||v||` into the wrapped layer's kernels; calls then run it as is.

        The deployment form of this layer where `plain_layer()` cannot be
        swapped in (a layer inside a custom layer or a subclassed model):
        the kernels hold their effective values and `call` runs the wrapped
        layer without normalizing, so an exported graph computes what a
        plain layer computes. `g` no longer matters; do not train a folded
        layer. `unfold` restores it.

        Returns:
            The kernels' previous values (`v`), by name, as numpy arrays.
        """
        previous = {name: ops.convert_to_numpy(v) for name, v in self._kernels.items()}
        effective = {name: self.effective_kernel(name) for name in self._kernels}
        for name, variable in self._kernels.items():
            variable.assign(effective[name])
        self._folded = True
        return previous

    def unfold(self, previous):
        """Undo `fold_in_place`, given what it returned."""
        for name, value in previous.items():
            self._kernels[name].assign(value)
        self._folded = False

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return self.layer.compute_output_shape(input_shape, *args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    @property
    def state_size(self):
        """A wrapped recurrent cell's `state_size`, so that `keras.layers.RNN` can hold this."""
        return self.layer.state_size

    @property
    def output_size(self):
        """A wrapped recurrent cell's `output_size`."""
        return self.layer.output_size

    def get_initial_state(self, batch_size=None):
        """A wrapped recurrent cell's initial state."""
        return self.layer.get_initial_state(batch_size)

    def get_config(self):
        config = {
            "data_init": self.data_init,
            "log_scale": self.log_scale,
            "axis": list(self.axis) if isinstance(self.axis, tuple) else self.axis,
            "kernel_names": None if self.kernel_names is None else list(self.kernel_names),
            "use_scale": self.use_scale,
            "scale_init": None
            if self.scale_init is None
            else keras.initializers.serialize(self.scale_init),
        }
        return {**super().get_config(), **config}
