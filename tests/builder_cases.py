"""Every (builder, norm) pair of the package, with a small input for each."""

import keras

from keras_norms.data_init import iter_layers
from keras_norms.models import BUILDERS, NORMS

# The smallest convenient input per builder (NIN needs 29, ConvPool-CNN-C 12).
SMALL_INPUT_SHAPE = {
    "all_cnn_c": (8, 8, 1),
    "convpool_cnn_c": (12, 12, 1),
    "nin": (29, 29, 1),
    "resnet18": (8, 8, 1),
}
CASES = [(builder, norm) for builder in sorted(BUILDERS) for norm in NORMS[builder]]


def build_small(builder, norm, num_classes=3, **kwargs):
    """`builder` with `norm` on its small input."""
    return BUILDERS[builder](SMALL_INPUT_SHAPE[builder], num_classes, norm, **kwargs)


def switch_off_noise(model):
    """Turn dropout and Gaussian noise off (their draws differ per replica and run)."""
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
        elif isinstance(layer, keras.layers.GaussianNoise):
            layer.stddev = 0.0
