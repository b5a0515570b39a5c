"""The builder registry: one table that the CLI, recipes, tests and benchmarks read.

Each builder module registers itself with `register_builder(...)` when
`keras_norms.models` imports it, declaring its norms, the smallest input side
it accepts and its paper's training recipe. Adding a builder is one module in
`keras_norms/models/` (plus its test); nothing else lists builders.
"""

import dataclasses
import inspect
from typing import Callable

from keras_norms.models.recipes import Recipe


@dataclasses.dataclass(frozen=True)
class Builder:
    """A registered model builder.

    Attributes:
        name: the builder's name, e.g. `"convpool_cnn_c"` (the CLI's `--model`).
        build: `build(input_shape, num_classes, norm, synchronized=False, **kwargs)`
            returning a functional `keras.Model` to logits.
        norms: the `norm` names it accepts.
        min_input_size: the smallest height and width it accepts, in pixels.
        recipe: its paper's training recipe (`keras_norms.models.recipes.Recipe`).
        data_normalization: whether it normalizes its input itself and takes
            a `data_normalization` argument (NIN); others get per-channel
            standardization from the training CLI.
        application: whether it is a `keras.applications` network whose
            normalizations `keras_norms.replace_normalization` converts, not
            one of the papers' networks (`paper_builders()`: the ones the
            per-builder tests and benchmarks run, small enough to run all).
    """

    name: str
    build: Callable
    norms: tuple
    min_input_size: int
    recipe: Recipe
    data_normalization: bool = False
    application: bool = False

    @property
    def default_norm(self):
        """The default of `build`'s `norm` argument."""
        return inspect.signature(self.build).parameters["norm"].default

    def takes(self, argument):
        """Whether `build` takes the keyword argument `argument` (e.g. `"width_multiplier"`)."""
        return argument in inspect.signature(self.build).parameters

    def small_input_shape(self, channels=1):
        """The smallest convenient test input, `(side, side, channels)`, side at least 8."""
        side = max(self.min_input_size, 8)
        return (side, side, channels)


BUILDERS = {}


def register_builder(builder):
    """Add `builder` (a `Builder`) to `BUILDERS`; returns its build function.

    Raises:
        ValueError: if a builder of that name is already registered.
    """
    if builder.name in BUILDERS:
        raise ValueError(f"A builder named {builder.name!r} is already registered.")
    BUILDERS[builder.name] = builder
    return builder.build


def paper_builders():
    """The names of the registered builders of the papers' networks, sorted."""
    return sorted(name for name, builder in BUILDERS.items() if not builder.application)


def get_builder(name):
    """The registered `Builder` called `name`.

    Raises:
        ValueError: for an unknown name, listing the registered ones.
    """
    if name not in BUILDERS:
        raise ValueError(f"Unknown builder. Expected one of {sorted(BUILDERS)}. Received: {name!r}")
    return BUILDERS[name]
