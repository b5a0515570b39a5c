"""The norm registry: a normalization's name maps to a layer factory.

As timm's `get_norm_layer` / `create_norm_layer`: builders (and anything
else that places a normalization after a linear layer) ask for a norm by
name instead of importing and configuring each class.

| name | layer |
|---|---|
| `"bn"` | Keras `BatchNormalization` |
| `"mobn"` | `MeanOnlyBatchNormalization` (arXiv:1602.07868 section 4) |
| `"dwck"` | `DWCKNormalization` (arXiv:2102.09685 section 3) |
| `"learned"` | `LearnedStatisticsNormalization` (arXiv:2102.09685 section 5) |
| `"gn"` | Keras `GroupNormalization`, 32 groups or the largest count below that divides C |
| `"ln"` | Keras `LayerNormalization` |
"""

import dataclasses
from typing import Callable

import keras

from keras_norms.layers import (
    DWCKNormalization,
    LearnedStatisticsNormalization,
    MeanOnlyBatchNormalization,
)

MAX_GROUPS = 32


def groups_for(channels):
    """32 groups, or the largest count below that divides `channels` (a positive int)."""
    return next(g for g in range(min(MAX_GROUPS, channels), 0, -1) if channels % g == 0)


@dataclasses.dataclass(frozen=True)
class NormLayer:
    """A registered normalization.

    Attributes:
        factory: `factory(channels, **kwargs)` returns a new layer for
            `channels` feature maps.
        batch_statistics: whether the layer normalizes with batch statistics
            (and so takes `synchronized` and `momentum`, as Keras BN does).
    """

    factory: Callable
    batch_statistics: bool


def _ignore_channels(layer_class):
    return lambda channels, **kwargs: layer_class(**kwargs)


NORM_LAYERS = {
    "bn": NormLayer(_ignore_channels(keras.layers.BatchNormalization), True),
    "mobn": NormLayer(_ignore_channels(MeanOnlyBatchNormalization), True),
    "dwck": NormLayer(_ignore_channels(DWCKNormalization), True),
    "learned": NormLayer(_ignore_channels(LearnedStatisticsNormalization), True),
    "gn": NormLayer(
        lambda channels, **kwargs: keras.layers.GroupNormalization(groups_for(channels), **kwargs),
        False,
    ),
    "ln": NormLayer(_ignore_channels(keras.layers.LayerNormalization), False),
}


def get_norm_layer(norm):
    """The registered `NormLayer` called `norm`.

    Raises:
        ValueError: for an unknown name, listing the registered ones.
    """
    if norm not in NORM_LAYERS:
        raise ValueError(
            f"Unknown normalization. Expected one of {sorted(NORM_LAYERS)}. Received: norm={norm!r}"
        )
    return NORM_LAYERS[norm]


def create_norm_layer(norm, channels, synchronized=False, **kwargs):
    """A new normalization layer `norm` for `channels` feature maps.

    Args:
        norm: a key of `NORM_LAYERS`, e.g. `"mobn"`.
        channels: the number of feature maps (channels) it normalizes.
        synchronized: passed to batch-statistics norms (all-reduce over
            `tf.distribute` replicas); ignored by the others, which have no
            batch statistics.
        **kwargs: the layer's own arguments, e.g. `name`, `momentum`.

    Example:

    >>> from keras_norms.norms import create_norm_layer
    >>> layer = create_norm_layer("gn", 48, name="gn1")
    >>> type(layer).__name__, layer.groups, layer.name
    ('GroupNormalization', 24, 'gn1')

    Raises:
        ValueError: for an unknown name.
    """
    entry = get_norm_layer(norm)
    if entry.batch_statistics:
        kwargs["synchronized"] = synchronized
    return entry.factory(channels, **kwargs)
