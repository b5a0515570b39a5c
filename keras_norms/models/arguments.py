"""Argument checks shared by the model builders."""

from keras_norms.layers.arguments import is_integer


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


def check_builder_arguments(builder, input_shape, num_classes, norm, norms, min_size=1):
    """Validate a builder's common arguments; returns `(input_shape, num_classes)` as Python ints.

    Integers may be Python or numpy integers, as in Keras; booleans are refused.

    Raises:
        ValueError: naming `builder`, for a `norm` not in `norms`, an
            `input_shape` that is not three positive ints (`None` included),
            a side below `min_size`, or a `num_classes` that is not a
            positive int.
    """
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
