"""A workaround for stale gradients in TensorFlow's compiled training step.

In a `tf.function` training step (Keras' `model.fit` on the TensorFlow
backend without XLA), TensorFlow 2.21 with Keras 3.15 sometimes computes the
gradient of a variable from the value that the same step's
`optimizer.apply_gradients` has already written into another variable: the
gradient of `v` in `w = g * v / ||v||` uses the updated `g` in about one step
in three. Any layer whose gradient of one variable reads another variable
updated before it is exposed: weight normalization (`v` after `g`), NormProp
(`gamma` after the kernel), DWCK's stacked kernels. It happens without
keras-norms (a 25-line Keras layer computing `g * v / ||v||` shows it), and
not in eager mode, under XLA (`jit_compile=True`), or with Grappler's
dependency optimizer off. Importing keras-norms on the TensorFlow backend
turns that one Grappler pass off; set it back with
`tf.config.optimizer.set_experimental_options({"dependency_optimization": True})`.
"""

import keras


def disable_dependency_optimization():
    """Turn off Grappler's dependency optimizer on the TensorFlow backend; else nothing."""
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"dependency_optimization": False})
