"""Every benchmark of keras-norms in one process, on the same inputs, as one report.

    python3 benchmarks/run_all.py            (about 10 minutes on 2 CPU cores)

1. Layers: training-step time and peak memory of each normalization on one
   (32, 16, 16, 32) batch, 32 filters 3x3, as ratios to a plain `Conv2D` and
   to `Conv2D` + Keras `BatchNormalization`. Memory is measured in a fresh
   process per layer (Linux peak RSS, `/proc/self/clear_refs`).
2. Builders: training throughput (images/s) of every builder and norm on
   the same random batches, as a ratio to the builder's `bn` variant.
3. Export: batch-1 latency of each folded TFLite file (`ai_edge_litert`) as
   a ratio to the Keras model, and to the same builder's `none` export.
4. Weight normalization per backend (`weight_norm_backends.py`, about 4.5
   minutes, in processes of their own): WN's training step as a ratio to the
   same unwrapped Dense, dilated Conv1D stack, Conv2D and LSTM on TensorFlow,
   JAX and torch, and on torch against native PyTorch weight norm.

Times are medians over alternating rounds, so every variant sees the same
machine load. Goals (CPU): weight normalization <= 1.05x Conv2D, mean-only
BN faster than BN, every export <= 1.05x the latency of the `none` export.
"""

import argparse
import json
import os
import platform
import tempfile

import keras
import numpy as np
import weight_norm_backends

from keras_norms import layers as kn
from keras_norms.export.exporter import convert_tflite, export_saved_model
from keras_norms.folding import fold
from keras_norms.models import BUILDERS

from measure import in_fresh_process, median_step_times, median_times, peak_training_memory_mib

LAYER_SHAPE = (32, 16, 16, 32)
FILTERS = 32
BUILDER_BATCH = 32
BUILDER_SIDE = 16


def builder_input(builder):
    """`(side, side, 1)`: 16, or the smallest power of two above it that `builder` accepts."""
    side = BUILDER_SIDE
    while side < BUILDERS[builder].min_input_size:
        side *= 2
    return (side, side, 1)


def _conv(use_bias=True):
    return keras.layers.Conv2D(FILTERS, 3, padding="same", use_bias=use_bias)


LAYERS = {
    "conv2d": lambda: [_conv()],
    "conv2d+bn": lambda: [_conv(False), keras.layers.BatchNormalization()],
    "weight_norm": lambda: [kn.WeightNormalization(_conv())],
    "conv2d+mean_only_bn": lambda: [_conv(False), kn.MeanOnlyBatchNormalization()],
    "normprop_conv2d": lambda: [kn.NormPropConv2D(FILTERS, 3, padding="same", activation=None)],
    "conv2d+dwck": lambda: [_conv(False), kn.DWCKNormalization()],
    "conv2d+learned_statistics": lambda: [_conv(False), kn.LearnedStatisticsNormalization()],
    "normalized_conv2d": lambda: [kn.NormalizedConv2D(FILTERS, 3, padding="same")],
}


def _layer_model(name):
    model = keras.Sequential([keras.Input(LAYER_SHAPE[1:]), *LAYERS[name]()])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def _layer_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=LAYER_SHAPE).astype("float32")
    return x, rng.normal(size=LAYER_SHAPE[:3] + (FILTERS,)).astype("float32")


def layer_peak_memory_mib(name, steps=3):
    """Peak resident memory (MiB) added by building and training layer `name` (fresh process)."""
    return peak_training_memory_mib(lambda: _layer_model(name), _layer_batch(), steps)


def layer_table(rounds, steps):
    times = median_step_times({n: _layer_model(n) for n in LAYERS}, _layer_batch(), rounds, steps)
    memory = {name: in_fresh_process("run_all", "layer_peak_memory_mib", name) for name in LAYERS}
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


def _builder_model(builder, norm):
    keras.utils.set_random_seed(0)
    model = BUILDERS[builder].build(builder_input(builder), 10, norm)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _builder_batch(builder):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BUILDER_BATCH,) + builder_input(builder)).astype("float32")
    return x, rng.integers(0, 10, size=BUILDER_BATCH)


def builder_table(models, rounds, steps):
    rows = []
    for builder in models:
        times = median_step_times(models[builder], _builder_batch(builder), rounds, steps)
        for norm in BUILDERS[builder].norms:
            rows.append(
                {
                    "builder": builder,
                    "norm": norm,
                    "images_per_s": BUILDER_BATCH / times[norm],
                    "throughput_vs_bn": times["bn"] / times[norm],
                }
            )
    return rows


def _tflite_runner(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    (index,) = [detail["index"] for detail in interpreter.get_input_details()]
    interpreter.resize_tensor_input(index, list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    return interpreter.invoke


def export_table(models, rounds, repeats, workdir):
    rows = []
    for builder in models:
        x = _builder_batch(builder)[0][:1]
        runs = {}
        for norm, model in models[builder].items():
            saved = export_saved_model(fold(model), os.path.join(workdir, builder, norm))
            tflite = convert_tflite(saved, os.path.join(workdir, builder, f"{norm}.tflite"))
            runs[("tflite", norm)] = _tflite_runner(tflite, x)
            runs[("keras", norm)] = lambda m=model: m(x, training=False)
        latency = median_times(runs, rounds, repeats)
        for norm in BUILDERS[builder].norms:
            tflite_s, keras_s = latency[("tflite", norm)], latency[("keras", norm)]
            rows.append(
                {
                    "builder": builder,
                    "norm": norm,
                    "tflite_ms": 1000 * tflite_s,
                    "tflite_vs_keras": tflite_s / keras_s,
                    "tflite_vs_none_export": tflite_s / latency[("tflite", "none")],
                }
            )
    return rows


def _print_table(title, rows, columns):
    print(f"\n{title}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round and variant")
    parser.add_argument(
        "--repeats", type=int, default=20, help="timed inferences per round and export"
    )
    parser.add_argument("--builders", default=",".join(sorted(BUILDERS)), help="comma-separated")
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument(
        "--wn-backends",
        default="tensorflow,jax,torch",
        help="backends of the weight-normalization benchmark (comma-separated, empty: none)",
    )
    parser.add_argument("--wn-quick", action="store_true", help="its tiny shapes (tests)")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    layers = layer_table(args.rounds, args.steps)
    models = {
        b: {n: _builder_model(b, n) for n in BUILDERS[b].norms} for b in args.builders.split(",")
    }
    builders = builder_table(models, args.rounds, args.steps)
    with tempfile.TemporaryDirectory() as workdir:
        exports = export_table(models, args.rounds, args.repeats, workdir)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {keras.backend.backend()} backend"
    print(f"keras-norms benchmark report ({machine})")
    _print_table(
        f"Layers: training step on {LAYER_SHAPE}, {FILTERS} filters 3x3",
        layers,
        [
            "layer",
            "ms_per_step",
            "time_vs_conv2d",
            "time_vs_bn",
            "peak_mib",
            "memory_vs_conv2d",
            "memory_vs_bn",
        ],
    )
    _print_table(
        f"Builders: training throughput, batch {BUILDER_BATCH}",
        builders,
        ["builder", "norm", "images_per_s", "throughput_vs_bn"],
    )
    _print_table(
        "Export: batch-1 TFLite latency",
        exports,
        ["builder", "norm", "tflite_ms", "tflite_vs_keras", "tflite_vs_none_export"],
    )
    report = {"machine": machine, "layers": layers, "builders": builders, "exports": exports}
    if args.wn_backends:
        print("\nWeight normalization per backend")
        wn_argv = ["--backends", args.wn_backends] + (["--quick"] if args.wn_quick else [])
        report["weight_norm_backends"] = weight_norm_backends.main(wn_argv)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
