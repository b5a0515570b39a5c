"""The `builders` section of `run_all.py`: every builder's training throughput per norm.

Every norm of each builder (`keras_norms.models.BUILDERS`) trains on the
same random batch of `BUILDER_BATCH` images of `builder_input(builder)`;
its throughput (images/s, from the median step time over alternating
rounds) is reported as a ratio to the builder's `bn` variant. The models
and batches here are also those of the export section (`export_latency.py`).
"""

import keras
import numpy as np

from keras_norms.models import BUILDERS

from measure import median_step_times

BUILDER_BATCH = 32
BUILDER_SIDE = 16


def builder_input(builder):
    """`(side, side, 1)`: 16, or the smallest power of two above it that `builder` accepts."""
    side = BUILDER_SIDE
    while side < BUILDERS[builder].min_input_size:
        side *= 2
    return (side, side, 1)


def inference_model(builder, norm):
    """`builder` with `norm`, 10 classes, on `builder_input(builder)`, built with seed 0."""
    keras.utils.set_random_seed(0)
    return BUILDERS[builder].build(builder_input(builder), 10, norm)


def compile_for_training(model, jit_compile="auto"):
    """`model`, compiled with SGD (0.01) and a sparse cross-entropy on logits."""
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def builder_batch(builder):
    """`(x, y)`: `BUILDER_BATCH` random images of `builder_input(builder)`, labels 0-9 (seed 0)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BUILDER_BATCH,) + builder_input(builder)).astype("float32")
    return x, rng.integers(0, 10, size=BUILDER_BATCH)


def builder_table(builders, rounds, steps):
    """One row per builder of `builders` and each of its norms: throughput and its ratio.

    `images_per_s` is `BUILDER_BATCH` over the median seconds per training
    step (`rounds` alternating rounds of `steps` steps, all of a builder's
    norms in the same rounds); `throughput_vs_bn` the `bn` variant's median
    step time over this norm's.
    """
    rows = []
    for builder in builders:
        norms = BUILDERS[builder].norms
        models = {norm: compile_for_training(inference_model(builder, norm)) for norm in norms}
        times = median_step_times(models, builder_batch(builder), rounds, steps)
        for norm in norms:
            rows.append(
                {
                    "builder": builder,
                    "norm": norm,
                    "images_per_s": BUILDER_BATCH / times[norm],
                    "throughput_vs_bn": times["bn"] / times[norm],
                }
            )
    return rows
