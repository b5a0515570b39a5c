"""Training-step time of one builder with several normalizations, as ratios, in one run.

Each variant trains on the same offline digits batches with the builder's
recipe (batch size, optimizer); steps are timed in alternating rounds after a
warm-up, and median step times are printed with their ratio to the baseline.

    python3 benchmarks/train_step.py --model nin --norms normprop,bn
        (NormProp paper, section 5.6: 84 s vs. 96 s per epoch, ratio 0.875)
    python3 benchmarks/train_step.py --model all_cnn_c --norms dwck,learned,bn
"""

import argparse
import platform
import statistics
import time

import keras

from keras_norms import datasets
from keras_norms.models import BUILDERS
from keras_norms.training import recipes


def build(model_name, norm, image_shape, num_classes):
    builder = BUILDERS[model_name]
    kwargs = {"data_normalization": "batch"} if builder.data_normalizations else {}
    model = builder.build(image_shape, num_classes, norm, **kwargs)
    model.compile(
        optimizer=recipes.make_optimizer(builder.recipe.optimizer, builder.recipe.learning_rate),
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
    parser.add_argument("--model", default="nin", choices=sorted(BUILDERS))
    parser.add_argument(
        "--norms", default="normprop,bn", help="comma-separated; the last is the baseline"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and norm")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    args = parser.parse_args(argv)
    norms = args.norms.split(",")
    recipe = BUILDERS[args.model].recipe
    n = args.batch_size or recipe.batch_size

    keras.utils.set_random_seed(0)
    splits = datasets.load("digits", image_size=recipe.digits_image_size)
    batches = [
        (splits.x_train[i * n : (i + 1) * n], splits.y_train[i * n : (i + 1) * n])
        for i in range(args.steps)
    ]
    models = {
        norm: build(args.model, norm, splits.image_shape, splits.num_classes) for norm in norms
    }
    for model in models.values():  # warm-up: tracing and first allocations
        time_steps(model, batches[:3])
    step_times = {norm: [] for norm in norms}
    for _ in range(args.rounds):
        for norm, model in models.items():
            step_times[norm] += time_steps(model, batches)
    medians = {norm: statistics.median(times) for norm, times in step_times.items()}
    baseline = norms[-1]
    ratios = {norm: medians[norm] / medians[baseline] for norm in norms}

    print(
        f"{args.model} training step, batch {n}, {splits.image_shape}, "
        f"{args.rounds * args.steps} steps each ({platform.machine()}, "
        f"{keras.backend.backend()} backend)"
    )
    print(f"{'norm':<10}{'median ms/step':>16}{'ratio to ' + baseline:>16}")
    for norm in norms:
        print(f"{norm:<10}{1000 * medians[norm]:>16.1f}{ratios[norm]:>16.3f}")
    return ratios


if __name__ == "__main__":
    main()
