"""keras-norms: normalization layers and the papers' networks for Keras 3.

The layers (`keras_norms.layers`), `data_dependent_init`, `fold`,
`activation_moments`, `replace_normalization`, the norm registry and the builders
(`keras_norms.models`) need keras and numpy only and run on the
TensorFlow, JAX and PyTorch backends.
"""

from keras_norms import layers, models
from keras_norms.activation_moments import activation_moments, jacobian_factor
from keras_norms.data_init import data_dependent_init
from keras_norms.folding import fold
from keras_norms.norms import create_norm_layer, get_norm_layer
from keras_norms.precise_statistics import recompute_batch_statistics
from keras_norms.surgery import replace_normalization
from keras_norms.tensorflow_workaround import disable_dependency_optimization

disable_dependency_optimization()

__version__ = "0.1.0"

__all__ = [
    "activation_moments",
    "create_norm_layer",
    "data_dependent_init",
    "fold",
    "get_norm_layer",
    "jacobian_factor",
    "layers",
    "models",
    "recompute_batch_statistics",
    "replace_normalization",
]
