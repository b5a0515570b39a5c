"""Deprecated: the optimizers and schedules live in `keras_norms.training.recipes`, `Recipe`
in `keras_norms.models.registry`. This alias goes in the next release."""

import functools
import warnings

from keras_norms.models.registry import Recipe  # noqa: F401
from keras_norms.training.recipes import OPTIMIZERS as _OPTIMIZER_CONFIGS
from keras_norms.training.recipes import (  # noqa: F401
    SCHEDULES,
    add_weight_decay,
    constant,
    constant_then_linear,
    halving,
    step_decay,
    tenfold,
)
from keras_norms.training.recipes import make_optimizer as _make_optimizer

# As this module gave them: name -> `optimizer(learning_rate)`.
OPTIMIZERS = {name: functools.partial(_make_optimizer, name) for name in _OPTIMIZER_CONFIGS}

warnings.warn(
    "keras_norms.models.recipes is deprecated: use keras_norms.training.recipes (optimizers, "
    "schedules, add_weight_decay) and keras_norms.models.registry.Recipe.",
    DeprecationWarning,
    stacklevel=2,
)
