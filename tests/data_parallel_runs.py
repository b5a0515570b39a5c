"""One device against `keras.distribution.DataParallel` on two, in one JAX process.

Run by tests/test_training_any_backend.py in a subprocess whose environment
sets `XLA_FLAGS=--xla_force_host_platform_device_count=2` (it must be set
before JAX starts) and `KERAS_BACKEND=jax`. Prints one JSON object: the
largest differences between the two runs of
- `layers`: a model holding each of our layers, fitted 4 steps: the losses of
  the steps, every weight after data-dependent init, every weight (moving
  statistics included) after the steps;
- `cli`: `keras-norms-train --strategy data_parallel` against the default on
  a test split of 29 images (the last batch padded): the final figures and
  every weight of model.keras.
"""

import json
import sys

import keras
import numpy as np

import keras_norms
from keras_norms import layers
from keras_norms.training import cli


def _model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = layers.WeightNormalization(keras.layers.Conv2D(8, 3, padding="same", use_bias=False))(
        inputs
    )
    x = keras.layers.ReLU()(layers.MeanOnlyBatchNormalization()(x))
    x = layers.DWCKNormalization()(x)
    x = layers.LearnedStatisticsNormalization()(x)
    x = layers.NormPropConv2D(8, 3, padding="same")(x)
    x = layers.NormalizedConv2D(8, 3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.WeightNormalization(keras.layers.Dense(4))(x))


def _weights(model):
    return [keras.ops.convert_to_numpy(w).astype("float64") for w in model.weights]


def _largest_difference(a, b):
    return max(float(np.abs(p - q).max()) for p, q in zip(a, b, strict=True))


def _fit(distribution, x, y):
    losses = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: losses.append(logs["loss"])
    )
    with distribution.scope() if distribution else keras.name_scope("one_device"):
        model = _model()
        keras_norms.data_dependent_init(model, x[:32])
        initialized = _weights(model)
        model.compile(
            keras.optimizers.SGD(0.05),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True,
        )
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    return np.array(losses), initialized, _weights(model)


def layer_differences():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, 64)
    devices = keras.distribution.list_devices()
    assert len(devices) == 2, devices
    one = _fit(None, x, y)
    two = _fit(keras.distribution.DataParallel(devices=devices), x, y)
    return {
        "losses": float(np.abs(one[0] - two[0]).max()),
        "steps": len(one[0]),
        "after_data_init": _largest_difference(one[1], two[1]),
        "after_fit": _largest_difference(one[2], two[2]),
    }


def cli_differences(directory):
    argv = ["--epochs", "1", "--image-size", "12", "--batch-size", "16", "--verbose", "0"]
    argv += ["--train-examples", "70", "--validation-examples", "27", "--test-examples", "29"]
    argv += ["--learning-rate", "1e-4", "--recompute-statistics"]
    metrics, weights = {}, {}
    for strategy in ("default", "data_parallel"):
        output = f"{directory}/{strategy}"
        assert cli.main(argv + ["--strategy", strategy, "--output", output]) == 0
        with open(f"{output}/metrics.json") as f:
            metrics[strategy] = json.load(f)
        weights[strategy] = _weights(keras.saving.load_model(f"{output}/model.keras"))
    figures = [key for key in metrics["default"] if key.startswith(("test_", "validation_"))]
    return {
        "replicas": metrics["data_parallel"]["replicas"],
        "figures": sorted(figures),
        "metrics": max(
            abs(metrics["default"][key] - metrics["data_parallel"][key]) for key in figures
        ),
        "weights": _largest_difference(weights["default"], weights["data_parallel"]),
    }


if __name__ == "__main__":
    print(json.dumps({"layers": layer_differences(), "cli": cli_differences(sys.argv[1])}))
