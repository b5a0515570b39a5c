"""Training inputs: batches for `model.fit` on any backend, and input standardization."""

import keras
import numpy as np

# Element-wise variance floor, as a fraction of the mean element variance.
ELEMENTWISE_VARIANCE_FLOOR = 0.01
# Training-time augmentations: NormProp's horizontal flips (arXiv:1603.01431,
# section 5.5) and Normalized Convolution's flips and shifts up to 10 % of the
# side (section 3.1).
AUGMENTATIONS = ("none", "flip", "flip_shift")
MAX_SHIFT = 0.1
# Input standardization: per channel (notes eq. 1.13-1.16) or per component (eq. 1.6).
STANDARDIZATIONS = ("channel", "component")


def augmenter(augment, seed=0):
    """Keras preprocessing layers for `augment` (one of AUGMENTATIONS), or None for "none".

    Raises:
        ValueError: for another name.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"Expected augment in {AUGMENTATIONS}. Received: augment={augment!r}")
    if augment == "none":
        return None
    layers = [keras.layers.RandomFlip("horizontal", seed=seed)]
    if augment == "flip_shift":
        layers.append(keras.layers.RandomTranslation(MAX_SHIFT, MAX_SHIFT, seed=seed))
    return keras.Sequential(layers, name=f"augment_{augment}")


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
