"""Argument and input-shape checks shared by the layers, with one message format.

Each check takes the layer (or its class name), the argument's name and the
value received, and returns the value in its canonical Python type, or
raises a `TypeError` (wrong type: a string for a bool, a bool for an int) or
a `ValueError` (right type, value out of range) whose message names the
layer, says what was expected and ends with `Received: name=value`.
Python's `bool`, `int` and `float` and their numpy counterparts are
accepted; a bool is never taken for a number, nor a string for a bool.
"""

import math
import numbers

import numpy as np


def _layer_name(layer):
    return layer if isinstance(layer, str) else type(layer).__name__


def _received(name, value):
    return f"Received: {name}={value!r} of type {type(value).__name__}"


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def is_integer(value):
    """A Python or numpy integer, as Keras accepts them; never a bool."""
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def check_bool(layer, name, value):
    """`value` as a Python bool.

    Raises:
        TypeError: for anything but a bool (`"False"`, `0`, `None`).
    """
    if not _is_bool(value):
        raise TypeError(
            f"{_layer_name(layer)} expects `{name}` to be a bool. {_received(name, value)}"
        )
    return bool(value)


def check_positive_int(layer, name, value):
    """`value` as a Python int >= 1.

    Raises:
        TypeError: for a non-integer (a float, a string, a bool).
        ValueError: for an integer below 1.
    """
    if not is_integer(value):
        raise TypeError(
            f"{_layer_name(layer)} expects `{name}` to be a positive integer. "
            f"{_received(name, value)}"
        )
    if value < 1:
        raise ValueError(
            f"{_layer_name(layer)} expects `{name}` to be a positive integer. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_names(layer, name, value, what):
    """`None`, or `value` as a tuple of strings (one string is one name).

    `what` says what the names name, e.g. "layer names".

    Raises:
        TypeError: for anything but None, a string, or a non-empty list or tuple of strings.
    """
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else value
    if (
        not isinstance(names, (tuple, list))
        or not names
        or not all(isinstance(n, str) for n in names)
    ):
        raise TypeError(
            f"{_layer_name(layer)} expects {name} to be None or a non-empty list of {what}. "
            f"Received: {name}={value!r}"
        )
    return tuple(names)


def check_int_tuple(layer, name, value, length):
    """A positive int, or `length` of them, as a tuple of `length` Python ints.

    How Keras convolutions read `kernel_size`, `strides` and
    `dilation_rate`, with numpy integers accepted and bools refused.

    Raises:
        ValueError: for anything else (`3.0`, `None`, `(3,)` for a 2D
            layer, `True`, `0`).
    """
    values = (value,) * length if is_integer(value) else value
    try:
        values = tuple(values)
    except TypeError:
        values = ()
    if len(values) != length or not all(is_integer(v) and v >= 1 for v in values):
        raise ValueError(
            f"{_layer_name(layer)} expects `{name}` to be a positive integer or a tuple "
            f"of {length} positive integers. {_received(name, value)}"
        )
    return tuple(int(v) for v in values)


def check_choice(layer, name, value, choices, allow_none=False):
    """`value`, one of the strings `choices` in any case, lower-cased; or `None` if allowed.

    How Keras reads `padding` and `data_format`, whose own messages name
    neither the layer nor, for `None`, the argument (an `AttributeError`).

    Raises:
        ValueError: for anything else (another string, `None` where not
            allowed, a number, a tuple).
    """
    if value is None and allow_none:
        return None
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    options = ", ".join(repr(choice) for choice in choices)
    expected = f"None or one of {options}" if allow_none else f"one of {options}"
    raise ValueError(
        f"{_layer_name(layer)} expects `{name}` to be {expected}. Received: {name}={value!r}"
    )


DATA_FORMATS = ("channels_last", "channels_first")
# The padding strings of Keras' convolutions (without Conv1D's "causal").
PADDINGS = ("valid", "same")


def check_data_format(layer, value):
    """A convolution's `data_format`: `None` (the global default) or one of `DATA_FORMATS`.

    Raises:
        ValueError: as `check_choice`.
    """
    return check_choice(layer, "data_format", value, DATA_FORMATS, allow_none=True)


def check_float(layer, name, value, low, high, closed_low=True, closed_high=True, expected=None):
    """`value` as a Python float in the interval from `low` to `high`.

    `closed_low`/`closed_high` say whether the ends belong to it; an
    infinite `high` with `closed_high=False` refuses infinity, and NaN is
    refused always. `expected` describes the interval in messages
    (default: "a number in [low, high)").

    Raises:
        TypeError: for a non-number (a string, `None`, a bool).
        ValueError: for NaN or a number outside the interval.
    """
    if expected is None:
        opening, closing = "[" if closed_low else "(", "]" if closed_high else ")"
        expected = f"a number in {opening}{low:g}, {high:g}{closing}"
    message = f"{_layer_name(layer)} expects `{name}` to be {expected}."
    if not isinstance(value, numbers.Real) or _is_bool(value):
        raise TypeError(f"{message} {_received(name, value)}")
    number = float(value)
    above = number >= low if closed_low else number > low
    below = number <= high if closed_high else number < high
    if math.isnan(number) or not (above and below):
        raise ValueError(f"{message} Received: {name}={value!r}")
    return number


def check_epsilon(layer, value):
    """A positive, finite `epsilon` as a Python float (see `check_float`)."""
    return check_float(
        layer,
        "epsilon",
        value,
        0.0,
        math.inf,
        closed_low=False,
        closed_high=False,
        expected="a positive, finite number",
    )


def check_momentum(layer, value):
    """A running-average `momentum` in [0, 1) as a Python float.

    1 would freeze the running averages at their initial values, which
    inference then uses as if they had been estimated.
    """
    return check_float(layer, "momentum", value, 0.0, 1.0, closed_high=False)


def check_conv_arguments(layer, rank, filters, kernel_size, strides, dilation_rate):
    """The shape arguments of a `rank`-D Keras convolution, checked, as keyword arguments.

    Returns `{"filters": int, "kernel_size": tuple, "strides": tuple,
    "dilation_rate": tuple}` for the base class' constructor, so a subclass
    of a Keras convolution names itself in every message (Keras' own say
    neither the layer nor the type received).

    Raises:
        TypeError, ValueError: as `check_positive_int` and `check_int_tuple`.
    """
    return {
        "filters": check_positive_int(layer, "filters", filters),
        "kernel_size": check_int_tuple(layer, "kernel_size", kernel_size, rank),
        "strides": check_int_tuple(layer, "strides", strides, rank),
        "dilation_rate": check_int_tuple(layer, "dilation_rate", dilation_rate, rank),
    }


def check_image_input(layer, input_shape, channel_axis):
    """A rank-4 image `input_shape` with a known size on `channel_axis`, at build time.

    For convolution subclasses, which clear Keras' `input_spec` in their
    constructor so that this message (naming the layer) comes first.

    Raises:
        ValueError: for another rank or an unknown channel size.
    """
    if len(input_shape) != 4 or input_shape[channel_axis] is None:
        raise ValueError(
            f"{_layer_name(layer)} expects a rank-4 input with a known channel axis. "
            f"Received: input_shape={tuple(input_shape)}"
        )
