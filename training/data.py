"""Training inputs: batches for `model.fit` on any backend, and input standardization."""

import keras
import numpy as np

# Element-wise variance floor, as a fraction of the mean element variance.
ELEMENTWISE_VARIANCE_FLOOR = 0.01


class ArrayBatches(keras.utils.PyDataset):
    """Mini-batches of in-memory arrays, reshuffled every epoch with a seeded generator.

    The backend-independent pipeline (JAX, PyTorch, or TensorFlow absent).
    """

    def __init__(self, images, labels, batch_size, shuffle, seed=0):
        super().__init__()
        self.images, self.labels = np.asarray(images, "float32"), labels
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed) if shuffle else None
        self.order = np.arange(len(images))
        self.on_epoch_end()

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.images[rows], self.labels[rows]

    def on_epoch_end(self):
        if self.rng is not None:
            self.order = self.rng.permutation(len(self.images))


def _tf_data_pipeline(images, labels, batch_size, shuffle, seed):
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
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)


def make_pipeline(images, labels, batch_size, shuffle, seed=0):
    """Batches of `(images, labels)` for `model.fit` / `evaluate`.

    On the TensorFlow backend a `tf.data` pipeline (map with AUTOTUNE, cache,
    shuffle, batch, prefetch; sharded by data under multi-worker strategies);
    on JAX and PyTorch an `ArrayBatches` over the numpy arrays.
    """
    if keras.backend.backend() == "tensorflow":
        return _tf_data_pipeline(images, labels, batch_size, shuffle, seed)
    return ArrayBatches(images, labels, batch_size, shuffle, seed)


def standardizer(x_train, elementwise=False):
    """Keras `Normalization` adapted on the training images only.

    Per channel by default, `(x - mean_c) / sqrt(var_c)` with the statistics
    of the initialization-and-batch-normalization notes (eq. 1.13-1.16); with
    `elementwise`, per pixel and channel (NormProp's global data
    normalization, arXiv:1603.01431 section 4.1).
    """
    if elementwise:
        return keras.layers.Normalization(
            axis=(1, 2, 3),
            mean=x_train.mean(axis=0),
            variance=elementwise_variance(x_train),
            name="global_data_normalization",
        )
    layer = keras.layers.Normalization(axis=-1, name="standardize")
    layer.adapt(x_train)
    return layer


def elementwise_variance(x_train, floor_fraction=ELEMENTWISE_VARIANCE_FLOOR):
    """Per-element variance, floored at a fraction of the mean variance.

    Pixels blank in every training image (the digits' margins) have zero
    variance; Keras would divide them by 1e-7 and turn any ink there at test
    time into huge inputs.
    """
    variance = x_train.var(axis=0)
    return np.maximum(variance, floor_fraction * variance.mean())
