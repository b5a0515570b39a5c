"""`keras-norms-export`: a `.keras` model to a SavedModel and a TFLite file."""

import argparse
import sys

import keras

import keras_norms  # noqa: F401  (registers the layers for load_model)
from keras_norms import datasets
from keras_norms.export.parity import (
    DEFAULT_TOLERANCE,
    PARITY_SOURCES,
    ParityError,
    parity_inputs,
)
from keras_norms.optional import MissingDependencyError


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-norms-export",
        description="Fold normalization into plain layers, export a SavedModel "
        "and a TFLite file, and check both against the Keras model.",
    )
    parser.add_argument("model", help="path of a .keras file")
    parser.add_argument("--output", required=True, help="directory to write into")
    parser.add_argument(
        "--dataset",
        default=datasets.DIGITS,
        choices=PARITY_SOURCES,
        help="test images for the parity check (resized to the model's input)",
    )
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data dir")
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        # Imported here: without TensorFlow it raises a one-line MissingDependencyError.
        from keras_norms.export.exporter import export_and_check

        model = keras.saving.load_model(args.model)
        inputs = parity_inputs(
            args.dataset, model.input_shape[1:], args.num_samples, args.seed, args.data_dir
        )
        report = export_and_check(model, args.output, inputs, args.tolerance)
    except (
        OSError,
        ValueError,
        ParityError,
        datasets.DataUnavailableError,
        MissingDependencyError,
    ) as error:
        print(f"keras-norms-export: error: {error}", file=sys.stderr)
        return 1
    print(f"SavedModel: {report['saved_model']}  TFLite: {report['tflite']}")
    print(
        f"parity on {report['num_inputs']} inputs (max |logit difference|): "
        f"SavedModel {report['saved_model_max_abs_diff']:.2e}, "
        f"TFLite {report['tflite_max_abs_diff']:.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
