"""Input statistics and variance propagation at initialization, from the notes' equations.

Two things the notes "Initialization and Normalization in DNN and CNN" (sections 1.1-1.2) compute by
hand, computed here on our data and our networks:

- the per-channel standard deviation of an image set, two ways: pooled over all images and
  pixels (eq. 1.16, what batch normalization and the usual input normalization use) and the
  mean over images of each image's own standard deviation (eq. 1.17-1.18), with the notes'
  CIFAR-10 values (eq. 1.19-1.20) to print beside ours;
- the variance of every weight layer's pre-activation in a plain ReLU network at
  initialization, measured, and predicted by the recursions of Glorot & Bengio 2010 and
  He et al. 2015 (arXiv:1502.01852) (the notes, eq. 1.24-1.26, 1.36, 1.44).
"""

import dataclasses
import math

import keras
import numpy as np

# The notes' CIFAR-10 training-set values, eq. 1.19-1.20 (RGB, pixels scaled to [0, 1]).
NOTES_CIFAR10 = {
    "mean": (0.49140105, 0.48215663, 0.44653168),
    "pooled_std": (0.24703284, 0.24348499, 0.26158834),
    "mean_per_image_std": (0.20220193, 0.19931635, 0.20086373),
}

_CHUNK = 1024  # images converted to float64 at a time


def _validated(images, function):
    """The images as a numpy array, or a ValueError naming `function` and what it received."""
    try:
        images = np.asarray(images)
        numeric = np.issubdtype(images.dtype, np.number) and not np.iscomplexobj(images)
    except (TypeError, ValueError):
        numeric = False
    if not numeric or images.ndim != 4 or images.size == 0:
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise ValueError(
            f"{function} expects a non-empty 4-D real array of images (N, H, W, C), "
            f"channels last. Received: images with shape={shape}, dtype={dtype}"
        )
    for start, chunk in _chunks(images):
        if not np.all(np.isfinite(chunk)):
            raise ValueError(
                f"{function} expects finite pixel values. Received: images with a NaN or "
                f"infinite value among images {start}-{start + len(chunk) - 1}"
            )
    return images


def _chunks(images):
    """(first index, float64 chunk of images): CIFAR-10 whole would be 1.2 GB in float64."""
    for start in range(0, len(images), _CHUNK):
        yield start, images[start : start + _CHUNK].astype(np.float64)


def _channel_mean(images):
    """Eq. 1.15: the mean of every channel over all images and pixels."""
    return sum(c.sum(axis=(0, 1, 2)) for _, c in _chunks(images)) / np.prod(images.shape[:3])


def _pooled_std(images):
    mean = _channel_mean(images)
    squares = sum(((c - mean) ** 2).sum(axis=(0, 1, 2)) for _, c in _chunks(images))
    return np.sqrt(squares / np.prod(images.shape[:3]))


def _mean_per_image_std(images):
    return sum(c.std(axis=(1, 2)).sum(axis=0) for _, c in _chunks(images)) / len(images)


def pooled_channel_std(images):
    """The per-channel standard deviation pooled over all images and pixels.

    The square root of the notes, eq. 1.16: the mean
    of `(x[i, s, t, j] - mu[j]) ** 2` over every image `i` and pixel `(s, t)`, around the
    channel mean `mu` of eq. 1.15. It holds the spread between the images' own means as well
    as the spread within each image (pooled variance = mean within-image variance + variance
    of the image means, the law of total variance). Batch normalization's batch variance of a
    convolution's output is this formula.

    Args:
        images: `(N, H, W, C)` channels-last array of any real dtype; computed in float64.

    Returns:
        `(C,)` float64 array.

    Reference: the notes, eq. 1.15-1.16.
    """
    return _pooled_std(_validated(images, "pooled_channel_std"))


def mean_per_image_channel_std(images):
    """The mean over images of each image's own per-channel standard deviation.

    The notes, eq. 1.17 with eq. 1.18: every image's
    standard deviation of channel `j` around its own mean of channel `j` (the divisor is the
    pixel count), averaged over the images. It leaves out the spread between the images'
    means and, as a mean of square roots, is at most the square root of the mean within-image
    variance (Jensen), so it is never above `pooled_channel_std`.

    Args:
        images: `(N, H, W, C)` channels-last array of any real dtype; computed in float64.

    Returns:
        `(C,)` float64 array.

    Reference: the notes, eq. 1.17-1.18.
    """
    return _mean_per_image_std(_validated(images, "mean_per_image_channel_std"))


def standard_deviation_table(images, name):
    """A Markdown table of both standard deviations per channel, with the notes' CIFAR-10.

    Per channel: the mean (eq. 1.15), the pooled standard deviation (the square root of eq.
    1.16), the mean per-image standard deviation (eq. 1.17) and the ratio of the last two, for
    `images` (labelled `name`), then the same for the notes' CIFAR-10 values (eq. 1.19-1.20).
    """
    images = _validated(images, "standard_deviation_table")
    rows = [(name, _channel_mean(images), _pooled_std(images), _mean_per_image_std(images))]
    rows.append(("the notes' CIFAR-10", *(np.array(NOTES_CIFAR10[k]) for k in NOTES_CIFAR10)))
    lines = [
        "| images | channel | mean (eq. 1.15) | pooled std (eq. 1.16) "
        "| mean per-image std (eq. 1.17) | eq. 1.17 / eq. 1.16 |",
        "|---|---|---|---|---|---|",
    ]
    for label, m, p, q in rows:
        for j in range(len(m)):
            lines.append(
                f"| {label} | {j} | {m[j]:.8f} | {p[j]:.8f} | {q[j]:.8f} | {q[j] / p[j]:.4f} |"
            )
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class LayerVariance:
    """One weight layer of `variance_propagation`: the notes' quantities, measured and predicted.

    `fan_in` is n_{l-1}, `weight_variance` V[W^l] (the kernel's mean square), `measured` the
    variance of the pre-activation f^l, `predicted` the equations' chain from the input
    alone, `one_step_predicted` the equations' step from the measured input of this layer.
    """

    name: str
    fan_in: int
    weight_variance: float
    measured: float
    predicted: float
    one_step_predicted: float


def _check_plain(model):
    """The weight layers of a plain Conv/Dense chain with ReLU or linear activations."""
    kernel_layers = []
    for layer in model.layers:
        activation = getattr(layer, "activation", None)
        if activation is not None and getattr(activation, "__name__", None) not in (
            "relu",
            "linear",
        ):
            raise ValueError(
                "variance_propagation expects a plain ReLU chain: activations relu or linear. "
                f"Received: layer {layer.name!r} with activation={activation}"
            )
        if hasattr(layer, "kernel"):
            kernel_layers.append(layer)
        elif layer.weights:
            raise ValueError(
                "variance_propagation expects weights only in layers with a `kernel` "
                "(Conv/Dense). Received: layer "
                f"{layer.name!r} ({type(layer).__name__}) with weights {layer.weights}"
            )
    if not kernel_layers:
        raise ValueError(
            "variance_propagation expects a model with Conv/Dense layers. "
            f"Received: model {model.name!r} with layers {[x.name for x in model.layers]}"
        )
    return kernel_layers


def _pre_activation(layer, inputs):
    """The layer's output with its own activation swapped for linear (then restored)."""
    activation = getattr(layer, "activation", None)
    if activation is not None:
        layer.activation = keras.activations.linear
    try:
        return keras.ops.convert_to_numpy(layer(inputs, training=False)).astype(np.float64)
    finally:
        if activation is not None:
            layer.activation = activation


def variance_propagation(model, x):
    """Measured and predicted pre-activation variance of every weight layer at initialization.

    For a plain feed-forward functional model, a chain of Conv/Dense layers (any layer with a
    `kernel`) with ReLU between them and zero biases, each weight layer `l` in order gets:

    - `fan_in`, n_{l-1}: the product of the kernel's shape but its last axis, `kh * kw * c_in`
      for a convolution (the notes, eq. 1.44: `c (2k + 1)^2`), `c_in` for a dense layer;
    - `weight_variance`, V[W^l]: the mean of the kernel's squares (the initializers are
      zero-mean, so this is the variance of this draw);
    - `measured`: the variance of the pre-activation f^l over examples, positions and
      channels, on `x` in inference mode. When the layer applies ReLU itself
      (`activation="relu"`), the pre-activation is its output with the activation swapped
      for linear for the call, then restored;
    - `predicted`: the equations alone, chained from the input. Layer 1: `n_0 V[W^1] E[x^2]`,
      with `E[x^2]` the mean square of a component of the first weight layer's input (the
      notes, eq. 1.24 and 1.26 with `sum_k E[x_k^2] = n_0 E[x^2]`; eq. 1.38: no ReLU before
      layer 1). Layer l >= 2: `n_{l-1} V[W^l] predicted_{l-1} / 2` (the notes, eq. 1.36 and
      1.44; ReLU keeps half the second moment of a symmetric zero-mean input, eq. 1.35);
    - `one_step_predicted`: one step of eq. 1.36 from measurement, `n_{l-1} V[W^l]` times the
      measured mean square of layer l's input (in the chain, `E[relu(f^{l-1})^2]`), so that
      each layer's own deviation from the equations shows apart from the ones before it.

    He et al.'s initialization, V[W^l] = 2 / n_{l-1} (eq. 1.37, 1.46), keeps `predicted`
    constant from layer 2 on; Glorot & Bengio's, 2 / (n_{l-1} + n_l) (eq. 1.30, 1.45), halves
    it at every layer whose fan-in equals its fan-out.

    The equations hold in expectation over the weight draw. One draw of a narrow network
    strays: the ReLU outputs' shared positive mean and overlapping 3x3 patches give the
    input's second-moment matrix a low effective rank that a few output channels average
    poorly, about 10% a layer at width 64, compounding in `predicted` (15-40% by layer 6);
    `one_step_predicted` shows each layer's share. Average `measured` over draws to compare
    with the chain.

    The equations assume every position sees its full receptive field: with `"same"` padding
    the zeros at the image border lower the effective fan-in there, and on small images
    `measured` falls below `predicted` layer after layer.

    Args:
        model: a functional `keras.Model`, each weight layer called once. A layer with
            weights but no `kernel` (BatchNormalization, a wrapper) or an activation other
            than relu / linear is a ValueError; what lies between the weight layers (ReLU,
            Flatten, pooling) is not checked otherwise.
        x: the input batch, e.g. N(0, 1) samples.

    Returns:
        A list of `LayerVariance`, one per weight layer in the order of `model.layers`.

    Reference: the notes, eq. 1.24-1.26, 1.35-1.38,
    1.44-1.46; Glorot & Bengio 2010; He et al. 2015 (arXiv:1502.01852).
    """
    layers = _check_plain(model)
    inputs_model = keras.Model(model.input, [layer.input for layer in layers])
    inputs = inputs_model(x, training=False)
    if len(layers) == 1:  # a one-output model returns the tensor, not a list
        inputs = [inputs]
    rows, predicted = [], None
    for layer, layer_input in zip(layers, inputs):
        kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
        fan_in = int(np.prod(kernel.shape[:-1]))
        weight_variance = float(np.mean(kernel**2))
        input_square = float(
            np.mean(np.square(keras.ops.convert_to_numpy(layer_input), dtype=np.float64))
        )
        one_step = fan_in * weight_variance * input_square
        predicted = one_step if predicted is None else fan_in * weight_variance * predicted / 2
        measured = float(np.var(_pre_activation(layer, layer_input)))
        rows.append(
            LayerVariance(layer.name, fan_in, weight_variance, measured, predicted, one_step)
        )
    return rows


@dataclasses.dataclass(frozen=True)
class LayerGradientVariance:
    """One weight layer of `gradient_propagation`: the variance of the loss's gradient with
    respect to its pre-activation, measured and predicted.

    `fan_out` is n-hat_{l+1}, the connections from one unit of this layer's output into the
    next weight layer (`kh kw c_out / (sh sw)` for a convolution), `next_weight_variance`
    V[W^{l+1}]; both 0 and the predictions NaN where no convolution or dense layer follows
    through ReLU alone (the last layers, whose gradients start the chain).
    """

    name: str
    fan_out: float
    next_weight_variance: float
    measured: float
    predicted: float
    one_step_predicted: float


def _chain(model, function):
    """The layers after the input of a one-input, one-path functional `model`, checked."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    previous = model.inputs[0]
    for layer in layers:
        if layer.input is not previous:
            raise ValueError(
                f"{function} expects a chain: each layer called once on the output of the "
                f"layer before it. Received: layer {layer.name!r}, whose input is not its "
                "predecessor's output"
            )
        previous = layer.output
    return layers


def _vjp(function, primals, cotangent):
    """The gradient of `<cotangent, function(*primals)>` with respect to each of `primals`
    (numpy arrays), as float64 numpy arrays. Keras has no backend-neutral gradient, so each
    backend's own autodiff computes it, here alone."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        primals = [tf.convert_to_tensor(p) for p in primals]
        with tf.GradientTape() as tape:
            tape.watch(primals)
            outputs = function(*primals)
        gradients = tape.gradient(outputs, primals, output_gradients=tf.constant(cotangent))
    elif backend == "jax":
        import jax

        _, pullback = jax.vjp(function, *[jax.numpy.asarray(p) for p in primals])
        gradients = pullback(jax.numpy.asarray(cotangent))
    elif backend == "torch":
        primals = [keras.ops.convert_to_tensor(p).detach().requires_grad_(True) for p in primals]
        function(*primals).backward(keras.ops.convert_to_tensor(cotangent))
        gradients = [p.grad for p in primals]
    else:
        raise ValueError(
            "gradient_propagation expects the tensorflow, jax or torch backend. "
            f"Received: {backend!r}"
        )
    return [keras.ops.convert_to_numpy(g).astype(np.float64) for g in gradients]


def _connections_out(layer):
    """n-hat: the connections from one input unit into `layer`'s outputs, on average."""
    kernel_shape = tuple(layer.kernel.shape)
    strides = getattr(layer, "strides", (1,) * (len(kernel_shape) - 2))
    return float(np.prod(kernel_shape[:-2]) * kernel_shape[-1] / np.prod(strides))


def gradient_propagation(model, x, seed=0):
    """Measured and predicted variance of the gradient at every weight layer's pre-activation.

    The backward half of the notes' section 1.2 (eq. 1.27 and 1.29: "a similar analysis of
    the propagation of the gradient"; He et al., arXiv:1502.01852, section 2.2, eq. 13-14).
    With the loss `L = sum(g * logits)` for `g` drawn N(0, 1) with `seed` (so that
    `dL/dlogits = g`, variance 1), `delta^l = dL/df^l` is backpropagated to every weight
    layer's pre-activation `f^l` on `x` in inference mode, and for each weight layer:

    - `measured`: the variance of `delta^l` over examples, positions and channels;
    - `predicted`: the equations alone, chained down from the top: where weight layer
      `l + 1` follows `l` through ReLU alone, `V[delta^l] = 1/2 n-hat_{l+1} V[W^{l+1}]
      V[delta^{l+1}]` (ReLU passes half the second moment back, as forward, eq. 1.35), with
      `n-hat_{l+1}` the connections from one unit into layer `l + 1` (`kh kw c_out`,
      divided by the strides: fan-out); elsewhere (the last convolution, before pooling,
      and the dense layer) the chain starts from the measured value;
    - `one_step_predicted`: one step of that recursion from the measured `V[delta^{l+1}]`.

    Xavier's V[W] = 2 / (n_in + n_out) halves `predicted` at every step where fan-in equals
    fan-out, going down as forward going up; Kaiming's fan-in V[W] = 2 / n_in keeps it where
    they are equal (eq. 1.37-1.39). The equations hold in expectation over the weight draw:
    average over draws, and mind the zero borders of `"same"` padding on small maps (see
    `variance_propagation`).

    Args:
        model: a functional chain (each layer once, on its predecessor's output) of weight
            layers with linear activations, ReLU layers and shape-only layers (pooling,
            flatten), as `plain_cnn` builds: the weight layers' outputs are their
            pre-activations.
        x: the input batch.
        seed: the seed of `g`.

    Returns:
        A list of `LayerGradientVariance`, one per weight layer in the model's order.

    Raises:
        ValueError: for a model that is not such a chain, a weight layer with an
            activation other than linear, or another backend than tensorflow, jax, torch.

    Reference: the notes, eq. 1.27, 1.29, 1.35; He
    et al. 2015 (arXiv:1502.01852), eq. 13-14.
    """
    layers = _chain(model, "gradient_propagation")
    weight_layers = _check_plain(model)
    for layer in weight_layers:
        if getattr(layer.activation, "__name__", None) != "linear":
            raise ValueError(
                "gradient_propagation expects weight layers with linear activations (their "
                f"outputs are the pre-activations). Received: layer {layer.name!r} with "
                f"activation={layer.activation}"
            )
    pre_activations = keras.Model(model.inputs, [layer.output for layer in weight_layers])(x)
    probes = [np.zeros(keras.ops.shape(f), "float32") for f in pre_activations]

    def forward(*probes):  # the logits, each weight layer's output plus its (zero) probe
        h, index = keras.ops.convert_to_tensor(x), 0
        for layer in layers:
            h = layer(h, training=False)
            if layer in weight_layers:
                h, index = h + probes[index], index + 1
        return h

    logits_shape = keras.ops.shape(pre_activations[-1])
    cotangent = np.random.default_rng(seed).normal(size=logits_shape).astype("float32")
    deltas = _vjp(forward, probes, cotangent)
    measured = [float(np.var(delta)) for delta in deltas]
    rows, predicted = [], math.nan
    for index in reversed(range(len(weight_layers))):
        layer = weight_layers[index]
        follower = _follower_through_relu(layers, layer, weight_layers)
        if follower is None:
            fan_out = weight_variance = 0.0
            one_step, predicted = math.nan, measured[index]
            chain = math.nan
        else:
            fan_out = _connections_out(follower)
            kernel = keras.ops.convert_to_numpy(follower.kernel).astype(np.float64)
            weight_variance = float(np.mean(kernel**2))
            factor = fan_out * weight_variance / 2
            one_step = factor * measured[index + 1]
            predicted = chain = factor * predicted
        rows.append(
            LayerGradientVariance(
                layer.name, fan_out, weight_variance, measured[index], chain, one_step
            )
        )
    return rows[::-1]


def _follower_through_relu(layers, layer, weight_layers):
    """The weight layer that `layer`'s output reaches through ReLU layers alone, or None."""
    position = layers.index(layer) + 1
    while position < len(layers) and isinstance(layers[position], keras.layers.ReLU):
        position += 1
    if (
        position > layers.index(layer) + 1
        and position < len(layers)
        and layers[position] in weight_layers
    ):
        return layers[position]
    return None


def variance_propagation_table(rows):
    """A Markdown table of `variance_propagation`'s rows, with measured / predicted ratios."""
    lines = [
        "| layer | name | fan-in n_{l-1} | V[W] | measured V[f] | predicted (chain) "
        "| measured / predicted | one-step predicted | measured / one-step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for index, r in enumerate(rows, start=1):
        lines.append(
            f"| {index} | {r.name} | {r.fan_in} | {r.weight_variance:.4e} | {r.measured:.4e} "
            f"| {r.predicted:.4e} | {r.measured / r.predicted:.3f} "
            f"| {r.one_step_predicted:.4e} | {r.measured / r.one_step_predicted:.3f} |"
        )
    return "\n".join(lines) + "\n"


def gradient_propagation_table(rows):
    """A Markdown table of `gradient_propagation`'s rows, with measured / predicted ratios."""
    lines = [
        "| layer | name | fan-out n-hat_{l+1} | V[W^{l+1}] | measured V[dL/df] "
        "| predicted (chain down) | measured / predicted | one-step predicted "
        "| measured / one-step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for index, r in enumerate(rows, start=1):
        if math.isnan(r.predicted):  # the chain starts from the measured value
            cells = f"— | — | {r.measured:.4e} | — | — | — | — |"
        else:
            cells = (
                f"{r.fan_out:g} | {r.next_weight_variance:.4e} | {r.measured:.4e} "
                f"| {r.predicted:.4e} | {r.measured / r.predicted:.3f} "
                f"| {r.one_step_predicted:.4e} | {r.measured / r.one_step_predicted:.3f} |"
            )
        lines.append(f"| {index} | {r.name} | {cells}")
    return "\n".join(lines) + "\n"


def mean_rows(draws):
    """Field by field, the mean over weight draws of `variance_propagation` or
    `gradient_propagation` rows of one network (a list of row lists, one per draw); the
    names from the first draw."""
    first = draws[0]
    fields = [f.name for f in dataclasses.fields(first[0]) if f.name != "name"]
    return [
        dataclasses.replace(
            row,
            **{
                f: type(getattr(row, f))(np.mean([getattr(d[i], f) for d in draws])) for f in fields
            },
        )
        for i, row in enumerate(first)
    ]


def _plot_measured_and_predicted(ax, curves):
    for label, rows in curves.items():
        index = np.arange(1, len(rows) + 1)
        (line,) = ax.plot(index, [r.predicted for r in rows], label=f"{label}: predicted")
        ax.plot(
            index,
            [r.measured for r in rows],
            "o",
            color=line.get_color(),
            label=f"{label}: measured",
        )
    ax.set_xlabel("weight layer l")
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)


def plot_variance_propagation(curves, path, gradients=None):
    """Plot measured (markers) and predicted (lines) variance per layer, log scale, as a PNG:
    the pre-activations' and, given `gradients`, beside them the gradients'.

    Args:
        curves: a dict from a label (e.g. `"xavier, 30 layers"`) to `variance_propagation`
            rows.
        path: where the PNG goes.
        gradients: None, or a dict from the same labels to `gradient_propagation` rows.

    Returns:
        `path`.
    """
    from keras_norms.training.figures import pyplot

    plt = pyplot()
    panels = 1 if gradients is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
    ax = axes[0, 0]
    _plot_measured_and_predicted(ax, curves)
    ax.set_ylabel("V[f^l] (pre-activation)")
    ax.set_title("Pre-activation variance at initialization")
    ax.legend(fontsize="x-small")
    if gradients is not None:
        ax = axes[0, 1]
        _plot_measured_and_predicted(ax, gradients)
        ax.set_ylabel("V[dL/df^l] (gradient)")
        ax.set_title("Gradient variance at initialization")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def normprop_jacobian(network, x, batch_size=100):
    """The RMS singular value of each NormProp ReLU layer's Jacobian, on `x` (Arpit et al.,
    arXiv:1603.01431, section 3.4).

    A NormProp layer outputs `o_i = (ReLU(z_i) - c2) / c1` with `z_i = gamma_i W_i x /
    ||W_i|| + beta_i` (eq. 9-12), so row `i` of its Jacobian with respect to its input `x` is
    `gamma_i 1(z_i > 0) W_i / (c1 ||W_i||)`, of squared norm `gamma_i^2 1(z_i > 0) / c1^2`.
    The mean squared singular value of the Jacobian is the trace of `J J^T` over the output
    units (an output unit of a convolution is a channel at a position), so, averaged over
    the examples of `x`,

        rms = sqrt(mean over examples and output units of gamma_i^2 1(z_i > 0)) / c1.

    Section 3.4 derives `rms ~ sqrt(0.5 / c1^2) = 1.21` for `gamma = 1` and half the units
    active, and section 4.3.1 initializes `gamma` to `1 / 1.21`, the Jacobian factor, for
    `rms ~ 1`; training then moves `gamma` and the active fraction. Unit `i` counts as active
    where its output is above `-c2 / c1`, the output of `ReLU(z) = 0` as the layer computes it
    in float32. Layers with another activation (PReLU, none) are left out.

    Args:
        network: a functional or Sequential `keras.Model` holding `NormPropDense` /
            `NormPropConv2D` layers in its graph.
        x: its inputs (as it takes them), an array of `N` examples.
        batch_size: examples per inference batch.

    Returns:
        `{layer name: rms}`, floats, in the network's layer order; `{}` without such layers.
    """
    from keras_norms.layers import NormPropConv2D, NormPropDense

    layers = [
        layer
        for layer in network.layers
        if isinstance(layer, (NormPropDense, NormPropConv2D))
        and layer.get_config()["activation"] == "relu"
    ]
    if not layers:
        return {}
    outputs = keras.Model(network.inputs, [layer.output for layer in layers]).predict(
        x, batch_size=batch_size, verbose=0
    )
    if len(layers) == 1:
        outputs = [outputs]
    values = {}
    for layer, output in zip(layers, outputs):
        c2, c1 = (np.float32(c) for c in layer.post_activation_moments())
        inactive = (np.float32(0.0) - c2) / c1  # ReLU(z) = 0, as the layer computes it
        gamma = keras.ops.convert_to_numpy(layer.gamma).astype(np.float64)
        channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
        if channels_first and output.ndim > 2:
            gamma = gamma.reshape((-1,) + (1,) * (output.ndim - 2))
        squares = np.where(np.asarray(output) > inactive, gamma**2, 0.0)
        values[layer.name] = float(np.sqrt(np.mean(squares)) / float(c1))
    return values
