"""Normalization layers, written in `keras.ops` only."""

from keras_norms.layers.batch_statistics import BatchStatisticsNormalization
from keras_norms.layers.dwck import DWCKNormalization
from keras_norms.layers.learned_statistics import LearnedStatisticsNormalization
from keras_norms.layers.mean_only_bn import MeanOnlyBatchNormalization
from keras_norms.layers.normalized_conv import NormalizedConv2D
from keras_norms.layers.normprop import NormPropConv2D, NormPropDense
from keras_norms.layers.weight_norm import WeightNormalization
from keras_norms.tensorflow_workaround import disable_dependency_optimization

# Before any model holding these layers trains (see the workaround's docstring).
disable_dependency_optimization()

__all__ = [
    "BatchStatisticsNormalization",
    "DWCKNormalization",
    "LearnedStatisticsNormalization",
    "MeanOnlyBatchNormalization",
    "NormPropConv2D",
    "NormPropDense",
    "NormalizedConv2D",
    "WeightNormalization",
]
