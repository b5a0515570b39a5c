"""Keras applications with their batch normalization converted to another norm.

`resnet50`, `mobilenet_v2` and `efficientnet_b0` build the
`keras.applications` network (`weights=None`, logits) and, for any norm but
`"bn"`, pass it through `keras_norms.replace_normalization`: the training
CLI trains them like the papers' networks (`keras-norms-train --model
resnet50 --norm gn`).
"""

import keras

from keras_norms.models.arguments import check_builder_arguments
from keras_norms.models.registry import get_builder
from keras_norms.surgery import replace_normalization


def _builder(builder, application):
    def build(input_shape=(32, 32, 3), num_classes=10, norm="bn", name=None, synchronized=False):
        input_shape, num_classes = check_builder_arguments(builder, input_shape, num_classes, norm)
        if synchronized:
            raise ValueError(
                f"{builder}: keras.applications builds its own BatchNormalization layers, "
                "which are not synchronized over replicas; train it on one replica. "
                f"Received: synchronized={synchronized!r}"
            )
        model = application(
            weights=None,
            input_shape=input_shape,
            classes=num_classes,
            classifier_activation=None,
            name=name or f"{builder}_{norm}",
        )
        if norm != "bn":
            model, _ = replace_normalization(model, norm)
        return model

    build.__name__ = build.__qualname__ = builder
    build.__doc__ = f"""`keras.applications.{application.__name__}` with `norm` in place of its BN.

    Args:
        input_shape: `(height, width, channels)`, sides at least
            {get_builder(builder).min_input_size}.
        num_classes: number of logits.
        norm: `"bn"` (the application as Keras builds it) or a target of
            `keras_norms.replace_normalization` (`keras_norms.surgery.TARGETS`);
            the batch normalizations the target cannot replace stay (a warning).
        name: model name; defaults to `"{builder}_<norm>"`.
        synchronized: must be False (the application's BN is not synchronized).

    Returns:
        A functional `keras.Model` from images to `(batch, num_classes)` logits.

    Raises:
        ValueError: for an unknown `norm`, a malformed or too small
            `input_shape`, a bad `num_classes`, or `synchronized=True`.
    """
    return build


resnet50 = _builder("resnet50", keras.applications.ResNet50)
mobilenet_v2 = _builder("mobilenet_v2", keras.applications.MobileNetV2)
efficientnet_b0 = _builder("efficientnet_b0", keras.applications.EfficientNetB0)
