"""What a parity check compares: its inputs, its measure and its tolerance (no TensorFlow).

The export CLI and the training CLI's `--export` both check exported files
against the Keras model; this module holds what they share, below both.
"""

import numpy as np

from keras_norms import datasets

# Largest |logit difference| an exported file may have from the Keras model.
DEFAULT_TOLERANCE = 1e-4
RANDOM = "random"
# What `parity_inputs` can draw from: a dataset's test images, or random normals.
PARITY_SOURCES = datasets.DATASETS + (RANDOM,)


class ParityError(RuntimeError):
    """An exported model's logits differ from the Keras model's."""


def max_abs_diff(a, b):
    """`max |a - b|` in float64, as a Python float."""
    return float(np.max(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64"))))


def parity_inputs(source, input_shape, num_samples, seed=0, data_dir=None):
    """`num_samples` float32 inputs shaped `(num_samples, *input_shape)`.

    `source` is a dataset name (its test images, resized to the input's
    height) or `"random"` (standard normal values, `seed`).

    Raises:
        ValueError: if the dataset's images do not have `input_shape`.
        DataUnavailableError: if the dataset is not on disk.
    """
    if source == RANDOM:
        rng = np.random.default_rng(seed)
        return rng.normal(size=(num_samples,) + tuple(input_shape)).astype("float32")
    splits = datasets.load(source, data_dir, input_shape[0], seed=seed)
    if splits.image_shape != tuple(input_shape):
        raise ValueError(
            f"--dataset {source} gives images of shape {splits.image_shape}, "
            f"the model expects {tuple(input_shape)}"
        )
    return splits.x_test[:num_samples]
