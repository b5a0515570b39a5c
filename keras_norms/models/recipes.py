"""Deprecated: the optimizers and schedules live in `keras_norms.training.recipes`, `Recipe`
in `keras_norms.models.registry`. This alias goes in the next release."""

import warnings

from keras_norms.models.registry import Recipe  # noqa: F401
from keras_norms.training.recipes import (  # noqa: F401
    OPTIMIZERS,
    SCHEDULES,
    add_weight_decay,
    constant,
    constant_then_linear,
    halving,
    step_decay,
    tenfold,
)

warnings.warn(
    "keras_norms.models.recipes is deprecated: use keras_norms.training.recipes (optimizers, "
    "schedules, add_weight_decay) and keras_norms.models.registry.Recipe.",
    DeprecationWarning,
    stacklevel=2,
)
