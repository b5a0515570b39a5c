"""Keras callbacks of keras-norms."""

import keras

from keras_norms.data_init import data_dependent_init


class DataDependentInit(keras.callbacks.Callback):
    """Data-dependent initialization of the model's weight-normalized layers when `fit` begins.

    The route of tensorflow-addons' `WeightNormalization(data_init=True)`,
    which initialized each layer at its first call: pass this callback to
    `fit` and `keras_norms.data_dependent_init(model, x_init, ...)` runs at
    `on_train_begin`, before the first training step is traced, on every
    backend. Layers already initialized (a resumed or reloaded model) are
    left as they are, so a second `fit` changes nothing.

    Args:
        x_init: the init batch (array, structure of arrays, or an iterable
            of batches such as a `tf.data.Dataset`), as `data_dependent_init`
            takes it; the paper uses 500 examples (Salimans & Kingma 2016,
            arXiv:1602.07868, section 3).
        training: the `training` flag of the init pass.
        num_examples: how many examples to take from an iterable `x_init`.

    Attributes:
        initialized: the layers the last `fit` initialized (a list, empty
            before `fit`).

    Raises:
        ValueError: as `data_dependent_init` raises it, at the start of `fit`
            (then no variable has changed).

    Examples:
        >>> import keras, numpy as np
        >>> from keras_norms.callbacks import DataDependentInit
        >>> from keras_norms.layers import WeightNormalization
        >>> x = np.random.default_rng(0).normal(3.0, 2.0, (64, 4)).astype("float32")
        >>> wn = WeightNormalization(keras.layers.Dense(2))
        >>> model = keras.Sequential([keras.Input((4,)), wn])
        >>> model.compile("sgd", "mse")
        >>> init = DataDependentInit(x)
        >>> _ = model.fit(x, x[:, :2], epochs=1, verbose=0, callbacks=[init])
        >>> init.initialized == [wn]
        True
    """

    def __init__(self, x_init, training=True, num_examples=500):
        super().__init__()
        self.x_init = x_init
        self.training = training
        self.num_examples = num_examples
        self.initialized = []

    def on_train_begin(self, logs=None):
        self.initialized = data_dependent_init(
            self.model, self.x_init, training=self.training, num_examples=self.num_examples
        )
