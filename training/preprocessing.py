"""Preprocessing of the training inputs: augmentation and input standardization.

The names (`AUGMENTATIONS`, `STANDARDIZATIONS`) are data, and Keras is
imported where its preprocessing layers are made: the training command's
parser lists the names without loading Keras.
"""

import numpy as np

# Element-wise variance floor, as a fraction of the mean element variance.
ELEMENTWISE_VARIANCE_FLOOR = 0.01
# Training-time augmentations: NormProp's horizontal flips (arXiv:1603.01431,
# section 5.5) and Normalized Convolution's flips and shifts up to 10 % of the
# side (section 3.1).
AUGMENTATIONS = ("none", "flip", "flip_shift")
MAX_SHIFT = 0.1
# Input standardization: per channel (notes eq. 1.13-1.16) or per component (eq. 1.6).
STANDARDIZATIONS = ("channel", "component")


def augmenter(augment, seed=0):
    """Keras preprocessing layers for `augment` (one of AUGMENTATIONS), or None for "none".

    Raises:
        ValueError: for another name.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"Expected augment in {AUGMENTATIONS}. Received: augment={augment!r}")
    if augment == "none":
        return None
    import keras

    layers = [keras.layers.RandomFlip("horizontal", seed=seed)]
    if augment == "flip_shift":
        layers.append(keras.layers.RandomTranslation(MAX_SHIFT, MAX_SHIFT, seed=seed))
    return keras.Sequential(layers, name=f"augment_{augment}")


def standardizer(x_train, elementwise=False):
    """Keras `Normalization` adapted on the training images only.

    Per channel by default, `(x - mean_c) / sqrt(var_c)` with the statistics
    of the initialization-and-batch-normalization notes (eq. 1.13-1.16); with
    `elementwise`, per pixel and channel (NormProp's global data
    normalization, arXiv:1603.01431 section 4.1).
    """
    import keras

    if elementwise:
        return keras.layers.Normalization(
            axis=(1, 2, 3),
            mean=x_train.mean(axis=0),
            variance=elementwise_variance(x_train),
            name="global_data_normalization",
        )
    layer = keras.layers.Normalization(axis=-1, name="standardize")
    layer.adapt(x_train)
    return layer


def elementwise_variance(x_train, floor_fraction=ELEMENTWISE_VARIANCE_FLOOR):
    """Per-element variance, floored at a fraction of the mean variance.

    Pixels blank in every training image (the digits' margins) have zero
    variance; Keras would divide them by 1e-7 and turn any ink there at test
    time into huge inputs.
    """
    variance = x_train.var(axis=0)
    return np.maximum(variance, floor_fraction * variance.mean())
