"""`keras-norms-export`: a `.keras` model to a SavedModel and a TFLite file."""

import argparse
import sys

import keras
import numpy as np

import keras_norms  # noqa: F401  (registers the layers for load_model)
from export.exporter import DEFAULT_TOLERANCE, ParityError, export_and_check
from training import data

RANDOM = "random"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-norms-export",
        description="Fold normalization into plain layers, export a SavedModel "
        "and a TFLite file, and check both against the Keras model.",
    )
    parser.add_argument("model", help="path of a .keras file")
    parser.add_argument("--output", required=True, help="directory to write into")
    parser.add_argument(
        "--dataset", default=data.DIGITS, choices=data.DATASETS + (RANDOM,),
        help="test images for the parity check (resized to the model's input)",
    )
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data dir")
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def parity_inputs(args, input_shape):
    """`--num-samples` test images shaped `input_shape` (no batch axis)."""
    if args.dataset == RANDOM:
        rng = np.random.default_rng(args.seed)
        return rng.normal(size=(args.num_samples,) + input_shape).astype("float32")
    splits = data.load(args.dataset, args.data_dir, input_shape[0], seed=args.seed)
    if splits.image_shape != input_shape:
        raise ValueError(
            f"--dataset {args.dataset} gives images of shape {splits.image_shape}, "
            f"the model expects {input_shape}"
        )
    return splits.x_test[: args.num_samples]


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        model = keras.saving.load_model(args.model)
        inputs = parity_inputs(args, tuple(model.input_shape[1:]))
        report = export_and_check(model, args.output, inputs, args.tolerance)
    except (OSError, ValueError, ParityError, data.DataUnavailableError) as error:
        print(f"keras-norms-export: error: {error}", file=sys.stderr)
        return 1
    print(f"SavedModel: {report['saved_model']}  TFLite: {report['tflite']}")
    print(f"parity on {report['num_inputs']} inputs (max |logit difference|): "
          f"SavedModel {report['saved_model_max_abs_diff']:.2e}, "
          f"TFLite {report['tflite_max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
