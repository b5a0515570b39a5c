"""Image datasets for training and for export parity: the offline digits and tfds images.

Training (`keras_norms.training`) and export (`keras_norms.export`) both load
their images here. scikit-learn (the digits) and tensorflow-datasets are
imported on first use; a missing one is a `MissingDependencyError` naming the
extra to install.
"""

import dataclasses

import keras
import numpy as np

from keras_norms.optional import require

DIGITS = "digits"
TFDS_DATASETS = ("cifar10", "cifar100", "svhn_cropped")
DATASETS = (DIGITS,) + TFDS_DATASETS
# The builders need at least 12x12; the main job trains on 16x16 digits.
DIGITS_DEFAULT_SIZE = 16
DIGITS_TEST_FRACTION = 0.2


class DataUnavailableError(RuntimeError):
    """The dataset is not on disk and could not be downloaded."""


@dataclasses.dataclass
class ImageSplits:
    """Train and test splits as float32 `(N, H, W, C)` images, int labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def image_shape(self):
        return tuple(self.x_train.shape[1:])


def _resize(images, image_size):
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images.astype("float32")
    resized = keras.ops.image.resize(
        images.astype("float32"), (image_size, image_size), interpolation="bilinear"
    )
    return keras.ops.convert_to_numpy(resized)


def load_digits(image_size=DIGITS_DEFAULT_SIZE, seed=0):
    """The 1,797 8x8 handwritten digits shipped with scikit-learn.

    A fixed stratified split (20 % test, `seed`), images resized bilinearly
    to `image_size` x `image_size` with one channel; pixel values in [0, 16].
    """
    sklearn = "scikit-learn"
    digits = require("sklearn.datasets", "train", "the digits dataset", sklearn).load_digits()
    model_selection = require("sklearn.model_selection", "train", "the digits dataset", sklearn)
    images = digits.images[..., None]
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        images,
        digits.target,
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=seed,
    )
    size = image_size or DIGITS_DEFAULT_SIZE
    return ImageSplits(
        _resize(x_train, size),
        y_train.astype("int32"),
        _resize(x_test, size),
        y_test.astype("int32"),
        num_classes=10,
    )


def _to_numpy(dataset, batch_size=4096):
    """All (image, label) pairs of a `tf.data` dataset as two numpy arrays."""
    batches = list(dataset.batch(batch_size).as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def load_tfds(name, data_dir=None, image_size=None, download=True):
    """A tensorflow-datasets image dataset's train and test splits in memory.

    Raises:
        DataUnavailableError: if the data is not in `data_dir` and cannot be
            downloaded (no network, or `download=False`).
    """
    feature = f"the {name} dataset"
    tfds = require("tensorflow_datasets", "tensorflow", feature, "tensorflow-datasets")

    try:
        train, test = tfds.load(
            name,
            split=["train", "test"],
            data_dir=data_dir,
            as_supervised=True,
            download=download,
        )
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises many types for missing data.
        raise DataUnavailableError(
            f"dataset {name!r} is not in --data-dir "
            f"{data_dir or tfds.core.constants.DATA_DIR!r} and could not be "
            f"downloaded ({type(error).__name__}: {str(error).splitlines()[0]}). "
            f"On a machine with network access run `tfds build {name} "
            "--data_dir DIR`, copy DIR here and pass --data-dir DIR, or use "
            f"--dataset {DIGITS}, which needs no network."
        ) from None
    num_classes = builder.info.features["label"].num_classes
    x_train, y_train = _to_numpy(train)
    x_test, y_test = _to_numpy(test)
    return ImageSplits(
        _resize(x_train, image_size),
        y_train.astype("int32"),
        _resize(x_test, image_size),
        y_test.astype("int32"),
        num_classes=num_classes,
    )


def load(name, data_dir=None, image_size=None, seed=0, download=True):
    """Load dataset `name` (one of `DATASETS`) as `ImageSplits`."""
    if name == DIGITS:
        return load_digits(image_size or DIGITS_DEFAULT_SIZE, seed=seed)
    if name in TFDS_DATASETS:
        return load_tfds(name, data_dir, image_size, download=download)
    raise ValueError(f"Unknown dataset. Expected one of {DATASETS}. Received: {name!r}")
