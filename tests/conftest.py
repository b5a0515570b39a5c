"""Test-session set-up: two logical CPU devices for the tf.distribute tests.

They must be configured before TensorFlow initializes its devices, so this
runs at collection, before any test module builds a tensor.
"""

import keras

LOGICAL_CPUS = 2

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS,
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "tensorflow_only: uses TensorFlow APIs (tf.GradientTape); skipped on other backends",
    )


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == "tensorflow":
        return
    import pytest

    skip = pytest.mark.skip(reason=f"TensorFlow-only test; backend is {keras.backend.backend()}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)
