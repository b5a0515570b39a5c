"""Model builders for the papers' networks, and the builder registry.

Each builder function is available here by name, e.g.
`keras_norms.models.convpool_cnn_c`; its module is
`keras_norms.models.networks.convpool_cnn_c`. `BUILDERS` maps each name to
its `Builder` entry (norms, minimum input size, recipe). The registry loads
without Keras; a builder function is imported on first use (PEP 562).
"""

import inspect

from keras_norms.models.registry import (
    BUILDERS,
    Builder,
    Recipe,
    get_builder,
    paper_builders,
    register_builder,
)

__all__ = [
    "BUILDERS",
    "Builder",
    "Recipe",
    "get_builder",
    "paper_builders",
    "register_builder",
    *BUILDERS,  # each builder function, imported on first use
]


def __getattr__(name):
    if name in BUILDERS:  # the registered function, its module imported now
        return inspect.unwrap(BUILDERS[name].build)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
