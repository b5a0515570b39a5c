"""The builder registry: one table that the CLI, recipes, tests and benchmarks read.

It imports without Keras: each entry names its build function as a
`"module:function"` path, imported on first use, so that a command line can
list the builders, their norms and recipes before any backend loads. Adding
a builder is its module in `keras_norms/models/networks/` and its entry in
`BUILDERS` below (plus its test; `keras_norms.models.<name>` follows); a
user's own builder is one `register_builder(...)` call.
"""

import dataclasses
import functools
import inspect
from typing import Callable, Union

from keras_norms.norms import NORMS, load


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Defaults the training CLI uses for one builder.

    Attributes:
        batch_size: examples per step.
        learning_rate: the initial learning rate.
        digits_image_size: side, in pixels, the offline digits are resized to.
        optimizer: a key of `keras_norms.training.recipes.OPTIMIZERS` ("sgd",
            "momentum" (0.9), "rmsprop", "adam").
        schedule: a key of `keras_norms.training.recipes.SCHEDULES`;
            `SCHEDULES[schedule](learning_rate, epochs, period=None)` returns
            each (0-based) epoch's learning rate.
        weight_decay: L2 coefficient of `add_weight_decay` (0: none).
    """

    batch_size: int
    learning_rate: float
    digits_image_size: int
    optimizer: str
    schedule: str
    weight_decay: float = 0.0


class _Lazy:
    """A function named by a `"module:function"` path, imported on its first call."""

    def __init__(self, path):
        self.path = path
        self.__name__ = path.partition(":")[2]

    @functools.cached_property
    def __wrapped__(self):  # inspect.signature follows it
        return load(self.path)

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self):
        return f"<builder {self.path}>"


@dataclasses.dataclass(frozen=True)
class Builder:
    """A registered model builder.

    Attributes:
        name: the builder's name, e.g. `"convpool_cnn_c"` (the CLI's `--model`).
        build: `build(input_shape, num_classes, norm, synchronized=False, **kwargs)`
            returning a functional `keras.Model` to logits; a callable, or a
            `"module:function"` path imported on the first call.
        norms: the `norm` names it accepts (keys of `keras_norms.norms.NORMS`),
            its default first.
        min_input_size: the smallest height and width it accepts, in pixels.
        recipe: its paper's training recipe (`Recipe`).
        data_normalizations: the named input normalizations its
            `data_normalization` argument takes, if it normalizes its input
            itself (NIN: `("global", "batch")`); empty for the others, which
            get per-channel standardization from the training CLI.
        application: whether it is a `keras.applications` network whose
            normalizations `keras_norms.replace_normalization` converts, not
            one of the papers' networks (`paper_builders()`: the ones the
            per-builder tests and benchmarks run, small enough to run all).
    """

    name: str
    build: Union[Callable, str]
    norms: tuple
    min_input_size: int
    recipe: Recipe
    data_normalizations: tuple = ()
    application: bool = False

    def __post_init__(self):
        if isinstance(self.build, str):
            object.__setattr__(self, "build", _Lazy(self.build))

    @property
    def default_norm(self):
        """The default `norm`: the first of `norms` (each builder's signature agrees)."""
        return self.norms[0]

    def takes(self, argument):
        """Whether `build` takes the keyword argument `argument` (e.g. `"width_multiplier"`)."""
        return argument in inspect.signature(self.build).parameters

    def small_input_shape(self, channels=1):
        """The smallest convenient test input, `(side, side, channels)`, side at least 8."""
        side = max(self.min_input_size, 8)
        return (side, side, channels)


_NETWORKS = "keras_norms.models.networks"
# A keras.applications network with a norm put in place of its BN by
# `replace_normalization`: any of its targets. Keras applications refuse
# inputs smaller than 32x32. Not one of the papers' networks: Adam 0.001 at
# batch 32, constant.
_APPLICATION = dict(
    norms=("bn",) + tuple(name for name, norm in NORMS.items() if norm.surgery),
    min_input_size=32,
    recipe=Recipe(
        batch_size=32,
        learning_rate=0.001,
        digits_image_size=32,
        optimizer="adam",
        schedule="constant",
    ),
    application=True,
)

BUILDERS = {
    builder.name: builder
    for builder in (
        Builder(
            name="all_cnn_c",
            build=f"{_NETWORKS}.all_cnn_c:all_cnn_c",
            norms=("dwck", "none", "bn", "dwck_weighted", "learned"),
            min_input_size=1,
            # Esposito & Ganaba, section 4: SGD at learning rates 0.001-0.1 over
            # batch sizes 16-256; 0.01 with momentum 0.9 at batch 64 here, the
            # learning rate halved as for NIN; 32x32 inputs, the table's stack sizes.
            recipe=Recipe(
                batch_size=64,
                learning_rate=0.01,
                digits_image_size=32,
                optimizer="momentum",
                schedule="halving",
            ),
        ),
        Builder(
            name="convpool_cnn_c",
            build=f"{_NETWORKS}.convpool_cnn_c:convpool_cnn_c",
            norms=("wn_mobn", "none", "wn", "mobn", "bn"),
            # Two 2x2 poolings then a valid 3x3 convolution: floor(floor(s/2)/2) >= 3.
            min_input_size=12,
            # Salimans & Kingma 2016, section 5.1: Adam, lr 0.003, batch 100,
            # constant for half the run, then linearly to zero.
            recipe=Recipe(
                batch_size=100,
                learning_rate=0.003,
                digits_image_size=16,
                optimizer="adam",
                schedule="constant_then_linear",
            ),
        ),
        Builder(
            name="nin",
            build=f"{_NETWORKS}.nin:nin",
            norms=("normprop", "bn", "none"),
            # The last 8x8 average pooling needs 8x8 maps: 29x29 inputs.
            min_input_size=29,
            # Arpit et al. 2016, sections 4.4 and 5: SGD with momentum 0.9, lr 0.05
            # at batch 50, weight decay 5e-4, no dropout; 32x32 inputs.
            recipe=Recipe(
                batch_size=50,
                learning_rate=0.05,
                digits_image_size=32,
                optimizer="momentum",
                schedule="halving",
                weight_decay=5e-4,
            ),
            # Section 4.1: global (per-pixel, over the training set) or batch data
            # normalization of the input.
            data_normalizations=("global", "batch"),
        ),
        Builder(
            name="plain_cnn",
            build=f"{_NETWORKS}.plain_cnn:plain_cnn",
            norms=("none", "bn"),
            # "same" padding and ceil-sized strided outputs: any side works.
            min_input_size=1,
            # See the module's docstring: He et al.'s SGD with momentum 0.9 at
            # 0.01, constant, batch 64, no weight decay; digits at 16x16.
            recipe=Recipe(
                batch_size=64,
                learning_rate=0.01,
                digits_image_size=16,
                optimizer="momentum",
                schedule="constant",
            ),
        ),
        Builder(
            name="resnet18",
            build=f"{_NETWORKS}.resnet18:resnet18",
            norms=("bn", "gn", "nc", "none"),
            min_input_size=1,
            # Kim et al. 2020 (arXiv:2005.05274), section 3.1: SGD without momentum
            # or weight decay at batch size 2 (micro-batch), 0.01 multiplied by 0.1
            # after every 30 of 50 epochs. Digits at 16x16 (the CIFAR stem).
            recipe=Recipe(
                batch_size=2,
                learning_rate=0.01,
                digits_image_size=16,
                optimizer="sgd",
                schedule="tenfold",
            ),
        ),
        *(
            Builder(name=name, build=f"{_NETWORKS}.applications:{name}", **_APPLICATION)
            for name in ("resnet50", "mobilenet_v2", "efficientnet_b0")
        ),
    )
}


def register_builder(builder):
    """Add `builder` (a `Builder`) to `BUILDERS`; returns its build function.

    Raises:
        ValueError: if a builder of that name is already registered, or a
            norm of `builder.norms` is not in `keras_norms.norms.NORMS`.
    """
    if builder.name in BUILDERS:
        raise ValueError(f"A builder named {builder.name!r} is already registered.")
    unknown = [norm for norm in builder.norms if norm not in NORMS]
    if unknown:
        raise ValueError(
            f"Builder {builder.name!r} names norms that keras_norms.norms.NORMS does not "
            f"have. Expected names in {sorted(NORMS)}. Received: {unknown}"
        )
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
