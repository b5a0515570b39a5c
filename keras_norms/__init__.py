"""keras-norms: normalization layers and the papers' networks for Keras 3.

The layers (`keras_norms.layers`), `data_dependent_init`, `fold`,
`activation_moments`, `replace_normalization`, the norm registry and the builders
(`keras_norms.models`) need keras and numpy only and run on the
TensorFlow, JAX and PyTorch backends.

Importing `keras_norms` loads nothing else: each name below is imported on
first use (PEP 562), so that the registries (`keras_norms.norms`,
`keras_norms.models.registry`) and a command line's help load without Keras.
`keras_norms.layers`, which every model of ours and every function here
imports, applies the TensorFlow workaround
(`keras_norms.tensorflow_workaround`) when it loads.
"""

import importlib

__version__ = "0.1.0"

# Each public name, and the module that defines it.
_EXPORTS = {
    "activation_moments": "keras_norms.gaussian_moments",
    "create_norm_layer": "keras_norms.norms",
    "data_dependent_init": "keras_norms.data_init",
    "fold": "keras_norms.folding",
    "get_norm_layer": "keras_norms.norms",
    "jacobian_factor": "keras_norms.gaussian_moments",
    "recompute_batch_statistics": "keras_norms.precise_statistics",
    "replace_normalization": "keras_norms.surgery",
}
_SUBMODULES = ("callbacks", "layers", "models")

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
