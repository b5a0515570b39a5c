"""Batches of the training inputs for `model.fit` on any backend."""

import keras
import numpy as np

from keras_norms.training.preprocessing import augmenter


def trained_examples(examples, batch_size, multiple=1):
    """The examples an epoch of shuffled `ArrayBatches` trains on: all but the last
    batch's remainder modulo `multiple`."""
    return examples - examples % batch_size % multiple


class ArrayBatches(keras.utils.PyDataset):
    """Mini-batches of in-memory arrays, reshuffled every epoch with a seeded generator.

    The backend-independent pipeline (JAX, PyTorch, or TensorFlow absent).
    With `multiple` > 1 (`keras.distribution.DataParallel`, which splits
    every batch evenly across its devices) each batch's size is a multiple
    of it. Shuffled (training) batches leave out the last batch's remainder,
    fewer than `multiple` examples and different ones each epoch
    (`trained_examples`). Unshuffled (evaluation) batches pad the last batch
    with copies of an example weighted 0 and yield `(x, y, sample_weight)`
    with every real example weighted `rows / examples`: Keras' `evaluate`
    averages its loss over rows (`"sum_over_batch_size"`, then a mean
    weighted by batch size), so the loss and the weighted metrics come out
    as the means over the real examples, as without padding.
    """

    def __init__(self, images, labels, batch_size, shuffle, seed=0, augment=None, multiple=1):
        super().__init__()
        self.images, self.labels = np.asarray(images, "float32"), np.asarray(labels)
        self.batch_size = batch_size
        self.augment = augment
        self.rng = np.random.default_rng(seed) if shuffle else None
        self.order = np.arange(len(images))
        self.weights = None
        if shuffle:
            self.rows = trained_examples(len(images), batch_size, multiple)
        else:
            padding = -len(images) % batch_size % multiple
            self.rows = len(images) + padding
            if padding:
                self.order = np.concatenate([self.order, np.zeros(padding, int)])
                self.weights = np.full(self.rows, self.rows / len(images), "float32")
                self.weights[len(images) :] = 0.0
        self.on_epoch_end()

    def __len__(self):
        return -(-self.rows // self.batch_size)

    def __getitem__(self, index):
        batch = slice(index * self.batch_size, min((index + 1) * self.batch_size, self.rows))
        rows = self.order[batch]
        images = self.images[rows]
        if self.augment is not None:
            images = keras.ops.convert_to_numpy(self.augment(images, training=True))
        if self.weights is None:
            return images, self.labels[rows]
        return images, self.labels[rows], self.weights[batch]

    def on_epoch_end(self):
        if self.rng is not None:
            self.order = self.rng.permutation(len(self.images))


def _tf_data_pipeline(images, labels, batch_size, shuffle, seed, augment):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.map(
        lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE
    ).cache()
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    # In-memory data has no files to shard: each worker of a multi-worker
    # strategy takes its share of every global batch instead.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.batch(batch_size)
    if augment is not None:
        dataset = dataset.map(
            lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def make_pipeline(images, labels, batch_size, shuffle, seed=0, augment="none", multiple=1):
    """Batches of `(images, labels)` for `model.fit` / `evaluate`, augmented as `augment` says.

    On the TensorFlow backend a `tf.data` pipeline (map with AUTOTUNE, cache,
    shuffle, batch, prefetch; sharded by data under multi-worker strategies);
    on JAX and PyTorch an `ArrayBatches` over the numpy arrays, every batch
    a `multiple` of examples (`distribution.batch_multiple`).
    """
    layers = augmenter(augment, seed)
    if keras.backend.backend() == "tensorflow":
        return _tf_data_pipeline(images, labels, batch_size, shuffle, seed, layers)
    return ArrayBatches(images, labels, batch_size, shuffle, seed, layers, multiple)
