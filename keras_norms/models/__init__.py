"""Model builders for the papers' networks, and the builder registry.

Every module in this package but the registry's own is a builder that
registers itself on import; `BUILDERS` maps each name to its `Builder`
entry (norms, minimum input size, recipe) and each builder function is
available here by name, e.g. `keras_norms.models.convpool_cnn_c`.
"""

import importlib
import pkgutil

from keras_norms.models.registry import (
    BUILDERS,
    Builder,
    get_builder,
    paper_builders,
    register_builder,
)

_SUPPORT_MODULES = {"arguments", "recipes", "registry"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _SUPPORT_MODULES:
        importlib.import_module(f"{__name__}.{_module.name}")
globals().update({name: builder.build for name, builder in BUILDERS.items()})

__all__ = [
    "BUILDERS",
    "Builder",
    "get_builder",
    "paper_builders",
    "register_builder",
    *sorted(BUILDERS),
]
