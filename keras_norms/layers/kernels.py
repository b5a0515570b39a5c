"""The kernels of Keras layers: which variables they are, and which axes hold output features.

Weight normalization reparameterizes a layer's kernel variables, whatever
the layer: the paper's norm (Salimans & Kingma 2016, arXiv:1602.07868,
eq. 2) is taken per output feature, over every other kernel axis. These
functions say, for each Keras layer type, which of its variables are
kernels, along which kernel axes its output features lie, and where those
features appear in its output.

| layer                                    | kernels (variable names)          | output axes   |
|------------------------------------------|-----------------------------------|---------------|
| Dense, Conv1D/2D/3D                      | kernel                            | -1            |
| Conv1D/2D/3DTranspose                    | kernel `(*k, filters, in)`        | -2            |
| EinsumDense                              | kernel                            | from equation |
| DepthwiseConv1D/2D                       | kernel `(*k, in, multiplier)`     | -2, -1        |
| SeparableConv1D/2D                       | depthwise_kernel, pointwise_kernel| (-2, -1), -1  |
| Embedding                                | embeddings `(vocab, dim)`         | -1            |
| SimpleRNN/LSTM/GRU and their cells       | kernel, recurrent_kernel          | -1, -1        |
| any other layer                          | the variables named by the caller | -1            |
"""

import keras

from keras_norms.layers.linear import LINEAR_LAYERS, channel_axis, kernel_output_axis

DEPTHWISE_LAYERS = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
SEPARABLE_LAYERS = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
RECURRENT_CELLS = (keras.layers.SimpleRNNCell, keras.layers.LSTMCell, keras.layers.GRUCell)
# The Keras layer types whose kernels are known without naming them.
KNOWN_LAYERS = (
    LINEAR_LAYERS
    + DEPTHWISE_LAYERS
    + SEPARABLE_LAYERS
    + RECURRENT_CELLS
    + (keras.layers.EinsumDense, keras.layers.Embedding)
)
# The names Keras gives the kernel variables of `KNOWN_LAYERS`.
KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings", "recurrent_kernel")


def kernel_owner(layer):
    """The layer that holds the kernel variables: an RNN layer's cell, else `layer`."""
    return layer.cell if isinstance(layer, keras.layers.RNN) else layer


def is_recurrent(layer):
    """Whether `layer` is an RNN layer or a recurrent cell (it has a `state_size`)."""
    return isinstance(layer, keras.layers.RNN) or hasattr(layer, "state_size")


def is_known(layer):
    """Whether the kernels of `layer` are known by its type (`KNOWN_LAYERS`, or an RNN of one)."""
    return isinstance(kernel_owner(layer), KNOWN_LAYERS)


def kernel_variables(layer, names=None):
    """The kernel variables of a built layer, by name, in the order of its weights.

    Args:
        layer: a built Keras layer.
        names: the names of the kernel variables (`variable.name`); by default
            those of `KERNEL_NAMES` that the layer has.

    Returns:
        A dict from variable name to variable.

    Raises:
        ValueError: if two of the layer's variables share a kernel name (a
            layer holding several sublayers: wrap those), or, with `names`,
            if one of them is missing.
    """
    wanted = KERNEL_NAMES if names is None else tuple(names)
    found = {}
    for variable in kernel_owner(layer).weights:
        if variable.name not in wanted:
            continue
        if variable.name in found:
            raise ValueError(
                f"Layer {layer.name} has several variables named {variable.name!r}, so which "
                "one is the kernel is ambiguous; wrap the sublayer that owns it instead. "
                f"Received: {found[variable.name].path} and {variable.path}"
            )
        found[variable.name] = variable
    missing = [name for name in wanted if name not in found] if names is not None else []
    if missing or not found:
        raise ValueError(
            f"Layer {layer.name} has no kernel variable named {missing or list(wanted)}. "
            f"Received: variables {[v.name for v in kernel_owner(layer).weights]}"
        )
    return found


def _einsum_kernel_letters(equation):
    inputs, output = equation.split("->")
    kernel = inputs.split(",")[1]
    if "." in kernel:
        raise ValueError(
            "Weight normalization needs an EinsumDense kernel without an ellipsis. "
            f"Received: equation={equation!r}"
        )
    return kernel, output


def output_axes(layer, name):
    """The kernel axes of the output features of kernel `name` of `layer`, negative.

    Returns:
        A tuple of negative axes, in the kernel's order: `(-1,)` for most
        kernels, `(-2,)` for a transposed convolution's, `(-2, -1)` for a
        depthwise kernel `(*k, in, multiplier)`, and for an `EinsumDense`
        the kernel axes whose letters appear in the equation's output.
    """
    owner = kernel_owner(layer)
    if isinstance(owner, keras.layers.EinsumDense):
        kernel, output = _einsum_kernel_letters(owner.equation)
        return tuple(i - len(kernel) for i, letter in enumerate(kernel) if letter in output)
    if isinstance(owner, DEPTHWISE_LAYERS) or name == "depthwise_kernel":
        return (-2, -1)
    if isinstance(owner, LINEAR_LAYERS):
        return (kernel_output_axis(owner),)
    return (-1,)


def output_kernel(names):
    """Of a layer's kernel names, the one whose output features are the layer's.

    The pointwise kernel of a separable convolution, else the first (the
    input kernel of a recurrent layer).
    """
    return "pointwise_kernel" if "pointwise_kernel" in names else names[0]


def output_feature_axes(layer, ndim):
    """The axes of the layer's output, of rank `ndim`, that index its output kernel's features.

    In the kernel's order: the channel axis (`1` for `channels_first`,
    else `-1`) or, for an `EinsumDense`, the output axes of the kernel's
    output letters. A depthwise convolution's channel axis holds its
    `in * multiplier` features in the kernel's row-major order.
    """
    owner = kernel_owner(layer)
    if isinstance(owner, keras.layers.EinsumDense):
        kernel, output = _einsum_kernel_letters(owner.equation)
        head, _, tail = output.rpartition("...") if "..." in output else ("", "", output)
        axes = []
        for letter in kernel:
            if letter in tail:
                axes.append(tail.index(letter) - len(tail) + ndim)
            elif letter in head:
                axes.append(head.index(letter))
        return tuple(axes)
    return (channel_axis(owner) % ndim,)
