"""Image datasets for training and for export parity: the offline digits and tfds images.

Training (`keras_norms.training`) and export (`keras_norms.export`) both load
their images here. scikit-learn (the digits) and tensorflow-datasets are
imported on first use; a missing one is a `MissingDependencyError` naming the
extra to install.
"""

import dataclasses

import numpy as np

from keras_norms.optional import require

DIGITS = "digits"
DIGITS_HARD = "digits_hard"
# The datasets made from scikit-learn's digits, offline: the builders' recipes give their size.
OFFLINE_DATASETS = (DIGITS, DIGITS_HARD)
TFDS_DATASETS = ("cifar10", "cifar100", "svhn_cropped")
DATASETS = OFFLINE_DATASETS + TFDS_DATASETS
# The builders need at least 12x12; the main job trains on 16x16 digits.
DIGITS_DEFAULT_SIZE = 16
DIGITS_TEST_FRACTION = 0.2
# digits_hard: each image rotated by up to HARD_MAX_ROTATION degrees, shifted by up to
# HARD_MAX_SHIFT pixels in each direction and given Gaussian noise of standard deviation
# HARD_NOISE_STD (pixel values 0-16), at 16x16; HARD_TEST_COPIES distorted copies of each
# test image, so that one test image is 1/1800 of the test error, not 1/360.
HARD_MAX_ROTATION = 15.0
HARD_MAX_SHIFT = 3.0
HARD_NOISE_STD = 2.0
HARD_TEST_COPIES = 5


class DataUnavailableError(RuntimeError):
    """The dataset is not on disk and could not be downloaded."""


class SplitError(ValueError):
    """A split asks for more examples than the data holds."""


@dataclasses.dataclass
class ImageSplits:
    """Train, test and (optionally) validation splits as float32 `(N, H, W, C)` images, int
    labels; `x_validation` and `y_validation` are `None` until `hold_out_validation`."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    x_validation: np.ndarray = None
    y_validation: np.ndarray = None

    @property
    def image_shape(self):
        return tuple(self.x_train.shape[1:])


def hold_out_validation(splits, count):
    """`splits` with the last `count` training examples moved into the validation split.

    The digits' training split comes shuffled (stratified, with the split's
    seed) and tensorflow-datasets' in its fixed order, so the validation
    split is the same whatever the run's own seed. `count` 0 returns
    `splits` unchanged.

    Raises:
        SplitError: if `count` leaves no training example.
    """
    if count == 0:
        return splits
    if count >= len(splits.x_train):
        raise SplitError(
            f"a validation split of {count} examples leaves no training example: the "
            f"training split holds {len(splits.x_train)}"
        )
    return dataclasses.replace(
        splits,
        x_train=splits.x_train[:-count],
        y_train=splits.y_train[:-count],
        x_validation=splits.x_train[-count:],
        y_validation=splits.y_train[-count:],
    )


def _resize(images, image_size):
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images.astype("float32")
    import keras  # on first use: the training command's --help loads no Keras

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


def _distort(images, rng):
    """Each 16x16 image rotated, shifted (bilinear, zeros outside) and noised, clipped to 0-16."""
    from scipy import ndimage

    out = np.empty_like(images, dtype="float32")
    for i, image in enumerate(images[..., 0]):
        angle = rng.uniform(-HARD_MAX_ROTATION, HARD_MAX_ROTATION)
        image = ndimage.rotate(image, angle, reshape=False, order=1, mode="constant")
        image = ndimage.shift(image, rng.uniform(-HARD_MAX_SHIFT, HARD_MAX_SHIFT, 2), order=1)
        image = image + rng.normal(0.0, HARD_NOISE_STD, image.shape)
        out[i, ..., 0] = np.clip(image, 0.0, 16.0)
    return out


def load_digits_hard(image_size=DIGITS_DEFAULT_SIZE, seed=0):
    """The digits made harder: fixed random rotations, shifts and noise, a larger test split.

    `load_digits(16, seed)`'s split, every image then distorted once with a
    generator seeded by `seed` (so the dataset is fixed for a split seed):
    rotated uniformly within +-15 degrees, shifted uniformly within +-3
    pixels in each direction (of 16), Gaussian noise of standard deviation 2
    added (pixels 0-16) and clipped to 0-16. The test split holds 5
    distorted copies of each test image (1,800 images); the training split
    one of each (1,437). Then resized bilinearly to `image_size`.
    """
    base = load_digits(DIGITS_DEFAULT_SIZE, seed)
    rng = np.random.default_rng([seed, 1])
    x_train = _distort(base.x_train, rng)
    x_test = _distort(np.repeat(base.x_test, HARD_TEST_COPIES, axis=0), rng)
    return ImageSplits(
        _resize(x_train, image_size),
        base.y_train,
        _resize(x_test, image_size),
        np.repeat(base.y_test, HARD_TEST_COPIES),
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
    if name == DIGITS_HARD:
        return load_digits_hard(image_size or DIGITS_DEFAULT_SIZE, seed=seed)
    if name in TFDS_DATASETS:
        return load_tfds(name, data_dir, image_size, download=download)
    raise ValueError(f"Unknown dataset. Expected one of {DATASETS}. Received: {name!r}")
