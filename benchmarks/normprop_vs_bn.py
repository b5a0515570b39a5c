"""Training-step time of NIN with NormProp vs. batch normalization, in one run.

The NormProp paper (Arpit et al. 2016, section 5.6) reports 84 s vs. 96 s per
CIFAR-10 epoch (ratio 0.875) on a GPU. Here both networks train on the same
offline digits batches (32x32x1, the paper's batch size 50 and SGD recipe);
their steps are timed in alternating rounds after a warm-up, and the ratio of
median step times NormProp / BN is printed.

    python3 benchmarks/normprop_vs_bn.py [--rounds 5] [--steps 10]
"""

import argparse
import platform
import statistics
import time

import keras
import numpy as np

from keras_norms.models import nin
from training import data
from training.recipes import RECIPES

NORMS = ("normprop", "bn")


def build(norm, image_shape, num_classes):
    recipe = RECIPES["nin"]
    model = nin(image_shape, num_classes, norm, data_normalization="batch")
    model.compile(
        optimizer=recipe.optimizer(recipe.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def time_steps(model, batches):
    times = []
    for x, y in batches:
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and norm")
    parser.add_argument("--batch-size", type=int, default=RECIPES["nin"].batch_size)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    splits = data.load("digits", image_size=RECIPES["nin"].digits_image_size)
    n = args.batch_size
    batches = [
        (splits.x_train[i * n:(i + 1) * n], splits.y_train[i * n:(i + 1) * n])
        for i in range(args.steps)
    ]
    models = {norm: build(norm, splits.image_shape, splits.num_classes) for norm in NORMS}
    for model in models.values():  # warm-up: tracing and first allocations
        time_steps(model, batches[:3])
    step_times = {norm: [] for norm in NORMS}
    for _ in range(args.rounds):
        for norm, model in models.items():
            step_times[norm] += time_steps(model, batches)
    medians = {norm: statistics.median(times) for norm, times in step_times.items()}
    ratio = medians["normprop"] / medians["bn"]

    print(f"NIN training step, batch {n}, 32x32x1, {args.rounds * args.steps} steps each "
          f"({platform.machine()}, {keras.backend.backend()} backend)")
    print(f"{'norm':<10}{'median ms/step':>16}")
    for norm in NORMS:
        print(f"{norm:<10}{1000 * medians[norm]:>16.1f}")
    print(f"ratio NormProp / BN: {ratio:.3f}   (paper, GPU: 84/96 = 0.875; goal <= 0.85)")
    return ratio


if __name__ == "__main__":
    main()
