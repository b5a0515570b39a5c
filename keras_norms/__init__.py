"""keras-norms: normalization layers and the papers' networks for Keras 3."""

from keras_norms import layers, models
from keras_norms.activation_moments import activation_moments, jacobian_factor
from keras_norms.data_init import data_dependent_init

__version__ = "0.1.0"

__all__ = [
    "activation_moments",
    "data_dependent_init",
    "jacobian_factor",
    "layers",
    "models",
]
