"""Training data: offline digits, tfds loading, standardization and pipelines."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_norms import datasets
from keras_norms.training import data, preprocessing


def test_digits_split_is_fixed_stratified_and_resized():
    splits = datasets.load("digits", image_size=16, seed=0)
    assert splits.x_train.shape == (1437, 16, 16, 1)
    assert splits.x_test.shape == (360, 16, 16, 1)
    assert splits.x_train.dtype == np.float32 and splits.num_classes == 10
    assert 0.0 <= splits.x_train.min() and splits.x_train.max() <= 16.0
    # Stratified: each class has 20 % of its examples in the test split.
    all_counts = np.bincount(np.concatenate([splits.y_train, splits.y_test]))
    assert np.all(np.abs(np.bincount(splits.y_test) - 0.2 * all_counts) <= 1)
    again = datasets.load("digits", image_size=16, seed=0)
    np.testing.assert_array_equal(splits.y_test, again.y_test)
    np.testing.assert_array_equal(splits.x_test, again.x_test)
    other = datasets.load("digits", image_size=16, seed=1)
    assert not np.array_equal(splits.y_test, other.y_test)


def test_digits_resize_keeps_the_images():
    """Averaging the 16x16 images over 2x2 blocks finds their 8x8 originals."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    originals = digits.images.reshape(len(digits.images), -1)
    splits = datasets.load("digits", image_size=16, seed=0)
    small = splits.x_train[:20].reshape(-1, 8, 2, 8, 2).mean(axis=(2, 4)).reshape(20, -1)
    for image, label in zip(small, splits.y_train[:20]):
        distances = np.abs(originals - image).mean(axis=1)
        assert digits.target[np.argmin(distances)] == label
        assert distances.min() < 0.5 * np.median(distances)


def test_digits_hard_are_the_digits_rotated_shifted_and_noised_with_five_test_copies():
    plain = datasets.load("digits", image_size=16, seed=0)
    hard = datasets.load("digits_hard", image_size=16, seed=0)
    assert hard.x_train.shape == (1437, 16, 16, 1) and hard.x_test.shape == (1800, 16, 16, 1)
    np.testing.assert_array_equal(hard.y_train, plain.y_train)
    np.testing.assert_array_equal(hard.y_test, np.repeat(plain.y_test, 5))
    assert 0.0 <= hard.x_train.min() and hard.x_train.max() <= 16.0
    # Distorted: far from their originals, and the five copies of a test image differ.
    difference = np.abs(hard.x_train - plain.x_train).mean(axis=(1, 2, 3))
    assert np.median(difference) > 1.0
    copies = hard.x_test[:5].reshape(5, -1)
    assert np.all(np.abs(copies[1:] - copies[0]).mean(axis=1) > 1.0)
    # Still the digits, but harder: the nearest class mean of the plain training images finds
    # the class of a hard test image well above chance (10 %), far less often than a plain one.
    means = np.stack([plain.x_train[plain.y_train == c].mean(axis=0) for c in range(10)])

    def nearest_mean_accuracy(x, y):
        distances = np.abs(x[:, None] - means[None]).mean(axis=(2, 3, 4))
        return np.mean(np.argmin(distances, axis=1) == y)

    hard_accuracy = nearest_mean_accuracy(hard.x_test, hard.y_test)
    assert 0.25 < hard_accuracy < nearest_mean_accuracy(plain.x_test, plain.y_test) - 0.3
    # Fixed for a split seed.
    again = datasets.load("digits_hard", image_size=16, seed=0)
    np.testing.assert_array_equal(hard.x_test, again.x_test)
    resized = datasets.load("digits_hard", image_size=32, seed=0)
    assert resized.x_train.shape == (1437, 32, 32, 1)


def test_standardizer_uses_training_statistics_per_channel():
    """Eq. 1.13-1.16 of the initialization notes: per-channel mean, biased variance."""
    rng = np.random.default_rng(0)
    x_train = rng.normal(loc=[2.0, -5.0, 10.0], scale=[1.0, 3.0, 0.5], size=(40, 4, 4, 3))
    x_test = x_train + 100.0
    layer = preprocessing.standardizer(x_train.astype("float32"))
    mean = x_train.mean(axis=(0, 1, 2))
    var = ((x_train - mean) ** 2).mean(axis=(0, 1, 2))
    expected = (x_test - mean) / np.sqrt(var)
    np.testing.assert_allclose(layer(x_test.astype("float32")), expected, rtol=1e-4, atol=1e-4)
    standardized = np.asarray(layer(x_train.astype("float32")))
    np.testing.assert_allclose(standardized.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(standardized.std(axis=(0, 1, 2)), 1.0, atol=1e-4)


def _epoch_labels(batches):
    return [np.asarray(y) for _, y in batches]


@pytest.mark.parametrize("make", [data.make_pipeline, data.ArrayBatches])
def test_pipeline_batches_every_example_once_per_epoch(make):
    """The tf.data pipeline and the any-backend `ArrayBatches` batch alike."""
    images = np.arange(10, dtype="float32").reshape(10, 1, 1, 1)
    labels = np.arange(10, dtype="int32")
    batches = _epoch_labels(make(images, labels, batch_size=4, shuffle=True, seed=0))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert np.concatenate(batches).tolist() != list(range(10))  # shuffled
    unshuffled = make(images, labels, batch_size=4, shuffle=False)
    assert np.concatenate(_epoch_labels(unshuffled)).tolist() == list(range(10))


def test_array_batches_reshuffle_every_epoch():
    images = np.arange(20, dtype="float32").reshape(20, 1)
    batches = data.ArrayBatches(images, np.arange(20), batch_size=20, shuffle=True, seed=0)
    first = np.asarray(batches[0][1]).tolist()
    batches.on_epoch_end()
    assert (
        sorted(first) == sorted(np.asarray(batches[0][1]).tolist())
        and first != batches[0][1].tolist()
    )


def test_array_batches_for_data_parallel_train_on_a_multiple_of_the_devices():
    """Shuffled batches leave out the last batch's remainder modulo `multiple`, different
    examples each epoch."""
    images = np.zeros((70, 1), "float32")
    batches = data.ArrayBatches(images, np.arange(70), 16, shuffle=True, seed=0, multiple=4)
    left_out = []
    for _ in range(2):
        epoch = _epoch_labels(batches[i] for i in range(len(batches)))
        assert [len(b) for b in epoch] == [16, 16, 16, 16, 4]  # 70 % 16 = 6 -> 4
        left_out.append(set(range(70)) - set(np.concatenate(epoch).tolist()))
        batches.on_epoch_end()
    assert len(left_out[0]) == 2 and left_out[0] != left_out[1]
    assert data.trained_examples(70, 16, 4) == 68 and data.trained_examples(70, 16, 1) == 70


def test_padded_evaluation_batches_give_the_unpadded_loss_and_accuracy():
    """The evaluation batches of `--strategy data_parallel` pad the last batch to a multiple
    of the devices; weighted, Keras' `evaluate` still gives the means over the real examples,
    a regularization loss included."""
    import keras

    rng = np.random.default_rng(0)
    images, labels = rng.normal(size=(29, 3)).astype("float32"), rng.integers(0, 2, 29)
    batches = data.ArrayBatches(images, labels, 16, shuffle=False, multiple=4)
    sizes = [len(batches[i][0]) for i in range(len(batches))]
    assert sizes == [16, 16] and float(np.sum(batches[1][2] == 0)) == 3  # 13 real, 3 copies
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, kernel_regularizer=keras.regularizers.L2(0.1))]
    )
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
    )
    expected = model.evaluate(images, labels, batch_size=16, verbose=0)
    np.testing.assert_allclose(model.evaluate(batches, verbose=0), expected, rtol=1e-6)


def test_tfds_datasets_load_under_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        splits = datasets.load("cifar10")
    assert splits.x_train.shape == (12, 32, 32, 3)
    assert splits.num_classes == 10
    with tfds.testing.mock_data(num_examples=6):
        resized = datasets.load("svhn_cropped", image_size=16)
    assert resized.x_test.shape == (6, 16, 16, 3)


def test_missing_tfds_data_raises_a_helpful_error(tmp_path):
    with pytest.raises(datasets.DataUnavailableError, match=r"tfds build cifar100 --data_dir DIR"):
        datasets.load("cifar100", data_dir=str(tmp_path), download=False)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(
        ValueError, match=r"Expected one of \('digits', 'digits_hard', 'cifar10'.*Received: 'mnist'"
    ):
        datasets.load("mnist")


def _augmented_epoch(make, images, augment):
    batches = make(images, np.arange(len(images)), len(images), False, 0, augment)
    ((x, y),) = list(batches)
    return np.asarray(x), np.asarray(y)


@pytest.mark.parametrize("make", [data.make_pipeline, data.ArrayBatches])
def test_flip_mirrors_some_images_and_keeps_the_others(make):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(64, 6, 6, 2)).astype("float32")
    layers = preprocessing.augmenter("flip") if make is data.ArrayBatches else "flip"
    x, y = _augmented_epoch(make, images, layers)
    assert y.tolist() == list(range(64))  # labels follow their images
    kept = np.all(np.isclose(x, images), axis=(1, 2, 3))
    mirrored = np.all(np.isclose(x, images[:, :, ::-1]), axis=(1, 2, 3))
    assert np.all(kept | mirrored) and 10 < mirrored.sum() < 54


@pytest.mark.parametrize("make", [data.make_pipeline, data.ArrayBatches])
def test_shift_moves_images_by_at_most_a_tenth_of_their_side(make):
    # One bright pixel in the middle of 40x40 images: a shift of at most 4 pixels.
    images = np.zeros((32, 40, 40, 1), "float32")
    images[:, 20, 20] = 1.0
    layers = preprocessing.augmenter("flip_shift") if make is data.ArrayBatches else "flip_shift"
    x, _ = _augmented_epoch(make, images, layers)
    rows, cols = np.unravel_index(x.reshape(32, -1).argmax(axis=1), (40, 40))
    assert np.all(np.abs(rows - 20) <= 4) and np.all(np.abs(cols - 19.5) <= 4.5)
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # they do move


def test_unknown_augmentation_is_a_value_error():
    with pytest.raises(ValueError, match=r"Expected augment in .*Received: augment='rotate'"):
        preprocessing.augmenter("rotate")
