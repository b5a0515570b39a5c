"""Learned weighted-mean normalization with depthwise convolution kernels (DWCK)."""

import keras
from keras import ops

from keras_norms.layers.arguments import check_bool, check_int_tuple
from keras_norms.layers.batch_statistics import (
    BatchStatisticsNormalization,
    batch_mean,
    check_image_axis,
)
from keras_norms.layers.precision import Float32Variables

# Initial kernel entries are uniform in (1 +- _INIT_SPREAD) times their target.
_INIT_SPREAD = 0.1
# Eq. 6's normalization divides by the weight sum, at least this fraction of
# the sum the initial kernels give; below it the weights blend toward uniform.
_MIN_WEIGHT_FRACTION = 1e-2


def _smooth(size):
    """Whether `size` factors into 2s and 3s only."""
    for prime in (2, 3):
        while size % prime == 0:
            size //= prime
    return size == 1


def factorize_side(size):
    """Kernel sides whose product is the smallest `>= size` made of 2s and 3s.

    Appendix B: 32 = 4 x 2 x 2 x 2; a side with another prime factor (7) is
    padded to the next such size (8 = 4 x 2). Sides: one 4 first if it
    divides, then 2s, then 3s. Returns `(padded_size, [k1, k2, ...])`.
    """
    padded = size
    while not _smooth(padded):
        padded += 1
    remaining, sides = padded, []
    if remaining % 4 == 0:
        sides.append(4)
        remaining //= 4
    for factor in (2, 3):
        while remaining % factor == 0:
            sides.append(factor)
            remaining //= factor
    return padded, sides


def derive_kernel_sizes(height, width):
    """A stack of `(kh, kw)` kernels reducing a padded `height x width` map to 1x1."""
    padded_h, rows = factorize_side(height)
    padded_w, cols = factorize_side(width)
    depth = max(len(rows), len(cols), 1)
    rows += [1] * (depth - len(rows))
    cols += [1] * (depth - len(cols))
    return (padded_h, padded_w), list(zip(rows, cols))


class DepthwiseConv2D(Float32Variables, keras.layers.DepthwiseConv2D):
    """Keras' `DepthwiseConv2D`, its kernel read in float32 under mixed precision.

    DWCK's stack. It keeps Keras' class name because `.keras` files address
    the stack's variables by the snake-cased class name
    (`depthwise_conv2d`, `depthwise_conv2d_1`, ...).
    """


@keras.saving.register_keras_serializable(package="keras_norms")
class DWCKNormalization(BatchStatisticsNormalization):
    """Batch normalization with a learned weighted mean over each feature map.

    For each channel, `mu = (1/N) sum_k sum_ij p_ij x_ij^(k)` (eq. 7) with
    non-negative weights that sum to one (eq. 6). The weights come from a
    stack of `keras.layers.DepthwiseConv2D` kernels with kernel size equal
    to stride and a `NonNeg` constraint (section 3.1, Figure 3): `p_ij` is
    the product of the stacked kernel entries that cover position `(i, j)`
    (eq. 10-13), times `1/R` where the stack leaves `R` positions unreduced
    (averaged uniformly), divided by the sum of all weights so that eq. 6
    holds exactly. The stack is folded into one `(H, W)` weight map per
    channel and the batch-mean map is reduced with it; the kernels stay the
    trainable variables.

    The variance is, by default, the simple variance around the learned
    mean over batch and positions (the paper's experiments: "a simple
    standard deviation since a weighted one was computationally unstable");
    `weighted_variance=True` uses eq. 8. Then eq. 9 and Keras
    `BatchNormalization`'s scale and offset:
    `y = gamma * (x - mu) / sqrt(var + epsilon) + beta`. In training the
    batch statistics are used and running averages updated with `momentum`;
    at inference the running averages are used, and the layer is the
    per-channel affine map `inference_affine()` returns.

    Kernel sizes are given (`kernel_sizes=[(4, 4), (2, 2), (2, 2), (2, 2)]`,
    the paper's notation) or derived (appendix B): each side is factored into
    4, 2 and 3 (`32 = 4 x 2 x 2 x 2`), a side with another prime factor is
    zero-padded to the next size that factors (7 -> 8), and padded positions
    carry zero weight. Kernel entries start uniform within 10 % of
    `(1/A)^(1/n)` for an n-kernel stack whose kernels cover `A` positions
    (section 3.1.1), so the initial weighted mean is close to the
    arithmetic mean.

    Statistics, the weight map and every variable are float32 under mixed
    precision (variables read with `autocast=False`, inputs cast to float32,
    as Keras `BatchNormalization`); the output is in the compute dtype. The
    training/inference logic is `BatchStatisticsNormalization`'s.

    Args:
        kernel_sizes: list of `(kh, kw)` (or ints) for the stack, or `None`
            to derive it from the input's spatial size.
        axis: the channel axis: `-1` (default, `(N, H, W, C)`) or `1`
            (channels first, `(N, C, H, W)`), as Keras `BatchNormalization`.
        momentum: running-average momentum, as Keras `BatchNormalization`.
        epsilon: positive number added to the variance. Defaults to 1e-3.
        center: learn the offset `beta`.
        scale: learn the scale `gamma`.
        weighted_variance: use eq. 8 instead of the simple variance.
        synchronized: if `True` (TensorFlow backend only), batch statistics
            are all-reduced over the replicas of a `tf.distribute` strategy
            (global-batch statistics, as Keras `BatchNormalization` offers).
            Running averages are aggregated so that replicas agree either way.
        **kwargs: base layer keyword arguments.

    Raises:
        TypeError: if `momentum` or `epsilon` is not a number, or `center`,
            `scale`, `weighted_variance` or `synchronized` is not a bool.
        ValueError: for malformed `kernel_sizes`, an `axis` other than -1,
            3, 1 or -3, a `momentum` outside [0, 1), a non-positive or
            infinite `epsilon`, or `synchronized=True` off TensorFlow; at
            build time, for an input that is not rank 4 with known `H`, `W`,
            `C`, or a stack whose kernels do not divide the map.

    Call arguments:
        inputs: `(N, H, W, C)` float tensor (`(N, C, H, W)` with `axis=1`).
        training: use batch statistics and update the running averages.

    Input shape:
        `(N, H, W, C)` or, with `axis=1`, `(N, C, H, W)`; the output has the
        same shape, in the compute dtype.

    Examples:

    >>> import numpy as np, keras_norms
    >>> layer = keras_norms.layers.DWCKNormalization()
    >>> y = layer(np.random.rand(4, 8, 8, 3).astype("float32"), training=True)
    >>> layer.kernel_sizes
    [(4, 4), (2, 2)]
    >>> round(float(np.asarray(layer.effective_weights()).sum(axis=(0, 1))[0]), 6)
    1.0

    Reference:
        Esposito & Ganaba, "Convolutional Normalization" (arXiv:2102.09685),
        eq. 6-13, section 3.1, 3.1.1, 4 and appendix B.
    """

    def __init__(
        self,
        kernel_sizes=None,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        weighted_variance=False,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, synchronized=synchronized, **kwargs
        )
        check_image_axis(self, axis)
        self.kernel_sizes = None if kernel_sizes is None else _check_kernel_sizes(kernel_sizes)
        self._given_kernel_sizes = self.kernel_sizes
        self.center = check_bool(self, "center", center)
        self.scale = check_bool(self, "scale", scale)
        self.weighted_variance = check_bool(self, "weighted_variance", weighted_variance)

    def build(self, input_shape):
        layout = "(N, H, W, C)" if self.axis in (-1, 3) else "(N, C, H, W)"
        if len(input_shape) != 4 or any(s is None for s in input_shape[1:]):
            raise ValueError(
                f"DWCKNormalization expects a rank-4 {layout} input with known "
                f"H, W and C. Received: input_shape={tuple(input_shape)}"
            )
        super().build(input_shape)
        channels = input_shape[self._channel]
        height, width = (input_shape[a] for a in self._reduction_axes[1:])
        if self._given_kernel_sizes is None:
            (self._padded_h, self._padded_w), self.kernel_sizes = derive_kernel_sizes(height, width)
        else:
            self._padded_h, self._padded_w = height, width
        self._map_size = (height, width)
        self._remaining = self._check_fit(input_shape, height, width)
        area = 1
        for kh, kw in self.kernel_sizes:
            area *= kh * kw
        start = (1.0 / area) ** (1.0 / len(self.kernel_sizes))
        # Initial entries multiply to about 1/area per position: sum H W / area.
        self._min_weight_sum = _MIN_WEIGHT_FRACTION * height * width / area
        self.stack = [
            DepthwiseConv2D(
                (kh, kw),
                strides=(kh, kw),
                use_bias=False,
                depthwise_initializer=keras.initializers.RandomUniform(
                    start * (1 - _INIT_SPREAD), start * (1 + _INIT_SPREAD)
                ),
                depthwise_constraint=keras.constraints.NonNeg(),
                name=f"dwck_{index}",
            )
            for index, (kh, kw) in enumerate(self.kernel_sizes)
        ]
        h, w = self._padded_h, self._padded_w
        for conv, (kh, kw) in zip(self.stack, self.kernel_sizes):
            conv.build((None, h, w, channels))
            h, w = h // kh, w // kw
        if self.scale:
            self.gamma = self._vector("gamma", channels, "ones")
        if self.center:
            self.beta = self._vector("beta", channels, "zeros")
        self.input_spec = keras.InputSpec(ndim=4, axes={a: input_shape[a] for a in (1, 2, 3)})

    def _vector(self, name, size, initializer):
        return self.add_weight(name=name, shape=(size,), initializer=initializer, trainable=True)

    def _check_fit(self, input_shape, height, width):
        h, w = self._padded_h, self._padded_w
        for kh, kw in self.kernel_sizes:
            if h % kh or w % kw:
                raise ValueError(
                    f"DWCKNormalization: the stack {self.kernel_sizes} does not fit a "
                    f"{height}x{width} map (a kernel must divide the map it reduces). "
                    f"Received: input_shape={tuple(input_shape)}"
                )
            h, w = h // kh, w // kw
        return h, w

    def _path_products(self):
        """Eq. 10-13 before eq. 6: float32 `(H, W, C)`, non-negative, unnormalized.

        The stacked kernels' entries multiplied along each position's path,
        tiled uniformly over the positions the stack leaves and cropped to
        the unpadded map.
        """
        weights = None
        for conv in self.stack:
            kernel = ops.cast(conv.kernel[:, :, :, 0], "float32")  # (kh, kw, C)
            if weights is None:
                weights = kernel
                continue
            h, w, channels = ops.shape(weights)
            kh, kw = kernel.shape[0], kernel.shape[1]
            weights = ops.reshape(
                kernel[:, None, :, None, :] * weights[None, :, None, :, :],
                (kh * h, kw * w, channels),
            )
        rows, cols = self._remaining
        height, width = self._map_size
        return ops.tile(weights, (rows, cols, 1))[:height, :width]

    def effective_weights(self):
        """The weight map `p` of eq. 6-7: float32 `(H, W, C)`, each channel sums to 1.

        The path products `w` (eq. 10-13) divided by their sum `s`,
        `p = w / s`, while `s` is at least `m`, 1 % of the sum the initial
        kernels give (`H W / A` for kernels covering `A` positions). Below,
        `p = w / m + (1 - s / m) / (H W)`: still non-negative with sum 1
        (eq. 6), uniform when `NonNeg` has clipped a channel's kernels to
        zero, and with a gradient bounded by about `2 / m`, where `w / s`'s
        grows as `1 / s` (a one-kernel stack of zeros, plus a 1e-30 floor,
        gave gradients of 1e27-1e29). The layout is `(H, W, C)` whatever
        `axis` is.
        """
        weights = self._path_products()
        total = ops.sum(weights, axis=(0, 1), keepdims=True)
        divisor = ops.maximum(total, self._min_weight_sum)
        height, width = self._map_size
        return weights / divisor + (1.0 - total / divisor) / (height * width)

    def batch_statistics(self, x):
        """`(mu, var)` of eq. 7 and the simple (or eq. 8) variance, float32 `(C,)` each."""
        p = self.effective_weights()
        if self._channel == 1:
            p = ops.transpose(p, (2, 0, 1))  # the (C, H, W) layout of one example
        positions = tuple(a - 1 for a in self._reduction_axes[1:])
        mean = ops.sum(p * batch_mean(x, 0, self.synchronized), axis=positions)
        squared = ops.square(x - self._per_channel(mean))
        if self.weighted_variance:
            variance = ops.sum(p * batch_mean(squared, 0, self.synchronized), axis=positions)
        else:
            variance = batch_mean(squared, self._reduction_axes, self.synchronized)
        return mean, variance

    def get_config(self):
        config = {
            "kernel_sizes": None
            if self._given_kernel_sizes is None
            else [list(k) for k in self._given_kernel_sizes],
            "center": self.center,
            "scale": self.scale,
            "weighted_variance": self.weighted_variance,
        }
        return {**super().get_config(), **config}


def _check_kernel_sizes(kernel_sizes):
    try:
        sizes = [check_int_tuple("DWCKNormalization", "kernel_sizes", k, 2) for k in kernel_sizes]
    except (TypeError, ValueError):
        sizes = None
    if not sizes:
        raise ValueError(
            "DWCKNormalization expects `kernel_sizes` as a non-empty list of "
            f"positive ints or (kh, kw) pairs. Received: kernel_sizes={kernel_sizes!r}"
        )
    return sizes
