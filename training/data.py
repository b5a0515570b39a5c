"""Batches of the training inputs for `model.fit` on any backend."""

import keras
import numpy as np

from keras_norms.training.preprocessing import augmenter


class ArrayBatches(keras.utils.PyDataset):
    """Mini-batches of in-memory arrays, reshuffled every epoch with a seeded generator.

    The backend-independent pipeline (JAX, PyTorch, or TensorFlow absent).
    """

    def __init__(self, images, labels, batch_size, shuffle, seed=0, augment=None):
        super().__init__()
        self.images, self.labels = np.asarray(images, "float32"), labels
        self.batch_size = batch_size
        self.augment = augment
        self.rng = np.random.default_rng(seed) if shuffle else None
        self.order = np.arange(len(images))
        self.on_epoch_end()

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.images[rows]
        if self.augment is not None:
            images = keras.ops.convert_to_numpy(self.augment(images, training=True))
        return images, self.labels[rows]

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


def make_pipeline(images, labels, batch_size, shuffle, seed=0, augment="none"):
    """Batches of `(images, labels)` for `model.fit` / `evaluate`, augmented as `augment` says.

    On the TensorFlow backend a `tf.data` pipeline (map with AUTOTUNE, cache,
    shuffle, batch, prefetch; sharded by data under multi-worker strategies);
    on JAX and PyTorch an `ArrayBatches` over the numpy arrays.
    """
    layers = augmenter(augment, seed)
    if keras.backend.backend() == "tensorflow":
        return _tf_data_pipeline(images, labels, batch_size, shuffle, seed, layers)
    return ArrayBatches(images, labels, batch_size, shuffle, seed, layers)
