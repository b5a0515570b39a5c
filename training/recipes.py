"""Each builder's training recipe, from its paper (the CLI's defaults)."""

import dataclasses
from typing import Callable

import keras


def constant_then_linear(base, epochs):
    """Constant for the first half of the epochs, then linear decay to zero.

    Epoch `e` (0-based) uses `base * min(1, 2 * (epochs - e) / epochs)`,
    the schedule of Salimans & Kingma's CIFAR-10 experiments (section 5.1).
    """
    return lambda epoch: base * min(1.0, 2.0 * (epochs - epoch) / epochs)


def halving(base, epochs, halvings=8):
    """Halved every `epochs / halvings` epochs (at least 1).

    The NormProp paper halves every 25 of 200 epochs (section 5.5): eight
    halvings, scaled here to the run's length.
    """
    period = max(1, round(epochs / halvings))
    return lambda epoch: base * 0.5 ** (epoch // period)


def constant(base, epochs):
    """The same learning rate for every epoch."""
    return lambda epoch: base


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Defaults the CLI uses for one builder."""

    batch_size: int
    learning_rate: float
    digits_image_size: int
    optimizer: Callable[[float], keras.optimizers.Optimizer]
    schedule: Callable[[float, int], Callable[[int], float]]
    # Whether the builder normalizes its input itself (`data_normalization`).
    owns_data_normalization: bool


RECIPES = {
    # Esposito & Ganaba, section 4: SGD at learning rates 0.001-0.1 over
    # batch sizes 16-256; 0.01 with momentum 0.9 at batch 64 here, the
    # learning rate halved as for NIN; 32x32 inputs, the table's stack sizes.
    "all_cnn_c": Recipe(
        batch_size=64,
        learning_rate=0.01,
        digits_image_size=32,
        optimizer=lambda lr: keras.optimizers.SGD(lr, momentum=0.9),
        schedule=halving,
        owns_data_normalization=False,
    ),
    # Salimans & Kingma 2016, section 5.1: Adam, lr 0.003, batch 100.
    "convpool_cnn_c": Recipe(
        batch_size=100,
        learning_rate=0.003,
        digits_image_size=16,
        optimizer=lambda lr: keras.optimizers.Adam(lr),
        schedule=constant_then_linear,
        owns_data_normalization=False,
    ),
    # Arpit et al. 2016, sections 4.4 and 5: SGD with momentum 0.9, lr 0.05
    # at batch 50, weight decay 5e-4, no dropout; 32x32 inputs.
    "nin": Recipe(
        batch_size=50,
        learning_rate=0.05,
        digits_image_size=32,
        optimizer=lambda lr: keras.optimizers.SGD(lr, momentum=0.9, weight_decay=5e-4),
        schedule=halving,
        owns_data_normalization=True,
    ),
    # Kim et al. 2020, section 3: SGD without momentum or weight decay at
    # batch size 2 (micro-batch); the paper gives no learning rate: 0.01,
    # constant. Digits at 16x16 (the CIFAR stem).
    "resnet18": Recipe(
        batch_size=2,
        learning_rate=0.01,
        digits_image_size=16,
        optimizer=lambda lr: keras.optimizers.SGD(lr),
        schedule=constant,
        owns_data_normalization=False,
    ),
}
