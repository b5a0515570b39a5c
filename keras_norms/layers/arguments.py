"""Argument checks shared by the convolution layers."""


def int_pair(value, name, layer):
    """`value` as a pair of positive ints, or a ValueError naming `layer`."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(
            f"{layer} expects `{name}` as a positive int or pair of ints. "
            f"Received: {name}={value!r}"
        )
    return pair
