"""The norm registry: every normalization keras-norms offers, by name, with what it needs.

One table (`NORMS`) names each normalization once; the builders (through
`keras_norms.models.blocks.conv_norm_act`), `replace_normalization`'s targets
and the training CLI's `--norm` read it, as timm's `get_norm_layer` /
`create_norm_layer` table. This module imports without Keras: the layers are
named as `"module:Class"` paths and imported when a layer is made.

| name | what it is |
|---|---|
| `"none"` | no normalization: the linear layer keeps its bias |
| `"bn"` | Keras `BatchNormalization` after the linear layer |
| `"mobn"` | `MeanOnlyBatchNormalization` after it (arXiv:1602.07868 section 4) |
| `"gn"` | Keras `GroupNormalization` after it, 32 groups or the most below that divide C |
| `"ln"` | Keras `LayerNormalization` after it |
| `"dwck"` | `DWCKNormalization` after it (arXiv:2102.09685 section 3, eq. 7) |
| `"dwck_weighted"` | the same with eq. 8's weighted variance |
| `"learned"` | `LearnedStatisticsNormalization` after it (arXiv:2102.09685 section 5) |
| `"wn"` | the linear layer wrapped in `WeightNormalization` (arXiv:1602.07868 eq. 2) |
| `"wn_mobn"` | weight-normalized linear layer without bias, then mean-only BN (section 4) |
| `"nc"` | `NormalizedConv2D` in place of the convolution (arXiv:2005.05274 eq. 2) |
| `"normprop"` | `NormPropConv2D` in place of the convolution (arXiv:1603.01431 eq. 9) |

Adding a norm is one entry here (and its layer in `keras_norms.layers`);
the builders that should offer it list its name in their registry entry.
"""

import dataclasses
import importlib
from typing import Callable, Optional

MAX_GROUPS = 32


def groups_for(channels):
    """32 groups, or the largest count below that divides `channels` (a positive int)."""
    return next(g for g in range(min(MAX_GROUPS, channels), 0, -1) if channels % g == 0)


def load(path):
    """The object a `"module:name"` path names, imported now (e.g. a layer class).

    Raises:
        ModuleNotFoundError: if the module does not exist.
        AttributeError: if the module has no such name.
    """
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclasses.dataclass(frozen=True)
class Norm:
    """A registered normalization.

    Attributes:
        name: the registry key: a builder's and the CLI's `norm`, surgery's target.
        layer: `"module:Class"` of the normalization layer that follows the
            linear layer, or None where there is none (`"none"`, `"wn"`,
            `"nc"`, `"normprop"`).
        options: fixed keyword arguments of `layer` (e.g. `weighted_variance`).
        batch_statistics: whether `layer` normalizes with batch statistics
            (and so takes `synchronized` and `momentum`, as Keras BN does).
        channel_arguments: `channel_arguments(channels)` gives `layer`'s
            arguments that depend on the channel count (GN's `groups`), or None.
        weight_normalized: whether the linear layer is wrapped in
            `WeightNormalization`.
        convolution: `"module:Class"` of a convolution that normalizes
            itself and takes `Conv2D`'s place, or None.
        layer_suffix: the suffix of the normalization layer's name in the
            builders (`conv1_mobn`); defaults to `name`.
        surgery: whether `replace_normalization` can put it in place of a
            batch normalization.
        batch_norm_arguments: the arguments of a replaced batch
            normalization that `layer` takes over (`replace_normalization`).
        backends: the Keras backends `layer` runs on; empty for every backend.
    """

    name: str
    layer: Optional[str] = None
    options: tuple = ()
    batch_statistics: bool = False
    channel_arguments: Optional[Callable] = None
    weight_normalized: bool = False
    convolution: Optional[str] = None
    layer_suffix: Optional[str] = None
    surgery: bool = True
    batch_norm_arguments: tuple = ()
    backends: tuple = ()

    @property
    def suffix(self):
        """The suffix of the normalization layer's name in the builders."""
        return self.layer_suffix or self.name

    @property
    def replaces_linear(self):
        """Whether the norm changes the linear layer itself (weight normalization, `nc`)."""
        return self.weight_normalized or self.convolution is not None


_LAYERS = "keras_norms.layers"
_BATCH_STATISTICS = ("axis", "momentum", "epsilon")
_MOBN = dict(
    layer=f"{_LAYERS}:MeanOnlyBatchNormalization",
    batch_statistics=True,
    batch_norm_arguments=("axis", "momentum"),
)
_DWCK = dict(
    layer=f"{_LAYERS}:DWCKNormalization",
    batch_statistics=True,
    batch_norm_arguments=_BATCH_STATISTICS,
)

NORMS = {
    norm.name: norm
    for norm in (
        Norm("none", surgery=False),
        Norm("bn", layer="keras.layers:BatchNormalization", batch_statistics=True, surgery=False),
        # Keras BN with statistics all-reduced over the replicas (tf.distribute), as
        # timm's / torch's convert_sync_batchnorm: surgery carries every weight over.
        # Keras implements it on TensorFlow only; under keras.distribution on JAX a BN's
        # statistics are the global batch's already.
        Norm(
            "sync_bn",
            layer="keras.layers:BatchNormalization",
            options=(("synchronized", True),),
            batch_statistics=True,
            batch_norm_arguments=("axis", "momentum", "epsilon", "center", "scale"),
            backends=("tensorflow",),
        ),
        Norm("mobn", **_MOBN),
        Norm(
            "gn",
            layer="keras.layers:GroupNormalization",
            channel_arguments=lambda channels: {"groups": groups_for(channels)},
            batch_norm_arguments=("axis", "epsilon"),
        ),
        Norm(
            "ln", layer="keras.layers:LayerNormalization", batch_norm_arguments=("axis", "epsilon")
        ),
        Norm("dwck", **_DWCK),
        Norm("dwck_weighted", options=(("weighted_variance", True),), **_DWCK),
        Norm(
            "learned",
            layer=f"{_LAYERS}:LearnedStatisticsNormalization",
            batch_statistics=True,
            batch_norm_arguments=_BATCH_STATISTICS,
        ),
        Norm("wn", weight_normalized=True),
        Norm("wn_mobn", weight_normalized=True, layer_suffix="mobn", **_MOBN),
        Norm("nc", convolution=f"{_LAYERS}:NormalizedConv2D"),
        Norm("normprop", convolution=f"{_LAYERS}:NormPropConv2D", surgery=False),
    )
}
# The norms that are one layer after the linear layer, as `create_norm_layer` makes them.
NORM_LAYERS = {
    name: norm
    for name, norm in NORMS.items()
    if norm.layer is not None and not norm.replaces_linear
}


def get_norm(norm):
    """The registered `Norm` called `norm`.

    Raises:
        ValueError: for an unknown name, listing the registered ones.
    """
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(
            f"Unknown normalization. Expected one of {sorted(NORMS)}. Received: norm={norm!r}"
        )
    return NORMS[norm]


def get_norm_layer(norm):
    """The registered `Norm` called `norm`, which must be one layer (a key of `NORM_LAYERS`).

    Raises:
        ValueError: for an unknown name, or a norm that is no layer of its
            own (`"none"`, `"wn"`, `"nc"`...), listing the layer norms.
    """
    if not isinstance(norm, str) or norm not in NORM_LAYERS:
        raise ValueError(
            f"Unknown normalization layer. Expected one of {sorted(NORM_LAYERS)}. "
            f"Received: norm={norm!r}"
        )
    return NORM_LAYERS[norm]


def normalization_layer(norm, channels, synchronized=False, **kwargs):
    """A new instance of the normalization layer of `norm` (a `Norm`), for `channels` channels.

    The norm's `options` and channel arguments, then `kwargs`; `synchronized`
    for batch-statistics layers only.

    Raises:
        ValueError: if `norm` has no normalization layer of its own
            (`norm.layer` is None: `"none"`, `"wn"`, `"nc"`, `"normprop"`),
            or from the layer, for arguments it refuses.
    """
    if norm.layer is None:
        raise ValueError(
            f"normalization_layer expects a norm with a normalization layer of its own "
            f"({sorted(NORM_LAYERS)} or wn_mobn). Received: norm={norm.name!r}"
        )
    check_backend(norm, "normalization_layer")
    arguments = dict(norm.options)
    if norm.channel_arguments is not None:
        arguments.update(norm.channel_arguments(channels))
    arguments.update(kwargs)
    if norm.batch_statistics:
        arguments["synchronized"] = synchronized or arguments.get("synchronized", False)
    return load(norm.layer)(**arguments)


def check_backend(norm, caller):
    """A ValueError naming `caller` if `norm`'s layer does not run on Keras' backend."""
    if norm.backends:
        import keras  # here: the registry itself loads without Keras

        backend = keras.backend.backend()
        if backend not in norm.backends:
            raise ValueError(
                f"{caller}: norm {norm.name!r} runs on the {' or '.join(norm.backends)} "
                f"backend only. Received: the {backend} backend"
            )


def create_norm_layer(norm, channels, synchronized=False, **kwargs):
    """A new normalization layer `norm` for `channels` feature maps.

    Args:
        norm: a key of `NORM_LAYERS`, e.g. `"mobn"`.
        channels: the number of feature maps (channels) it normalizes.
        synchronized: passed to batch-statistics norms (all-reduce over
            `tf.distribute` replicas); ignored by the others, which have no
            batch statistics.
        **kwargs: the layer's own arguments, e.g. `name`, `momentum`.

    Examples:

    >>> from keras_norms.norms import create_norm_layer
    >>> layer = create_norm_layer("gn", 48, name="gn1")
    >>> type(layer).__name__, layer.groups, layer.name
    ('GroupNormalization', 24, 'gn1')

    Raises:
        ValueError: for an unknown name or a norm that is no layer of its own.
    """
    return normalization_layer(get_norm_layer(norm), channels, synchronized, **kwargs)
