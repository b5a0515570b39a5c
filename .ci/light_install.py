"""Run by .ci/light_install.sh in a venv holding keras-norms (no extras) and JAX only."""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np

import keras_norms
from keras_norms import layers as kn

assert keras.backend.backend() == "jax", keras.backend.backend()
for absent in ("tensorflow", "sklearn", "tensorflow_datasets", "ai_edge_litert", "torch"):
    assert importlib.util.find_spec(absent) is None, f"{absent} is installed"
for top_level in ("training", "export"):
    assert importlib.util.find_spec(top_level) is None, f"a top-level {top_level!r} is installed"

rng = np.random.default_rng(0)
x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
y = rng.integers(0, 3, size=16)
inputs = keras.Input((8, 8, 3))
h = kn.WeightNormalization(keras.layers.Conv2D(8, 3, padding="same", use_bias=False))(inputs)
h = kn.MeanOnlyBatchNormalization()(h)
h = kn.NormPropConv2D(8, 3, padding="same")(h)
h = kn.DWCKNormalization()(h)
h = kn.LearnedStatisticsNormalization()(h)
h = kn.NormalizedConv2D(8, 3, padding="same")(h)
h = keras.layers.GlobalAveragePooling2D()(h)
h = kn.NormPropDense(8)(h)
outputs = kn.WeightNormalization(keras.layers.Dense(3))(h)
model = keras.Model(inputs, outputs)
assert len(keras_norms.data_dependent_init(model, x)) == 2
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
model.compile(optimizer="sgd", loss=loss)
history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
assert np.isfinite(history.history["loss"][0])
folded = keras_norms.fold(model)
np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)
assert abs(keras_norms.activation_moments("relu")[0] - 1 / np.sqrt(2 * np.pi)) < 1e-12

images = rng.normal(size=(16, 12, 12, 1)).astype("float32")
builder = keras_norms.models.convpool_cnn_c((12, 12, 1), 3, "wn_mobn")
assert len(keras_norms.data_dependent_init(builder, images)) == 10
builder.compile(optimizer="adam", loss=loss)
assert np.isfinite(builder.fit(images, y, epochs=1, verbose=0).history["loss"][0])

# Commands that need an extra say which, in one line, without a traceback.
for command, extra in [
    (["keras-norms-train", "--epochs", "1", "--output", "run"], "train"),
    (["keras-norms-export", "missing.keras", "--output", "out"], "export"),
]:
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    err = result.stderr.strip().splitlines()
    assert result.returncode == 1, (command, result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and f"keras-norms[{extra}]" in err[-1], err
    print(err[-1])
print("light install: every layer, data_dependent_init, fold and a builder train under JAX")
sys.exit(0)
