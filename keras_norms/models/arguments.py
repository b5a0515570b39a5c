"""Argument checks shared by the model builders."""

import random

import keras
import numpy as np

from keras_norms.layers.arguments import is_integer
from keras_norms.models.registry import get_builder


def _shape_tuple(builder, input_shape):
    """`input_shape` as a tuple of three positive Python ints; ValueError naming `builder`."""
    try:
        shape = tuple(input_shape)
    except TypeError:  # None, a number
        shape = ()
    if len(shape) != 3 or any(not is_integer(s) or s <= 0 for s in shape):
        raise ValueError(
            f"{builder} expects input_shape=(height, width, channels) with positive "
            f"integers. Received: input_shape={input_shape!r}"
        )
    return tuple(int(s) for s in shape)


def check_builder_arguments(builder, input_shape, num_classes, norm):
    """Validate a builder's common arguments; returns `(input_shape, num_classes)` as Python ints.

    `builder` names a registered builder, whose registry entry gives the
    norms it takes and its smallest input side. Integers may be Python or
    numpy integers, as in Keras; booleans are refused.

    Raises:
        ValueError: naming `builder`, for a `norm` it does not take, an
            `input_shape` that is not three positive ints (`None` included),
            a side below its minimum, or a `num_classes` that is not a
            positive int.
    """
    entry = get_builder(builder)
    norms, min_size = entry.norms, entry.min_input_size
    if norm not in norms:
        raise ValueError(f"{builder} expects norm in {norms}. Received: norm={norm!r}")
    input_shape = _shape_tuple(builder, input_shape)
    if min(input_shape[:2]) < min_size:
        raise ValueError(
            f"{builder} needs inputs of at least {min_size}x{min_size}. "
            f"Received: input_shape={input_shape}"
        )
    if not is_integer(num_classes) or num_classes < 1:
        raise ValueError(
            f"{builder} expects a positive integer num_classes. "
            f"Received: num_classes={num_classes!r}"
        )
    return input_shape, int(num_classes)


def check_kernel_initializer(builder, kernel_initializer):
    """Validate a builder's `kernel_initializer`; returns a function giving each kernel's own.

    `kernel_initializer` is anything `keras.initializers.get` resolves to an
    initializer: a name (`"he_normal"`), a config dict, an `Initializer`
    class or instance, or a callable `(shape, dtype=None)`. It is resolved
    here once, so that a bad value fails before any layer is built, with
    Python's random state (which Keras' unseeded initializers draw their
    seeds from) restored after: a builder's default keeps its exact weights
    under `keras.utils.set_random_seed`.

    The returned function is called once per kernel and returns what that
    layer gets: a name, dict or class as given (each layer resolves its own
    initializer, as for Keras' defaults); an unseeded `Initializer` instance
    copied, since Keras gives every call of one unseeded instance the same
    seed, and so every kernel of one shape the same values; any other
    instance or callable as is (an integer-seeded instance starts every
    kernel of one shape equal, as in Keras; one seeded with a
    `keras.random.SeedGenerator` draws anew each time).

    Raises:
        ValueError: naming `builder`, for `None`, a tensor or array (one
            fixed value cannot fit every kernel's shape), or anything
            `keras.initializers.get` refuses.
    """
    message = (
        f"{builder} expects a kernel_initializer that keras.initializers.get accepts: "
        "a name such as 'he_normal', a config dict, or an Initializer class or instance. "
        f"Received: kernel_initializer={kernel_initializer!r}"
    )
    fixed_value = isinstance(kernel_initializer, (np.ndarray, np.generic))
    if kernel_initializer is None or fixed_value or keras.ops.is_tensor(kernel_initializer):
        raise ValueError(message)
    state = random.getstate()
    try:
        initializer = keras.initializers.get(kernel_initializer)
    except (ValueError, TypeError) as error:
        raise ValueError(message) from error
    finally:
        random.setstate(state)
    if not callable(initializer):  # a class that is no initializer, e.g. `int`
        raise ValueError(message)
    if isinstance(kernel_initializer, (str, dict, type)):
        return lambda: kernel_initializer
    if isinstance(initializer, keras.initializers.Initializer):
        config = initializer.get_config()
        if "seed" in config and config["seed"] is None:
            return lambda: type(initializer).from_config(config)
    return lambda: initializer


def check_width_multiplier(builder, width_multiplier):
    """Validate a builder's `width_multiplier`; returns `scale(filters)` for its layers.

    `scale(filters)` is `max(1, round(filters * width_multiplier))`: every
    hidden layer's filter count times the multiplier, as `alpha` in
    `keras.applications.MobileNet`. `1.0` (the default) keeps the paper's
    counts exactly; below 1 gives a narrower, cheaper network of the same
    depth and layout. The number of classes is never scaled.

    Raises:
        ValueError: naming `builder`, for a bool, a non-number, or a value
            that is not finite and positive.
    """
    number = isinstance(width_multiplier, (int, float, np.integer, np.floating))
    if isinstance(width_multiplier, bool) or not number or not 0 < width_multiplier < np.inf:
        raise ValueError(
            f"{builder} expects a positive, finite width_multiplier (1.0: the paper's "
            f"widths). Received: width_multiplier={width_multiplier!r}"
        )
    factor = float(width_multiplier)
    return lambda filters: max(1, round(filters * factor))
