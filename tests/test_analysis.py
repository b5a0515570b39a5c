"""keras_norms.training.analysis against numpy written from the notes' equations.

Standard deviations (notes eq. 1.15-1.18): a loop-based float64 reference, a constructed set
whose two estimates are known in closed form, the law of total variance, and eq. 1.17 <= eq.
1.16 on hypothesis-drawn images (derandomized, 30 examples).

Variance propagation (notes eq. 1.24-1.26, 1.36, 1.44): exact numpy for dense layers, a
hand-computed chain for a 3-layer net, Xavier's halving, and He et al.'s constant variance.
The last holds in expectation over the weights: one draw of a width-64 ReLU conv net already
strays 15-40% by layer 6 (the ReLU outputs' shared positive mean and the overlap of 3x3
patches leave the input's second-moment matrix a low effective rank, so the 64 output
channels average little), so the measured variance is averaged over 20 draws, which keeps
every layer within 25% (a fixed seed; resampled draws fail about 1 time in 200). `"valid"`
padding, on 13x13 inputs down to 1x1: with `"same"` padding on small images the zero border
lowers the effective fan-in, and the measured variance falls below the chain layer after
layer (a test below shows it).
"""

import math
import os

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_norms.training import analysis
from keras_norms.training.analysis import (
    NOTES_CIFAR10,
    mean_per_image_channel_std,
    plot_variance_propagation,
    pooled_channel_std,
    standard_deviation_table,
    variance_propagation,
    variance_propagation_table,
)

# --- per-channel standard deviations (eq. 1.15-1.18) -----------------------------------------


def _loop_reference(images):
    """Eq. 1.15-1.18 with Python loops over float64 scalars: (mean, pooled std, per-image std)."""
    n, h, w, c = images.shape
    means, pooled, per_image = [], [], []
    for j in range(c):
        pixels = [float(images[i, s, t, j]) for i in range(n) for s in range(h) for t in range(w)]
        mu = math.fsum(pixels) / len(pixels)  # eq. 1.15
        pooled.append(math.sqrt(math.fsum((p - mu) ** 2 for p in pixels) / len(pixels)))
        stds = []
        for i in range(n):
            own = [float(images[i, s, t, j]) for s in range(h) for t in range(w)]
            mu_i = math.fsum(own) / len(own)  # eq. 1.18
            stds.append(math.sqrt(math.fsum((p - mu_i) ** 2 for p in own) / len(own)))
        means.append(mu)
        per_image.append(math.fsum(stds) / n)  # eq. 1.17
    return np.array(means), np.array(pooled), np.array(per_image)


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "int16"])
def test_standard_deviations_match_loop_reference(dtype):
    rng = np.random.default_rng(0)
    offsets = rng.normal(size=(6, 1, 1, 3)) * 20
    images = (rng.normal(size=(6, 5, 4, 3)) * [10, 30, 5] + 100 + offsets).clip(0, 255)
    images = images.astype(dtype)
    _, pooled, per_image = _loop_reference(images)
    np.testing.assert_allclose(pooled_channel_std(images), pooled, rtol=1e-12)
    np.testing.assert_allclose(mean_per_image_channel_std(images), per_image, rtol=1e-12)
    assert pooled_channel_std(images).dtype == np.float64


def test_constructed_offsets_give_closed_form_stds():
    """Pixels +-s around an image mean of +-d: per-image std s, pooled sqrt(s^2 + d^2)."""
    s, d = np.array([0.5, 2.0, 3.0]), np.array([1.0, 0.25, 4.0])
    checker = np.where(np.indices((4, 6)).sum(axis=0) % 2 == 0, 1.0, -1.0)[..., None]
    signs = np.array([1, -1, -1, 1, 1, -1])[:, None, None, None]  # balanced: mean offset 0
    images = 7.0 + signs * d + checker * s
    np.testing.assert_allclose(mean_per_image_channel_std(images), s, rtol=1e-13)
    np.testing.assert_allclose(pooled_channel_std(images), np.sqrt(s**2 + d**2), rtol=1e-13)


def test_law_of_total_variance():
    """Pooled variance = mean within-image variance + variance of the image means."""
    rng = np.random.default_rng(1)
    images = rng.gamma(2.0, size=(40, 6, 6, 3)) * rng.uniform(0.5, 2, size=(40, 1, 1, 3))
    images += rng.normal(size=(40, 1, 1, 3)) * 3
    within = images.var(axis=(1, 2)).mean(axis=0)
    between = images.mean(axis=(1, 2)).var(axis=0)
    np.testing.assert_allclose(pooled_channel_std(images) ** 2, within + between, rtol=1e-12)
    # Jensen: the mean of the per-image stds is at most the root of the mean variance.
    assert np.all(mean_per_image_channel_std(images) <= np.sqrt(within))
    assert np.all(mean_per_image_channel_std(images) < 0.8 * pooled_channel_std(images))


def test_chunked_pass_equals_one_pass(monkeypatch):
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, size=(7, 3, 5, 2)).astype("uint8")
    whole = pooled_channel_std(images), mean_per_image_channel_std(images)
    monkeypatch.setattr(analysis, "_CHUNK", 2)
    np.testing.assert_allclose(pooled_channel_std(images), whole[0], rtol=1e-13)
    np.testing.assert_allclose(mean_per_image_channel_std(images), whole[1], rtol=1e-13)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=4),
        elements=st.floats(-1e3, 1e3),
    )
)
def test_mean_per_image_std_never_exceeds_pooled(images):
    """Eq. 1.17 <= sqrt(eq. 1.16): Jensen, then the law of total variance."""
    pooled = pooled_channel_std(images)
    assert np.all(mean_per_image_channel_std(images) <= pooled * (1 + 1e-9) + 1e-9)


def test_standard_deviation_table():
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 1, size=(10, 4, 4, 3))
    table = standard_deviation_table(images, "uniform")
    lines = table.splitlines()
    assert len(lines) == 2 + 3 + 3
    assert lines[0].count("|") == 7 and "eq. 1.16" in lines[0] and "eq. 1.17" in lines[0]
    pooled = pooled_channel_std(images)
    assert f"| uniform | 0 | {images[..., 0].mean():.8f} | {pooled[0]:.8f} |" in table
    for j in range(3):
        notes = [NOTES_CIFAR10[k][j] for k in ("mean", "pooled_std", "mean_per_image_std")]
        ratio = notes[2] / notes[1]
        row = f"| the notes' CIFAR-10 | {j} | {notes[0]:.8f} | {notes[1]:.8f} | {notes[2]:.8f} "
        assert row + f"| {ratio:.4f} |" in table
    assert "| 0.8185 |" in table  # the notes' CIFAR-10: 0.20220193 / 0.24703284


BAD_IMAGES = {
    "3-D": np.zeros((4, 4, 3)),
    "5-D": np.zeros((1, 2, 4, 4, 3)),
    "no images": np.zeros((0, 4, 4, 3)),
    "no channels": np.zeros((2, 4, 4, 0)),
    "NaN": np.where(np.arange(48).reshape(1, 4, 4, 3) == 5, np.nan, 0.0),
    "infinity": np.full((2, 2, 2, 1), np.inf),
    "strings": np.full((1, 2, 2, 1), "a"),
    "None": None,
}


@pytest.mark.parametrize("bad", list(BAD_IMAGES))
@pytest.mark.parametrize(
    "name", ["pooled_channel_std", "mean_per_image_channel_std", "standard_deviation_table"]
)
def test_bad_images(name, bad):
    function = getattr(analysis, name)
    arguments = (BAD_IMAGES[bad], "x") if name == "standard_deviation_table" else (BAD_IMAGES[bad],)
    with pytest.raises(ValueError, match=rf"^{name} expects .*Received: images"):
        function(*arguments)


# --- variance propagation (eq. 1.24-1.26, 1.36, 1.44) ------------------------------------------

DEPTH, WIDTH, SIZE, N, DRAWS, TOLERANCE = 6, 64, 13, 8, 20, 0.25


def _plain_net(initializer, depth=DEPTH, width=WIDTH, size=SIZE, padding="valid", channels=8):
    inputs = keras.Input((size, size, channels))
    h = inputs
    for index in range(depth):
        h = keras.layers.Conv2D(width, 3, padding=padding, kernel_initializer=initializer)(h)
        if index < depth - 1:
            h = keras.layers.ReLU()(h)
    return keras.Model(inputs, h)


def _averaged(initializer, draws=DRAWS, **net):
    """Measured and predicted variance per layer, each averaged over `draws` weight draws."""
    size = net.get("size", SIZE)
    x = np.random.default_rng(0).normal(size=(N, size, size, 8)).astype("float32")
    draws_rows = []
    for seed in range(draws):
        keras.utils.set_random_seed(seed)
        draws_rows.append(variance_propagation(_plain_net(initializer, **net), x))
    measured = np.mean([[r.measured for r in rows] for rows in draws_rows], axis=0)
    predicted = np.mean([[r.predicted for r in rows] for rows in draws_rows], axis=0)
    return measured, predicted, draws_rows


def _within(measured, predicted, tolerance=TOLERANCE):
    return bool(np.all(np.abs(measured / predicted - 1) <= tolerance))


@pytest.fixture(scope="module")
def kaiming():
    return _averaged("he_normal")


def test_kaiming_measured_matches_chain(kaiming):
    measured, predicted, draws_rows = kaiming
    assert [r.fan_in for r in draws_rows[0]] == [9 * 8] + [9 * WIDTH] * (DEPTH - 1)
    assert _within(measured, predicted), measured / predicted
    # He et al.: V[W] = 2 / n_{l-1} keeps the chain constant from layer 2 on (eq. 1.37).
    np.testing.assert_allclose(predicted[1:] / predicted[1], 1, rtol=0.05)


def test_kaiming_comparison_fails_without_the_relu_half(kaiming):
    """Eq. 1.26's identity-activation chain (no 1/2, eq. 1.24) is off by 2^(l-1)."""
    measured, _, draws_rows = kaiming
    no_half = []
    for rows in draws_rows:
        chain = [rows[0].predicted]
        for r in rows[1:]:
            chain.append(r.fan_in * r.weight_variance * chain[-1])
        no_half.append(chain)
    no_half = np.mean(no_half, axis=0)
    assert not _within(measured, no_half)
    assert np.all(measured[1:] / no_half[1:] < 0.7)  # the comparison fails from layer 2 on


def test_same_padding_on_small_images_falls_below_chain():
    """The zero border: on 8x8 a 3x3 tap is inside for (2 * 2/3 + 6) / 8 of positions per axis."""
    measured, predicted, _ = _averaged("he_normal", draws=4, size=8, padding="same")
    ratio = measured / predicted
    np.testing.assert_allclose(ratio[0], ((2 * 2 / 3 + 6) / 8) ** 2, rtol=0.03)
    assert np.all(np.diff(ratio) < 0.05) and ratio[-1] < 0.75


def test_xavier_chain_halves_when_fan_in_equals_fan_out():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(N, SIZE, SIZE, 8)).astype("float32")
    rows = variance_propagation(_plain_net("glorot_normal"), x)
    predicted = np.array([r.predicted for r in rows])
    steps = np.array([r.fan_in * r.weight_variance / 2 for r in rows[1:]])
    np.testing.assert_allclose(predicted[1:] / predicted[:-1], steps, rtol=1e-12)
    # 2 / (n_{l-1} + n_l) = 1 / n_{l-1} (eq. 1.45 with c = h); 36864 draws: V[W] within 3%.
    np.testing.assert_allclose(steps, 0.5, rtol=0.03)
    measured = np.array([r.measured for r in rows])
    assert measured[-1] / measured[1] < 4 * 0.5 ** (DEPTH - 2)  # the chain says 1/16


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor).astype(np.float64)


@pytest.mark.parametrize("depth", [1, 2])
def test_dense_layers_against_numpy(depth):
    """One-step, chained and measured variance of dense layers, exactly in numpy."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((12,))
    h = keras.layers.Dense(16, activation="relu", name="d1")(inputs)
    if depth == 2:
        h = keras.layers.Dense(5, name="d2", kernel_initializer="he_uniform")(h)
    model = keras.Model(inputs, h)
    x = (np.random.default_rng(1).normal(size=(200, 12)) * 1.7 + 0.3).astype("float32")
    rows = variance_propagation(model, x)
    assert len(rows) == depth
    w1 = _numpy(model.get_layer("d1").kernel)
    f1 = x.astype(np.float64) @ w1
    assert (rows[0].name, rows[0].fan_in) == ("d1", 12)
    np.testing.assert_allclose(rows[0].weight_variance, np.mean(w1**2), rtol=1e-12)
    one_step = 12 * np.mean(w1**2) * np.mean(x.astype(np.float64) ** 2)
    np.testing.assert_allclose(rows[0].one_step_predicted, one_step, rtol=1e-6)
    np.testing.assert_allclose(rows[0].predicted, one_step, rtol=1e-6)
    np.testing.assert_allclose(rows[0].measured, np.var(f1), rtol=1e-5)  # before the ReLU
    assert model.get_layer("d1").activation is keras.activations.relu  # the ReLU is back
    if depth == 2:
        w2 = _numpy(model.get_layer("d2").kernel)
        relu = np.maximum(f1, 0)
        np.testing.assert_allclose(
            rows[1].one_step_predicted, 16 * np.mean(w2**2) * np.mean(relu**2), rtol=1e-5
        )
        np.testing.assert_allclose(rows[1].predicted, 16 * np.mean(w2**2) * one_step / 2, rtol=1e-6)
        np.testing.assert_allclose(rows[1].measured, np.var(relu @ w2), rtol=1e-5)


def _three_layer_net(own_activation):
    inputs = keras.Input((7, 7, 2))
    h = keras.layers.Conv2D(
        6, 3, kernel_initializer="he_uniform", activation="relu" if own_activation else None
    )(inputs)
    if not own_activation:
        h = keras.layers.Activation("relu")(h)
    h = keras.layers.Conv2D(5, 2, kernel_initializer="glorot_uniform")(h)
    h = keras.layers.ReLU()(keras.layers.Flatten()(h))
    init = keras.initializers.RandomNormal(stddev=0.3)
    return keras.Model(inputs, keras.layers.Dense(3, kernel_initializer=init)(h))


def test_predicted_chain_is_the_hand_product_for_three_layers():
    keras.utils.set_random_seed(2)
    model = _three_layer_net(own_activation=True)
    x = (np.random.default_rng(2).normal(size=(16, 7, 7, 2)) * 1.5 + 0.5).astype("float32")
    rows = variance_propagation(model, x)
    v = [np.mean(_numpy(layer.kernel) ** 2) for layer in model.layers if hasattr(layer, "kernel")]
    n = [3 * 3 * 2, 2 * 2 * 6, 4 * 4 * 5]
    p1 = n[0] * v[0] * np.mean(x.astype(np.float64) ** 2)
    p2 = n[1] * v[1] * p1 / 2
    p3 = n[2] * v[2] * p2 / 2
    assert [r.fan_in for r in rows] == n
    np.testing.assert_allclose([r.weight_variance for r in rows], v, rtol=1e-12)
    np.testing.assert_allclose([r.predicted for r in rows], [p1, p2, p3], rtol=1e-10)

    # The conv's own ReLU and a separate Activation layer give the same rows.
    separate = _three_layer_net(own_activation=False)
    separate.set_weights(model.get_weights())
    for own, apart in zip(rows, variance_propagation(separate, x)):
        for field in ("fan_in", "weight_variance", "measured", "predicted", "one_step_predicted"):
            np.testing.assert_allclose(getattr(own, field), getattr(apart, field), rtol=1e-5)
    assert model.layers[1].activation is keras.activations.relu  # restored


@pytest.mark.parametrize(
    "extra, match",
    [
        (lambda h: keras.layers.BatchNormalization()(h), "weights only in layers with a `kernel`"),
        (lambda h: keras.layers.Activation("tanh")(h), "activations relu or linear"),
        (lambda h: keras.layers.Dense(2, activation="sigmoid")(h), "activation="),
    ],
)
def test_variance_propagation_bad_models(extra, match):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, extra(keras.layers.Dense(3)(inputs)))
    with pytest.raises(ValueError, match=f"^variance_propagation expects .*{match}"):
        variance_propagation(model, np.ones((2, 4), "float32"))
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.ReLU()(inputs))
    with pytest.raises(ValueError, match="Conv/Dense layers. Received: model"):
        variance_propagation(model, np.ones((2, 4), "float32"))


def test_table_and_plot(tmp_path):
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(3).normal(size=(4, 9, 9, 8)).astype("float32")
    curves = {
        f"{name}, 3 layers": variance_propagation(_plain_net(name, depth=3, width=8, size=9), x)
        for name in ("he_normal", "glorot_normal")
    }
    rows = curves["he_normal, 3 layers"]
    table = variance_propagation_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + 3 and lines[0].count("|") == 10
    r = rows[2]
    assert lines[4].startswith(f"| 3 | {r.name} | {9 * 8} | {r.weight_variance:.4e} |")
    assert f"| {r.measured / r.predicted:.3f} |" in lines[4]
    path = plot_variance_propagation(curves, str(tmp_path / "variance.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 5000


# --- gradient propagation (eq. 1.27, 1.29; He et al. eq. 13-14) --------------------------------


def _dense_chain():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((8,))
    h = keras.layers.ReLU()(keras.layers.Dense(16, name="d1", bias_initializer="ones")(inputs))
    h = keras.layers.ReLU()(keras.layers.Dense(12, name="d2")(h))
    return keras.Model(inputs, keras.layers.Dense(4, name="d3")(h))


def test_gradient_variances_against_numpy_backpropagation():
    model = _dense_chain()
    x = np.random.default_rng(4).normal(size=(300, 8)).astype("float32")
    rows = analysis.gradient_propagation(model, x, seed=5)
    (w1, b1), (w2, b2), (w3, _) = (
        [_numpy(v) for v in model.get_layer(name).weights] for name in ("d1", "d2", "d3")
    )
    f1 = x.astype(np.float64) @ w1 + b1
    f2 = np.maximum(f1, 0) @ w2 + b2
    g = np.random.default_rng(5).normal(size=(300, 4)).astype("float32").astype(np.float64)
    delta2 = (g @ w3.T) * (f2 > 0)
    delta1 = (delta2 @ w2.T) * (f1 > 0)
    np.testing.assert_allclose(
        [r.measured for r in rows], [np.var(delta1), np.var(delta2), np.var(g)], rtol=1e-5
    )
    # The recursion: 1/2 fan-out V[W^{l+1}] V[delta^{l+1}], chained down from the top.
    assert [r.fan_out for r in rows] == [12.0, 4.0, 0.0]
    v2, v3 = np.mean(w2**2), np.mean(w3**2)
    np.testing.assert_allclose(rows[1].one_step_predicted, 4 * v3 * np.var(g) / 2, rtol=1e-5)
    np.testing.assert_allclose(rows[1].predicted, 4 * v3 * np.var(g) / 2, rtol=1e-5)
    np.testing.assert_allclose(rows[0].one_step_predicted, 12 * v2 * np.var(delta2) / 2, rtol=1e-5)
    np.testing.assert_allclose(rows[0].predicted, 12 * v2 * rows[1].predicted / 2, rtol=1e-5)
    assert math.isnan(rows[2].predicted) and math.isnan(rows[2].one_step_predicted)


def test_strided_convolution_fan_out_and_kaiming_fan_out_keeps_the_gradient():
    """n-hat = kh kw c_out / strides; with V[W] = 2 / n-hat the gradient would keep its
    variance, but for the border: backward, the inputs at the border of a "valid" convolution
    feed fewer outputs. Per axis, c3 (3 taps, stride 2, 8 -> 3) takes 3 x 3 / 8 = 1.125 taps
    per input against 1.5, c2 (3 taps, 10 -> 8) 8 x 3 / 10 = 2.4 against 3: the measured
    variance is (1.125 / 1.5)^2 = 0.5625 of the prediction at c2, and 0.5625 (2.4 / 3)^2 =
    0.36 at c1 (averaged over 10 draws)."""
    ratios = []
    for draw in range(10):
        keras.utils.set_random_seed(draw)
        init = keras.initializers.VarianceScaling(2.0, "fan_out", "normal")
        inputs = keras.Input((12, 12, 16))
        h = keras.layers.Conv2D(16, 3, kernel_initializer=init, name="c1")(inputs)
        h = keras.layers.ReLU()(h)
        h = keras.layers.Conv2D(16, 3, kernel_initializer=init, name="c2")(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.Conv2D(16, 3, strides=2, kernel_initializer=init, name="c3")(h)
        model = keras.Model(inputs, h)
        x = np.random.default_rng(draw).normal(size=(8, 12, 12, 16)).astype("float32")
        rows = analysis.gradient_propagation(model, x, seed=draw)
        assert rows[1].fan_out == 3 * 3 * 16 / 4 and rows[0].fan_out == 3 * 3 * 16
        ratios.append([r.measured / r.predicted for r in rows[:2]])
    np.testing.assert_allclose(np.mean(ratios, axis=0), [0.36, 0.5625], rtol=0.1)


def test_gradient_propagation_refuses_what_it_cannot_chain():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    with pytest.raises(ValueError, match="^gradient_propagation expects weight layers with linear"):
        analysis.gradient_propagation(model, np.ones((2, 4), "float32"))
    a = keras.layers.Dense(3)(inputs)
    model = keras.Model(inputs, keras.layers.Add()([a, keras.layers.Dense(3)(inputs)]))
    with pytest.raises(ValueError, match="^gradient_propagation expects a chain"):
        analysis.gradient_propagation(model, np.ones((2, 4), "float32"))


def test_mean_rows_gradient_table_and_two_panel_plot(tmp_path):
    x = np.random.default_rng(6).normal(size=(20, 8)).astype("float32")
    draws = []
    for draw in range(2):
        keras.utils.set_random_seed(draw)
        draws.append(analysis.gradient_propagation(_dense_chain(), x, seed=draw))
    rows = analysis.mean_rows(draws)
    assert [r.name for r in rows] == ["d1", "d2", "d3"]
    np.testing.assert_allclose(rows[0].measured, (draws[0][0].measured + draws[1][0].measured) / 2)
    assert math.isnan(rows[2].predicted)
    lines = analysis.gradient_propagation_table(rows).splitlines()
    assert len(lines) == 2 + 3 and all(line.count("|") == 10 for line in lines)
    r = rows[0]
    assert lines[2].startswith(f"| 1 | d1 | 12 | {r.next_weight_variance:.4e} | {r.measured:.4e} |")
    assert lines[4] == f"| 3 | d3 | — | — | {rows[2].measured:.4e} | — | — | — | — |"
    forward = {"dense": variance_propagation(_dense_chain(), x)}
    path = plot_variance_propagation(forward, str(tmp_path / "v.png"), gradients={"dense": rows})
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# --- NormProp's Jacobian (Arpit et al. section 3.4) ---------------------------------------------


def test_normprop_jacobian_is_the_rms_singular_value_of_each_example_jacobian():
    from keras_norms.layers import NormPropDense

    keras.utils.set_random_seed(7)
    inputs = keras.Input((6,))
    layer = NormPropDense(4, activation="relu", name="np1")
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(7)
    layer.gamma.assign(rng.uniform(0.5, 2.0, 4).astype("float32"))
    layer.beta.assign(rng.normal(size=4).astype("float32"))
    x = rng.normal(size=(50, 6)).astype("float32")
    values = analysis.normprop_jacobian(model, x)
    # Reference: each example's Jacobian by its formula, then numpy's singular values.
    w = _numpy(layer.kernel)  # (6, 4)
    unit = w / np.linalg.norm(w, axis=0)
    gamma, beta = _numpy(layer.gamma), _numpy(layer.beta)
    c2, c1 = layer.post_activation_moments()
    squares = []
    for example in x.astype(np.float64):
        z = gamma * (example @ unit) + beta
        jacobian = ((gamma * (z > 0))[:, None] * unit.T) / c1  # (4, 6)
        squares.append(np.linalg.svd(jacobian, compute_uv=False) ** 2)
    np.testing.assert_allclose(values["np1"], np.sqrt(np.mean(squares)), rtol=1e-5)


def test_normprop_jacobian_is_one_at_initialization_and_1_21_without_the_factor():
    from keras_norms.layers import NormPropConv2D

    keras.utils.set_random_seed(8)
    inputs = keras.Input((10, 10, 16))
    layer = NormPropConv2D(32, 3, activation="relu", name="npc")
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(8).normal(size=(20, 10, 10, 16)).astype("float32")
    # Half the units active (symmetric z, beta 0): sqrt(0.5 gamma^2) / c1, gamma = 1 / 1.21.
    np.testing.assert_allclose(analysis.normprop_jacobian(model, x)["npc"], 1.0, rtol=0.05)
    layer.gamma.assign(np.ones(32, "float32"))
    np.testing.assert_allclose(analysis.normprop_jacobian(model, x)["npc"], 1.21, rtol=0.05)
    plain = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    assert analysis.normprop_jacobian(plain, x) == {}
