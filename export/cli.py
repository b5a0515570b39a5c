"""`keras-norms-export`: a `.keras` model to a SavedModel, a TFLite file and an ONNX file."""

import argparse
import importlib
import importlib.util
import os
import re
import sys
import zipfile

from keras_norms import datasets
from keras_norms.command_line import positive_int
from keras_norms.export.parity import (
    DEFAULT_TOLERANCE,
    DYNAMIC_AXIS_SIZE,
    EXPORT_FORMATS,
    FORMAT_LABELS,
    PARITY_SOURCES,
    RANDOM,
    ParityError,
    canonical_format,
    differences_by_shape_line,
    differences_line,
    parity_inputs,
    shape_text,
    sizes_dynamic_axes,
)
from keras_norms.optional import MissingDependencyError


def _shape(text):
    """`"8192,1"` as `(8192, 1)`."""
    try:
        shape = tuple(int(size) for size in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, such as 8192,1, got {text!r}"
        )
    return shape


def _dynamic_shape(text):
    """`"None,80"` (or `"none,80"`) as `(None, 80)`."""
    try:
        shape = tuple(
            None if size.strip().lower() == "none" else int(size) for size in text.split(",")
        )
    except ValueError:
        shape = ()
    if not shape or any(size is not None and size <= 0 for size in shape):
        raise argparse.ArgumentTypeError(
            f"expected positive integers or None separated by commas, such as None,80, got {text!r}"
        )
    return shape


def _formats(text):
    """`"saved_model,onnx"` as `("saved_model", "onnx")` (`savedmodel` accepted for one release)."""
    names = tuple(canonical_format(name.strip()) for name in text.split(","))
    if any(name not in EXPORT_FORMATS for name in names):
        raise argparse.ArgumentTypeError(
            f"expected one or more of {','.join(EXPORT_FORMATS)} separated by commas, got {text!r}"
        )
    return names


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-norms-export",
        description="Fold normalization into plain layers, export a SavedModel, "
        "a TFLite file and an ONNX file, and check each against the Keras model.",
    )
    parser.add_argument("model", help="path of a .keras file")
    parser.add_argument("--output", required=True, help="directory to write into")
    parser.add_argument(
        "--format",
        type=_formats,
        default=EXPORT_FORMATS,
        metavar="FORMAT,...",
        help=f"the files to write and check, separated by commas, from {','.join(EXPORT_FORMATS)} "
        f"(default: all three); tflite alone still converts from a SavedModel, which it does "
        "not keep",
    )
    parser.add_argument(
        "--dataset",
        default=datasets.DIGITS,
        choices=PARITY_SOURCES,
        help="test images for the parity check (resized to the model's input); "
        f"{RANDOM!r}: standard normal inputs of any shape, for models that are not image "
        "classifiers",
    )
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data dir")
    parser.add_argument("--num-samples", type=positive_int, default=256)
    parser.add_argument(
        "--input-shape",
        type=_dynamic_shape,
        default=None,
        metavar="SIZE|None,...",
        help="shape of one input without the batch axis to export with, None (or none) for "
        "each dynamic axis, e.g. None,80 for a vocoder taking any number of 80-band mel "
        "frames: every file keeps the batch axis and those axes dynamic and is checked at two "
        "sizes of each (see --parity-shape); a functional or Sequential model's fixed axes "
        "keep their sizes. Default: a functional or Sequential model's own input shape, its "
        "None axes dynamic; a subclassed model's first call's shape, every axis fixed (the "
        "output says so)",
    )
    parser.add_argument(
        "--parity-shape",
        type=_shape,
        default=None,
        metavar="SIZE,SIZE,...",
        help="shape of one parity input without the batch axis, giving each None (dynamic) "
        "axis of --input-shape (default: of the model's input) a size, e.g. 8192,1 for "
        "keras.Input((None, 1)) or 50,80 for --input-shape None,80; the export keeps those "
        "axes dynamic and also checks each at a second size, size + size // 2 + 1 (default: "
        f"with --dataset random each None axis is {DYNAMIC_AXIS_SIZE}, with a dataset its "
        "images' own size)",
    )
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--custom-code",
        action="append",
        default=[],
        metavar="FILE.py|MODULE",
        help="a Python file or importable module that defines the model's own layer or "
        "model classes (repeatable); its Keras classes are passed to load_model",
    )
    return parser


class UserCodeError(RuntimeError):
    """The user's code for --custom-code cannot be imported."""


def _import_user_code(source):
    """The module `source` names: a `.py` file's path or an importable module name."""
    try:
        if not source.endswith(".py"):
            return importlib.import_module(source)
        if not os.path.isfile(source):
            raise FileNotFoundError(f"no such file: {source}")
        name = os.path.splitext(os.path.basename(source))[0]
        spec = importlib.util.spec_from_file_location(name, source)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # as an import would, for classes that look themselves up
        spec.loader.exec_module(module)
        return module
    except Exception as error:  # the user's code may raise anything
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise UserCodeError(
            f"cannot import --custom-code {source} ({type(error).__name__}: {first_line})"
        ) from None


def user_objects(sources):
    """`{name: class}` of the Keras layer and model classes the `sources` define.

    Raises:
        UserCodeError: if a source cannot be imported.
    """
    import keras  # here, not at the top: --help loads no Keras

    objects = {}
    for source in sources:
        module = _import_user_code(source)
        objects.update(
            {
                name: value
                for name, value in vars(module).items()
                if isinstance(value, type) and issubclass(value, keras.layers.Layer)
            }
        )
    return objects


def load_model(path, custom_code=()):
    """`keras.saving.load_model(path)` with the classes of `custom_code`.

    Raises:
        UserCodeError: if `custom_code` cannot be imported.
        ValueError: if the file uses a class that is neither registered nor
            in `custom_code` (the message says how to pass it), or is a
            `.keras` file that is corrupt, truncated or not a Keras archive.
    """
    import keras

    import keras_norms.layers  # noqa: F401  (registers our layers for load_model)

    objects = user_objects(custom_code)
    _check_keras_archive(path)
    try:
        return keras.saving.load_model(path, custom_objects=objects)
    except zipfile.BadZipFile as error:
        raise _unreadable(path, error) from None
    except TypeError as error:
        unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", str(error))
        if unknown is None:
            raise
        raise ValueError(
            f"{path} uses {unknown.group(1)!r}, a class Keras cannot find; pass the code that "
            f"defines it: --custom-code FILE.py or --custom-code package.module"
        ) from None


def _unreadable(path, reason):
    return ValueError(
        f"{path} exists but cannot be read as a .keras archive; it is corrupt or "
        f"truncated ({reason})"
    )


def _check_keras_archive(path):
    """Raises ValueError for an existing `.keras` file that is not a Keras model archive.

    A missing file, or one of another format, is left to Keras to report.
    """
    if not (path.endswith(".keras") and os.path.isfile(path)):
        return
    if not zipfile.is_zipfile(path):
        raise _unreadable(path, "not a zip file")
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise ValueError(
                f"{path} is not a Keras model archive: the zip file holds no config.json"
            )


def _parity_shape(input_shape, requested, source="the model's input shape", hint=False):
    """The shape of one parity input: `input_shape`, its `None` axes sized by `requested`.

    `source` names where `input_shape` comes from in the error; with `hint`
    (a subclassed model's first call's shape), the error says which
    `--input-shape` makes axes dynamic.

    Raises:
        ValueError: if `requested` has another rank, or changes an axis
            that is not `None`.
    """
    if requested is None:
        return input_shape
    if not sizes_dynamic_axes(requested, input_shape):
        advice = ""
        if hint and len(input_shape) > 1:
            dynamic = ",".join(["None"] * (len(input_shape) - 1) + [str(input_shape[-1])])
            advice = f" (or export with --input-shape {dynamic}: None axes are dynamic)"
        raise ValueError(
            f"--parity-shape must keep {source} {shape_text(input_shape)} and give "
            f"each None axis a size{advice}. Received: --parity-shape "
            f"{','.join(map(str, requested))}"
        )
    return requested


def _export_shape(model, model_shape, requested):
    """`--input-shape`, checked against the model's input shape (without the batch axis).

    A subclassed model's input shape is its first call's (its build config),
    no constraint on the sizes; a functional or Sequential model's fixed
    axes are.

    Raises:
        ValueError: if `requested` has another rank than the model's input,
            or, for a functional or Sequential model, another size on an
            axis the model fixes.
    """
    from keras_norms.graph import is_graph_model

    if not model_shape:  # a subclassed model saved before it was built: nothing to check
        return requested
    fixed = is_graph_model(model)
    fits = len(requested) == len(model_shape) and all(
        size is None or own is None or size == own or not fixed
        for size, own in zip(requested, model_shape)
    )
    if not fits:
        text = ",".join("None" if size is None else str(size) for size in requested)
        each = ", each None or the model's size," if fixed else ""
        raise ValueError(
            f"--input-shape must have as many axes as the model's input shape "
            f"{shape_text(model_shape)}{each} without the batch axis. "
            f"Received: --input-shape {text}"
        )
    return requested


def _input_shape(model):
    """The model's input shape: from its inputs, or for a subclassed model its build config."""
    try:
        return model.input_shape
    except AttributeError:  # a subclassed model has no inputs; its first call's shape is saved
        return tuple((model.get_build_config() or {}).get("input_shape") or ())


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        # Imported here: without TensorFlow it raises a one-line MissingDependencyError,
        # and --help loads neither Keras nor TensorFlow.
        from keras_norms.export.exporter import export_and_check
        from keras_norms.graph import is_graph_model

        model = load_model(args.model, args.custom_code)
        model_shape = tuple(_input_shape(model)[1:])
        if args.input_shape is None:
            hint = not is_graph_model(model)  # a subclassed model: its first call's shape
            shape = _parity_shape(model_shape, args.parity_shape, hint=hint)
        else:
            export_shape = _export_shape(model, model_shape, args.input_shape)
            shape = _parity_shape(export_shape, args.parity_shape, "--input-shape")
        inputs = parity_inputs(args.dataset, shape, args.num_samples, args.seed, args.data_dir)
        report = export_and_check(
            model, args.output, inputs, args.tolerance, args.format, args.input_shape
        )
    except (
        OSError,
        ValueError,
        ParityError,
        datasets.DataUnavailableError,
        MissingDependencyError,
        UserCodeError,
    ) as error:
        print(f"keras-norms-export: error: {error}", file=sys.stderr)
        return 1
    written = [(FORMAT_LABELS[name], name) for name in report["formats"]]
    print("  ".join(f"{label}: {report[key]}" for label, key in written))
    shapes = report["input_shapes"]
    print(
        f"parity on {report['num_inputs']} inputs of shape "
        + " and ".join(shape_text(shape) for shape in shapes)
        + " (max |logit difference|): "
        + differences_line(report)
    )
    if len(shapes) > 1:
        print(f"by input shape: {differences_by_shape_line(report)}")
    if "fixed_axes_note" in report:
        print(report["fixed_axes_note"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
