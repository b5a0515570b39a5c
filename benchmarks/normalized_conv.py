"""Normalized Convolution vs. its im2col path vs. a plain Conv2D: step time and peak memory.

One 3x3, 64-filter layer on a (32, 32, 32, 64) batch, trained with SGD on an
MSE loss. Step times are medians over alternating rounds in this process;
peak memory is the peak resident memory a fresh process per variant adds
while it builds the layer and trains it (Linux `/proc`).
Ratios are to the plain Conv2D.

    python3 benchmarks/normalized_conv.py [--rounds 5] [--steps 10]
"""

import argparse
import platform

import keras
import numpy as np

from keras_norms.layers import NormalizedConv2D

from measure import in_fresh_process, median_step_times, peak_training_memory_mib

SHAPE = (32, 32, 32, 64)
VARIANTS = ("fast", "im2col", "conv2d")


def build(variant):
    if variant == "conv2d":
        layer = keras.layers.Conv2D(64, 3, padding="same")
    else:
        layer = NormalizedConv2D(64, 3, padding="same", implementation=variant)
    model = keras.Sequential([keras.Input(SHAPE[1:]), layer])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=SHAPE).astype("float32"), rng.normal(size=SHAPE).astype("float32")


def peak_memory_mib(variant, steps):
    """Peak resident memory (MiB) added by building and training `variant` (in a fresh process)."""
    return peak_training_memory_mib(lambda: build(variant), _data(), steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    models = {variant: build(variant) for variant in VARIANTS}
    medians = median_step_times(models, _data(), args.rounds, args.steps, warmup=1)
    memory = {v: in_fresh_process("normalized_conv", "peak_memory_mib", v, 3) for v in VARIANTS}
    print(
        f"3x3x64 layer on {SHAPE}, training step ({platform.machine()}, "
        f"{keras.backend.backend()} backend)"
    )
    print(f"{'variant':<10}{'ms/step':>10}{'time ratio':>12}{'peak MiB':>10}{'memory ratio':>14}")
    for v in VARIANTS:
        print(
            f"{v:<10}{1000 * medians[v]:>10.1f}{medians[v] / medians['conv2d']:>12.2f}"
            f"{memory[v]:>10.0f}{memory[v] / memory['conv2d']:>14.2f}"
        )
    print(f"fast path vs im2col: {medians['im2col'] / medians['fast']:.1f}x faster")
    return medians, memory


if __name__ == "__main__":
    main()
