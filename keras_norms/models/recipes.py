"""Training recipes: optimizer, batch size and learning-rate schedule (the CLI's defaults).

Each builder declares its paper's recipe in its registry entry
(`keras_norms.models.registry`).
"""

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
    """Defaults the training CLI uses for one builder.

    `optimizer(learning_rate)` makes the optimizer; `schedule(learning_rate,
    epochs)` returns the learning rate of each (0-based) epoch; the offline
    digits are resized to `digits_image_size` squares.
    """

    batch_size: int
    learning_rate: float
    digits_image_size: int
    optimizer: Callable[[float], keras.optimizers.Optimizer]
    schedule: Callable[[float, int], Callable[[int], float]]
