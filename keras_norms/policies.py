"""A context manager for the global Keras dtype policy (Keras has only a setter)."""

import contextlib

import keras


@contextlib.contextmanager
def dtype_policy(name):
    """Run the block under the global Keras dtype policy `name`, then restore it.

    `name`: a policy name such as `"mixed_float16"` or `"float32"`, or `None`
    to leave the policy unchanged.
    """
    previous = keras.config.dtype_policy()
    if name is not None:
        keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
