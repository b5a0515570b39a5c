"""Test-session set-up: each pytest-xdist worker's share of the cores, and two
logical CPU devices for the tf.distribute tests.

Both must be set before the backend starts its thread pools and devices, so
this runs at collection, before any test module builds a tensor.
"""

import os

# pytest-xdist runs one worker per core (setup.cfg): each worker, and the
# processes its tests start, keeps its share of the cores, or their thread
# pools (TensorFlow's, PyTorch's OpenMP: one thread per core each) oversubscribe them.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    for variable in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(variable, str(max(1, (os.cpu_count() or 1) // WORKERS)))

import keras  # noqa: E402  (after the thread counts, which are read when the backend starts)

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
