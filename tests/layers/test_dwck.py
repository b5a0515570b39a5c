"""DWCKNormalization against numpy references of eq. 6-13 and appendix B."""

import keras
import numpy as np
import pytest

from keras_norms.layers import DWCKNormalization
from keras_norms.layers.dwck import derive_kernel_sizes
from tests.layer_test_helper import (
    assert_allclose,
    input_and_variable_gradients,
    numpy,
    run_layer_test,
)


def _numpy_weights(kernels, height, width, padded, remaining):
    """Eq. 10-13 by mixed-radix digits: p_ij = prod_s K_s[i_s, j_s]; uniform, crop, normalize."""
    weights = _numpy_products(kernels, height, width, padded)
    return weights / weights.sum(axis=(0, 1))


def _numpy_products(kernels, height, width, padded):
    """The path products of eq. 10-13, tiled over the unreduced remainder and cropped."""
    channels = kernels[0].shape[2]
    weights = np.zeros(padded + (channels,))
    for i in range(padded[0]):
        for j in range(padded[1]):
            product, ri, rj = np.ones(channels), i, j
            for kernel in kernels:
                kh, kw = kernel.shape[:2]
                product = product * kernel[ri % kh, rj % kw]
                ri, rj = ri // kh, rj // kw
            weights[i, j] = product  # (ri, rj) indexes the unreduced remainder
    return weights[:height, :width]


def _numpy_dwck(x, p, gamma, beta, epsilon, weighted):
    mean = np.einsum("hwc,nhwc->c", p, x) / len(x)  # eq. 7
    if weighted:
        variance = np.einsum("hwc,nhwc->c", p, (x - mean) ** 2) / len(x)  # eq. 8
    else:
        variance = ((x - mean) ** 2).mean(axis=(0, 1, 2))
    return gamma * (x - mean) / np.sqrt(variance + epsilon) + beta, mean, variance  # eq. 9


def _random_layer(x, rng, **kwargs):
    layer = DWCKNormalization(**kwargs)
    layer.build(x.shape)
    for conv in layer.stack:
        conv.kernel.assign(rng.uniform(0.0, 1.0, size=conv.kernel.shape))
    layer.gamma.assign(rng.uniform(0.5, 1.5, size=layer.gamma.shape))
    layer.beta.assign(rng.normal(size=layer.beta.shape))
    return layer


@pytest.mark.parametrize(
    "size, padded, sides",
    [(32, 32, [4, 2, 2, 2]), (16, 16, [4, 2, 2]), (8, 8, [4, 2]), (7, 8, [4, 2]), (12, 12, [4, 3])],
)
def test_automatic_factorization(size, padded, sides):
    (padded_h, padded_w), kernels = derive_kernel_sizes(size, size)
    assert (padded_h, padded_w) == (padded, padded)
    assert kernels == [(k, k) for k in sides]
    assert np.prod(sides) == padded


def test_factorization_of_unequal_sides():
    assert derive_kernel_sizes(32, 12) == ((32, 12), [(4, 4), (2, 3), (2, 1), (2, 1)])


@pytest.mark.parametrize(
    "shape, kernel_sizes, weighted",
    [
        ((5, 8, 8, 3), None, False),
        ((5, 8, 8, 3), None, True),
        ((4, 7, 7, 2), None, False),  # padded to 8x8: padded positions weigh 0
        ((4, 8, 8, 2), [(2, 2), (2, 2)], False),  # 2x2 left unreduced: uniform
        ((4, 12, 6, 2), None, True),
    ],
)
def test_training_and_inference_match_numpy(shape, kernel_sizes, weighted):
    rng = np.random.default_rng(0)
    x = (2.0 + 3.0 * rng.normal(size=shape)).astype("float32")
    layer = _random_layer(
        x, rng, kernel_sizes=kernel_sizes, weighted_variance=weighted, momentum=0.8
    )
    kernels = [conv.kernel.numpy()[:, :, :, 0].astype("float64") for conv in layer.stack]
    p = _numpy_weights(
        kernels, shape[1], shape[2], (layer._padded_h, layer._padded_w), layer._remaining
    )
    assert_allclose(layer.effective_weights(), p, rtol=1e-5, atol=1e-7)
    expected, mean, variance = _numpy_dwck(
        x.astype("float64"), p, layer.gamma.numpy(), layer.beta.numpy(), layer.epsilon, weighted
    )
    assert_allclose(layer(x, training=True), expected, rtol=1e-4, atol=1e-4)
    assert_allclose(layer.moving_mean.numpy(), 0.2 * mean, rtol=1e-4, atol=1e-6)
    assert_allclose(layer.moving_variance.numpy(), 0.8 + 0.2 * variance, rtol=1e-4)
    inference = (
        layer.gamma.numpy() * (x - 0.2 * mean) / np.sqrt(0.8 + 0.2 * variance + layer.epsilon)
        + layer.beta.numpy()
    )
    assert_allclose(layer(x, training=False), inference, rtol=1e-4, atol=1e-4)


def test_folded_map_equals_running_the_depthwise_stack():
    """The DepthwiseConv2D layers, applied to the zero-padded batch, give the same mean."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 7, 7, 4)).astype("float32")
    layer = _random_layer(x, rng)
    pad = ((0, 0), (0, layer._padded_h - 7), (0, layer._padded_w - 7), (0, 0))

    def stack(images):
        for conv in layer.stack:
            images = conv(images)
        return numpy(images).mean(axis=(0, 1, 2))  # uniform over what is left

    weighted_sum = stack(np.pad(x, pad))
    total_weight = stack(np.pad(np.ones_like(x), pad))  # padded zeros weigh nothing
    folded = np.einsum("hwc,nhwc->c", numpy(layer.effective_weights()), x) / len(x)
    assert_allclose(folded, weighted_sum / total_weight, rtol=1e-5, atol=1e-6)


def test_uniform_weights_equal_keras_batch_normalization():
    rng = np.random.default_rng(2)
    x = (1.0 + 2.0 * rng.normal(size=(6, 8, 8, 3))).astype("float32")
    layer = DWCKNormalization(kernel_sizes=[(4, 4), (2, 2)], epsilon=1e-3)
    layer.build(x.shape)
    for conv in layer.stack:
        conv.kernel.assign(np.full(conv.kernel.shape, 0.37))  # any constant: p_ij = 1/(H W)
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    assert_allclose(layer(x, training=True), bn(x, training=True), atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_initial_entries_are_near_the_nth_root(seed):
    keras.utils.set_random_seed(seed)
    layer = DWCKNormalization()
    layer.build((None, 32, 32, 5))
    target = (1 / (32 * 32)) ** (1 / 4)
    for conv in layer.stack:
        kernel = conv.kernel.numpy()
        assert np.all(np.abs(kernel / target - 1) <= 0.1 + 1e-6)
    # Each weight is a product of one entry per kernel, each within 10 % of its target, over
    # their sum: p H W, which is 1 for the arithmetic mean, lies within ((1 -+ 0.1) / (1 +- 0.1))
    # to the number of kernels (a bound, not a sample: the test never fails by chance).
    p = numpy(layer.effective_weights()) * 32 * 32
    bound = (1.1 / 0.9) ** len(layer.stack)
    assert np.all((1 / bound <= p) & (p <= bound))
    assert_allclose(p.mean(axis=(0, 1)), np.ones(5), rtol=1e-5)


def test_weights_stay_non_negative_and_sum_to_one_after_fit():
    rng = np.random.default_rng(3)
    model = keras.Sequential(
        [keras.Input((8, 8, 2)), DWCKNormalization(), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    layer = model.layers[0]
    before = np.concatenate([conv.kernel.numpy().ravel() for conv in layer.stack])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(
        rng.normal(size=(32, 8, 8, 2)), rng.normal(size=(32, 1)), batch_size=8, epochs=3, verbose=0
    )
    kernels = np.concatenate([conv.kernel.numpy().ravel() for conv in layer.stack])
    assert not np.allclose(kernels, before)
    assert kernels.min() >= 0.0
    assert_allclose(numpy(layer.effective_weights()).sum(axis=(0, 1)), 1.0, rtol=1e-6)


def test_all_zero_kernels_give_the_arithmetic_mean():
    x = np.random.default_rng(4).normal(size=(3, 4, 4, 2)).astype("float32")
    layer = DWCKNormalization(kernel_sizes=[(4, 4)], center=False, scale=False)
    layer.build(x.shape)
    layer.stack[0].kernel.assign(np.zeros(layer.stack[0].kernel.shape))
    bn = keras.layers.BatchNormalization(center=False, scale=False)
    assert_allclose(layer(x, training=True), bn(x, training=True), atol=1e-5)


def test_weights_below_the_floor_blend_toward_uniform():
    """Path products summing to s < m (1 % of the initial sum, H W / A = 1 here).

    Eq. 6 by the docstring's formula, `p = w / m + (1 - s / m) / (H W)`:
    non-negative, summing to 1, a blend of `w / s` and the arithmetic mean.
    """
    rng = np.random.default_rng(6)
    layer = DWCKNormalization(kernel_sizes=[(2, 2), (2, 2)])
    layer.build((None, 4, 4, 3))
    layer.stack[0].kernel.assign(rng.uniform(0.0, 1e-3, size=layer.stack[0].kernel.shape))
    layer.stack[1].kernel.assign(rng.uniform(0.2, 0.6, size=layer.stack[1].kernel.shape))
    kernels = [conv.kernel.numpy()[:, :, :, 0].astype("float64") for conv in layer.stack]
    w = _numpy_products(kernels, 4, 4, (4, 4))
    s, m = w.sum(axis=(0, 1)), 0.01
    assert np.all(s < m)
    expected = w / m + (1 - s / m) / 16
    p = numpy(layer.effective_weights())
    assert_allclose(p, expected, rtol=1e-5)
    assert p.min() >= 0 and np.allclose(p.sum(axis=(0, 1)), 1.0, rtol=1e-6)


@pytest.mark.parametrize("zeros", ["all", "half"])
def test_zeroed_one_kernel_stack_has_bounded_gradients(zeros):
    """A one-kernel stack (4x4 maps) whose entries `NonNeg` clipped to zero.

    Eq. 6 divided by the entries' sum, so its gradient grew as 1 / sum: for
    an all-zero kernel (plus a 1e-30 floor) 3e27, and one SGD step sent the
    kernel to 3e26. Now eq. 6 still holds, the gradient stays bounded and
    one SGD step leaves the kernel finite and small.
    """
    rng = np.random.default_rng(5)
    x = (2.0 + rng.normal(size=(8, 4, 4, 3))).astype("float32")
    layer = DWCKNormalization(kernel_sizes=[(4, 4)])
    layer.build(x.shape)
    kernel = layer.stack[0].kernel
    entries = np.zeros(kernel.shape) if zeros == "all" else rng.uniform(0.0, 0.1, kernel.shape)
    kernel.assign(np.where(rng.random(kernel.shape) < 0.5, 0.0, entries))
    p = numpy(layer.effective_weights())
    assert p.min() >= 0
    assert_allclose(p.sum(axis=(0, 1)), 1.0, rtol=1e-6)
    _, _, grads = input_and_variable_gradients(layer, x)
    kernel_grad = grads[[v.path for v in layer.trainable_variables].index(kernel.path)]
    # The helper's loss sums sin(y) over x.size outputs: per output, the bound.
    assert np.all(np.isfinite(kernel_grad)) and np.abs(kernel_grad).max() / x.size < 1e3
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.train_on_batch(x, rng.normal(size=x.shape))
    assert np.all(np.isfinite(kernel.numpy())) and kernel.numpy().max() < 10


@pytest.mark.parametrize("epsilon", [0.0, -1.0, float("nan")])
def test_rejects_an_epsilon_that_is_not_positive(epsilon):
    """`(x - mu) / sqrt(var + epsilon)` would divide by zero or take NaN: refused up front."""
    with pytest.raises(ValueError, match=r"^DWCKNormalization .*`epsilon`.*Received: epsilon="):
        DWCKNormalization(epsilon=epsilon)


def test_layer_test_helper(tmp_path):
    # Trainable: two depthwise kernels, gamma, beta; non-trainable: moving mean and variance.
    run_layer_test(
        lambda: DWCKNormalization(momentum=0.5), (8, 8, 2), (8, 8, 2), 4, 2, str(tmp_path)
    )


@pytest.mark.parametrize(
    "kwargs, shape, match",
    [
        (dict(), (None, 8, 3), r"rank-4 \(N, H, W, C\) input with known H, W and C"),
        (dict(), (None, None, 8, 3), r"Received: input_shape=\(None, None, 8, 3\)"),
        (
            dict(kernel_sizes=[(3, 3)]),
            (None, 8, 8, 3),
            r"stack \[\(3, 3\)\] does not fit a 8x8 map",
        ),
        (dict(kernel_sizes=[(4, 4), (4, 4)]), (None, 8, 8, 3), "does not fit"),
    ],
)
def test_rejects_bad_shapes_at_build(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        DWCKNormalization(**kwargs).build(shape)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kernel_sizes=[]), "non-empty list"),
        (dict(kernel_sizes=[(2, 0)]), r"Received: kernel_sizes=\[\(2, 0\)\]"),
        (dict(momentum=2.0), r"Received: momentum=2.0"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DWCKNormalization(**kwargs)


def test_config_holds_plain_lists_that_json_writes():
    import json

    layer = DWCKNormalization(kernel_sizes=[(4, 4), 2])
    sizes = layer.get_config()["kernel_sizes"]
    assert type(sizes) is list and all(type(k) is list for k in sizes)  # not Keras' TrackedList
    assert json.loads(json.dumps(sizes)) == [[4, 4], [2, 2]]
    assert DWCKNormalization.from_config(layer.get_config()).get_config() == layer.get_config()
