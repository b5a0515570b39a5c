"""Argument checks and shape arithmetic shared by the convolution layers."""


def int_pair(value, name, layer):
    """`value` as a pair of positive ints, or a ValueError naming `layer`."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(
            f"{layer} expects `{name}` as a positive int or pair of ints. "
            f"Received: {name}={value!r}"
        )
    return pair


def conv_output_size(length, size, stride, padding, dilation=1):
    """Output length of a convolution along one axis (`None` stays `None`)."""
    if length is None:
        return None
    extent = (size - 1) * dilation + 1
    span = length if padding == "same" else length - extent + 1
    return -(-span // stride)


def conv_output_shape(input_shape, filters, kernel_size, strides, padding, spatial_axes,
                      channel_axis, dilation_rate=(1, 1)):
    """A 2D convolution's output shape: `conv_output_size` on each spatial axis, `filters` channels."""
    shape = list(input_shape)
    for axis, size, stride, dilation in zip(spatial_axes, kernel_size, strides, dilation_rate):
        shape[axis] = conv_output_size(shape[axis], size, stride, padding, dilation)
    shape[channel_axis] = filters
    return tuple(shape)
