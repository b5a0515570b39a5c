"""Argument checks shared by the model builders."""


def check_builder_arguments(builder, input_shape, num_classes, norm, norms, min_size=1):
    """Validate a builder's common arguments; returns `input_shape` as a tuple.

    Raises:
        ValueError: naming `builder`, for a `norm` not in `norms`, an
            `input_shape` that is not three positive ints, a side below
            `min_size`, or a `num_classes` that is not a positive int.
    """
    input_shape = tuple(input_shape)
    if norm not in norms:
        raise ValueError(f"{builder} expects norm in {norms}. Received: norm={norm!r}")
    if len(input_shape) != 3 or any(not isinstance(s, int) or s <= 0 for s in input_shape):
        raise ValueError(
            f"{builder} expects input_shape=(height, width, channels) with positive "
            f"integers. Received: input_shape={input_shape}"
        )
    if min(input_shape[:2]) < min_size:
        raise ValueError(
            f"{builder} needs inputs of at least {min_size}x{min_size}. "
            f"Received: input_shape={input_shape}"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"{builder} expects a positive integer num_classes. "
            f"Received: num_classes={num_classes!r}"
        )
    return input_shape
