"""Every (builder, norm) pair of the papers' builders, with a small input for each.

The converted keras.applications builders have tests of their own
(`tests/test_surgery.py`).
"""

import keras

from keras_norms.graph import iter_layers
from keras_norms.models import BUILDERS, paper_builders

CASES = [(name, norm) for name in paper_builders() for norm in BUILDERS[name].norms]


def small_input_shape(builder):
    """The registry's small test input of `builder`, one channel."""
    return BUILDERS[builder].small_input_shape()


def build_small(builder, norm, num_classes=3, **kwargs):
    """`builder` with `norm` on its small input."""
    return BUILDERS[builder].build(small_input_shape(builder), num_classes, norm, **kwargs)


def takes_width_multiplier(builder):
    """Whether `builder`'s `build` takes a `width_multiplier`."""
    return BUILDERS[builder].takes("width_multiplier")


def build_narrow(builder, norm, num_classes=3):
    """`build_small` at a quarter of the paper's widths, where `builder` takes a multiplier."""
    kwargs = {"width_multiplier": 0.25} if takes_width_multiplier(builder) else {}
    return build_small(builder, norm, num_classes, **kwargs)


def switch_off_noise(model):
    """Turn dropout and Gaussian noise off (their draws differ per replica and run)."""
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
        elif isinstance(layer, keras.layers.GaussianNoise):
            layer.stddev = 0.0
