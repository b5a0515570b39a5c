"""The `layers` section of `run_all.py`: each normalization's training step and peak memory.

Every layer of `LAYERS` trains with SGD and an MSE loss on one
`LAYER_SHAPE` batch (32 filters 3x3, `FILTERS`); its step time (median over
alternating rounds, `measure.median_step_times`) and its peak memory (in a
fresh process per layer, `layer_peak_memory_mib`) are reported as ratios to
a plain `Conv2D` and to `Conv2D` + Keras `BatchNormalization`.
"""

import keras
import numpy as np

from keras_norms import layers as kn

from measure import in_fresh_process, median_step_times, peak_training_memory_mib

LAYER_SHAPE = (32, 16, 16, 32)
FILTERS = 32


def _conv(use_bias=True, filters=FILTERS):
    return keras.layers.Conv2D(filters, 3, padding="same", use_bias=use_bias)


# Each layer's stack, 3x3 convolutions of `filters` filters (`FILTERS` here; the GPU check
# makes them at its own size).
LAYERS = {
    "conv2d": lambda filters=FILTERS: [_conv(filters=filters)],
    "conv2d+bn": lambda filters=FILTERS: [
        _conv(False, filters),
        keras.layers.BatchNormalization(),
    ],
    "weight_norm": lambda filters=FILTERS: [kn.WeightNormalization(_conv(filters=filters))],
    "conv2d+mean_only_bn": lambda filters=FILTERS: [
        _conv(False, filters),
        kn.MeanOnlyBatchNormalization(),
    ],
    "normprop_conv2d": lambda filters=FILTERS: [
        kn.NormPropConv2D(filters, 3, padding="same", activation=None)
    ],
    "conv2d+dwck": lambda filters=FILTERS: [_conv(False, filters), kn.DWCKNormalization()],
    "conv2d+learned_statistics": lambda filters=FILTERS: [
        _conv(False, filters),
        kn.LearnedStatisticsNormalization(),
    ],
    "normalized_conv2d": lambda filters=FILTERS: [kn.NormalizedConv2D(filters, 3, padding="same")],
}


def layer_model(name):
    """`LAYERS[name]` on a `LAYER_SHAPE[1:]` input, compiled with SGD (0.01) and an MSE loss."""
    model = keras.Sequential([keras.Input(LAYER_SHAPE[1:]), *LAYERS[name]()])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def layer_batch():
    """`(x, y)`: a random `LAYER_SHAPE` batch and its `FILTERS`-channel targets (seed 0)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=LAYER_SHAPE).astype("float32")
    return x, rng.normal(size=LAYER_SHAPE[:3] + (FILTERS,)).astype("float32")


def layer_peak_memory_mib(name, steps=3):
    """Peak resident memory (MiB) added by building and training layer `name` (fresh process)."""
    return peak_training_memory_mib(lambda: layer_model(name), layer_batch(), steps)


def layer_table(rounds, steps):
    """One row per layer of `LAYERS`: step time and peak memory, and their ratios.

    `ms_per_step` is the median milliseconds per training step over `rounds`
    alternating rounds of `steps` steps; `peak_mib` the memory of
    `layer_peak_memory_mib`, each layer in a process of its own.
    `time_vs_conv2d`, `time_vs_bn`, `memory_vs_conv2d` and `memory_vs_bn` are
    their quotients by the `conv2d` and `conv2d+bn` layers' figures.
    """
    times = median_step_times({n: layer_model(n) for n in LAYERS}, layer_batch(), rounds, steps)
    memory = {
        name: in_fresh_process("layer_steps", "layer_peak_memory_mib", name) for name in LAYERS
    }
    return [
        {
            "layer": name,
            "ms_per_step": 1000 * times[name],
            "time_vs_conv2d": times[name] / times["conv2d"],
            "time_vs_bn": times[name] / times["conv2d+bn"],
            "peak_mib": memory[name],
            "memory_vs_conv2d": memory[name] / memory["conv2d"],
            "memory_vs_bn": memory[name] / memory["conv2d+bn"],
        }
        for name in LAYERS
    ]
