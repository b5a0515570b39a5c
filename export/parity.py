"""What a parity check compares: its inputs, its measure and its tolerance (no TensorFlow).

The export CLI and the training CLI's `--export` both check exported files
against the Keras model; this module holds what they share, below both.
"""

import numpy as np

from keras_norms import datasets

# The formats `export_and_check` and `keras-norms-export --format` write, in this order.
# Each name is also its key in a parity report (its file; with `_max_abs_diff`
# appended, its difference).
SAVED_MODEL, TFLITE, ONNX = "saved_model", "tflite", "onnx"
EXPORT_FORMATS = (SAVED_MODEL, TFLITE, ONNX)
# Each format's name in messages.
FORMAT_LABELS = {SAVED_MODEL: "SavedModel", TFLITE: "TFLite", ONNX: "ONNX"}
# Deprecated spellings, accepted for one release.
_FORMAT_ALIASES = {"savedmodel": SAVED_MODEL}
# Largest |logit difference| an exported file may have from the Keras model.
DEFAULT_TOLERANCE = 1e-4
RANDOM = "random"
# What `parity_inputs` can draw from: a dataset's test images, or random normals.
PARITY_SOURCES = datasets.DATASETS + (RANDOM,)
# The size random parity inputs give each `None` axis of the model's input
# (a variable length, height or width): the model is exported with the axis
# still dynamic, and checked at this size.
DYNAMIC_AXIS_SIZE = 64


def canonical_format(name):
    """`name`, or `"saved_model"` for its deprecated spelling `"savedmodel"`."""
    return _FORMAT_ALIASES.get(name, name) if isinstance(name, str) else name


def check_formats(formats, caller="export_and_check"):
    """`formats` as a tuple in `EXPORT_FORMATS` order, each once.

    `"savedmodel"`, the earlier spelling of `"saved_model"`, is accepted for
    one release.

    Raises:
        ValueError: if `formats` is a string, empty, or names a format
            that is not in `EXPORT_FORMATS`.
    """
    try:
        names = () if isinstance(formats, str) else tuple(formats)
    except TypeError:  # not a sequence
        names = ()
    names = tuple(canonical_format(name) for name in names)
    if not names or any(name not in EXPORT_FORMATS for name in names):
        raise ValueError(
            f"{caller} expected `formats` to be a tuple of one or more of "
            f"{', '.join(map(repr, EXPORT_FORMATS))}. Received: formats={formats!r}"
        )
    return tuple(name for name in EXPORT_FORMATS if name in names)


def _by_format(report, difference, spec):
    """`"SavedModel 3.05e-05, ..."`: `difference(name)` of each format of `report`, in `spec`."""
    formats = report["formats"]
    return ", ".join(f"{FORMAT_LABELS[name]} {difference(name):{spec}}" for name in formats)


def differences_line(report, spec=".2e"):
    """`"SavedModel 3.05e-05, TFLite 4.58e-05, ONNX 3.81e-05"`: each checked format's difference.

    `report` is a parity report of `export_and_check` (its `formats` and
    `*_max_abs_diff` entries).
    """
    return _by_format(report, lambda name: report[name + "_max_abs_diff"], spec)


def parity_shapes(shape, export_shape):
    """The input shapes (without the batch axis) a parity check runs every format at.

    `shape` (the given inputs' shape) first; then, for each `None` (dynamic)
    axis of `export_shape` (the exported signature's shape without the
    batch axis), `shape` with that axis at a second size,
    `size + size // 2 + 1`: a file whose axis is not really dynamic fails
    there. E.g. `parity_shapes((32, 80), (None, 80))` is
    `[(32, 80), (49, 80)]`; with no `None` axis, `[shape]`.
    """
    shape = tuple(shape)
    shapes = [shape]
    for axis, size in enumerate(export_shape):
        if size is None:
            shapes.append(shape[:axis] + (shape[axis] + shape[axis] // 2 + 1,) + shape[axis + 1 :])
    return shapes


def resized_inputs(inputs, shape):
    """`inputs` (a batch) with each axis after the batch axis repeated cyclically to `shape`.

    Along an axis of size `n` made `m` long, element `i` is `inputs[..., i % n, ...]`
    (`np.take(inputs, np.arange(m) % n, axis)`): the values stay those of
    real inputs (a longer mel spectrogram is the same frames again).
    """
    for axis, size in enumerate(shape, start=1):
        if inputs.shape[axis] != size:
            inputs = np.take(inputs, np.arange(size) % inputs.shape[axis], axis=axis)
    return inputs


def shape_text(shape):
    """`(None, 80)`: a shape as Python writes a tuple."""
    return str(tuple(shape))


def differences_by_shape_line(report, spec=".2e"):
    """`"(32, 80): SavedModel 0.00e+00, ONNX 1.19e-06; (49, 80): ..."`: each size's differences.

    `report` is a parity report of `export_and_check` (its `formats`,
    `input_shapes` and `*_max_abs_diff_by_shape` entries).
    """
    return "; ".join(
        f"{shape_text(shape)}: "
        + _by_format(report, lambda name: report[name + "_max_abs_diff_by_shape"][k], spec)
        for k, shape in enumerate(report["input_shapes"])
    )


class ParityError(RuntimeError):
    """An exported model's logits differ from the Keras model's."""


def max_abs_diff(a, b):
    """`max |a - b|` in float64, as a Python float."""
    return float(np.max(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64"))))


def parity_inputs(source, input_shape, num_samples, seed=0, data_dir=None):
    """`num_samples` float32 inputs shaped `(num_samples, *input_shape)`.

    `source` is a dataset name (its test images, resized to the input's
    height) or `"random"` (standard normal values, `seed`). A `None` axis of
    `input_shape` takes the dataset images' own size, or `DYNAMIC_AXIS_SIZE`
    for random inputs.

    Raises:
        ValueError: if the dataset's images do not have `input_shape` (or
            it is not an image shape, `(height, width, channels)`).
        DataUnavailableError: if the dataset is not on disk.
    """
    if source == RANDOM:
        shape = tuple(DYNAMIC_AXIS_SIZE if size is None else size for size in input_shape)
        rng = np.random.default_rng(seed)
        return rng.normal(size=(num_samples,) + shape).astype("float32")
    if len(input_shape) != 3:  # not (height, width, channels): no dataset fits
        raise _shape_error(source, "(height, width, channels)", input_shape)
    splits = datasets.load(source, data_dir, input_shape[0], seed=seed)
    if not sizes_dynamic_axes(splits.image_shape, input_shape):
        raise _shape_error(source, splits.image_shape, input_shape)
    return splits.x_test[:num_samples]


def sizes_dynamic_axes(shape, input_shape):
    """Whether `shape` is `input_shape` with a size for each of its `None` axes."""
    return len(shape) == len(input_shape) and all(
        expected in (None, size) for size, expected in zip(shape, input_shape)
    )


def _shape_error(source, image_shape, input_shape):
    return ValueError(
        f"--dataset {source} gives images of shape {image_shape}, the model expects "
        f"{tuple(input_shape)}; --dataset {RANDOM} draws inputs of any shape"
    )
