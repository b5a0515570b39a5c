"""Compiled TensorFlow training steps give eager gradients (keras_norms.tensorflow_workaround).

Without the workaround, about one step in three of these uses the updated
`g` for the gradient of `v`; 20 steps all exact would then happen with
probability (2/3)^20 < 1e-3.
"""

import importlib
import os
import pkgutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from keras_norms.layers import WeightNormalization

TRIALS = 20
UNITS = 4


class PlainWeightNormDense(keras.layers.Layer):
    """`x . (g v / ||v||)` in plain Keras: the exposure, without keras-norms' layers."""

    def build(self, input_shape):
        self.g = self.add_weight(shape=(UNITS,), initializer="ones")
        self.kernel = self.add_weight(shape=(input_shape[-1], UNITS))

    def call(self, x):
        v = self.kernel
        norm = ops.sqrt(ops.sum(ops.square(v), axis=0, keepdims=True))
        return ops.matmul(x, v * (ops.reshape(self.g, (1, UNITS)) / norm))


def _weight_norm_dense():
    return WeightNormalization(keras.layers.Dense(UNITS, use_bias=False), data_init=False)


def _product_loss(y_true, y_pred):
    return ops.sum(y_pred * y_true, axis=-1)


def _expected_v_step(x, r, v, g):
    """SGD(1) step of `v`: the gradient of mean_n sum(y * r), y = x . (g v / ||v||), eq. 3."""
    norm = np.linalg.norm(v, axis=0)
    grad_w = x.T @ r / len(x)
    grad_g = (grad_w * v).sum(0) / norm
    return g / norm * grad_w - g * grad_g / norm**2 * v


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("make_layer", [PlainWeightNormDense, _weight_norm_dense])
def test_compiled_fit_steps_use_the_variables_before_the_update(make_layer):
    wrong = []
    for trial in range(TRIALS):
        rng = np.random.default_rng(trial)
        x, r = rng.normal(size=(3, 5)), rng.normal(size=(3, UNITS))
        v, g = rng.normal(size=(5, UNITS)), rng.uniform(0.5, 2.0, size=UNITS)
        layer = make_layer()
        model = keras.Sequential([keras.Input((5,)), layer])
        kernel = layer.kernel if isinstance(layer, PlainWeightNormDense) else layer.layer.kernel
        kernel.assign(v.astype("float32"))
        layer.g.assign(g.astype("float32"))
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss=_product_loss)
        model.train_on_batch(x.astype("float32"), r.astype("float32"))
        step = v - np.asarray(kernel, "float64")
        if not np.allclose(step, _expected_v_step(x, r, v, g), rtol=1e-4, atol=1e-5):
            wrong.append(trial)
    assert not wrong, f"steps with a stale gradient: {wrong} of {TRIALS}"


def _python(code, backend="tensorflow"):
    """Run `code` in a fresh interpreter on `backend`; its stdout, stripped."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_importing_keras_norms_or_its_registries_loads_no_backend():
    loaded = _python(
        "import sys, keras_norms, keras_norms.norms, keras_norms.models.registry;"
        "print(sorted(m for m in ('keras', 'tensorflow', 'numpy') if m in sys.modules))"
    )
    assert loaded == "[]"


@pytest.mark.tensorflow_only
def test_the_workaround_is_on_before_any_model_of_ours_is_built():
    options = "tf.config.optimizer.get_experimental_options().get('dependency_optimization')"
    before = _python(f"import keras_norms, tensorflow as tf; print({options})")
    after_builder = _python(
        "import tensorflow as tf; from keras_norms.models import resnet18;"
        f"resnet18((8, 8, 1), 2, 'bn'); print({options})"
    )
    after_layer = _python(
        f"import tensorflow as tf; from keras_norms import layers; print({options})"
    )
    assert (before, after_builder, after_layer) == ("None", "False", "False")


def test_no_submodule_shadows_a_lazily_imported_name():
    import keras_norms

    for module in pkgutil.walk_packages(keras_norms.__path__, "keras_norms."):
        importlib.import_module(module.name)
    for name in keras_norms.__all__:
        value = getattr(keras_norms, name)
        assert callable(value) or name in keras_norms._SUBMODULES, name
