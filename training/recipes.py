"""The optimizers, learning-rate schedules and L2 weight decay that recipes name.

Each builder declares its paper's recipe (`keras_norms.models.registry.Recipe`:
batch size, learning rate, an optimizer and a schedule by name) in its
registry entry; the training CLI uses it as its defaults, can override every
part of it (`--optimizer`, `--schedule`, `--decay-every`, `--weight-decay`)
and makes the optimizer and schedule here.

The names are data (no Keras at import): the training command's parser
lists them without loading Keras.
"""


def constant_then_linear(base, epochs, period=None):
    """Constant for the first half of the epochs, then linear decay to zero.

    Epoch `e` (0-based) uses `base * min(1, 2 * (epochs - e) / epochs)`,
    the schedule of Salimans & Kingma's CIFAR-10 experiments
    (arXiv:1602.07868, section 5.1). `period` must be None (no steps).
    """
    _no_period("constant_then_linear", period)
    return lambda epoch: base * min(1.0, 2.0 * (epochs - epoch) / epochs)


def constant(base, epochs, period=None):
    """The same learning rate for every epoch. `period` must be None (no steps)."""
    _no_period("constant", period)
    return lambda epoch: base


def _no_period(name, period):
    if period is not None:
        raise ValueError(
            f"The {name!r} schedule has no decay period; only step schedules take one. "
            f"Received: period={period}"
        )


def step_decay(factor, fraction, reference):
    """A schedule multiplied by `factor` every `period` epochs.

    `period` defaults to `fraction` of the run, at least one epoch, so a
    paper's schedule keeps its shape in a shorter run; `reference` names it.
    """

    def schedule(base, epochs, period=None):
        period = period or max(1, round(epochs * fraction))
        return lambda epoch: base * factor ** (epoch // period)

    schedule.__doc__ = f"x{factor:g} every {fraction:g} of the run by default ({reference})."
    return schedule


# NormProp (arXiv:1603.01431, section 5.5) halves every 25 of 200 epochs on
# CIFAR and every 5 of 25 on SVHN; sections 5.1-5.4 halve every 10 epochs.
halving = step_decay(0.5, 1 / 8, "NormProp's CIFAR schedule, every 25 of 200 epochs")
# Normalized Convolution (section 3.1): 0.01, x0.1 after every 30 epochs of 50.
tenfold = step_decay(0.1, 30 / 50, "Normalized Convolution's schedule, every 30 of 50 epochs")

SCHEDULES = {
    "constant": constant,
    "constant_then_linear": constant_then_linear,
    "halving": halving,
    "tenfold": tenfold,
}
# The schedules that step, and so take a period (`decay_every`).
STEP_SCHEDULES = ("halving", "tenfold")

# Each optimizer a recipe names, as the Keras optimizer config `keras.optimizers.get` takes
# (the learning rate added by `make_optimizer`); Keras' defaults otherwise.
OPTIMIZERS = {
    "sgd": {"class_name": "SGD", "config": {}},
    "momentum": {"class_name": "SGD", "config": {"momentum": 0.9}},
    "rmsprop": {"class_name": "RMSprop", "config": {}},
    "adam": {"class_name": "Adam", "config": {}},
}


def make_optimizer(name, learning_rate):
    """A new Keras optimizer `name` (a key of `OPTIMIZERS`) at `learning_rate`.

    Raises:
        ValueError: for another name.
    """
    if name not in OPTIMIZERS:
        raise ValueError(
            f"make_optimizer expects an optimizer among {sorted(OPTIMIZERS)}. Received: {name!r}"
        )
    import keras

    identifier = OPTIMIZERS[name]
    config = {**identifier["config"], "learning_rate": learning_rate}
    return keras.optimizers.get({"class_name": identifier["class_name"], "config": config})


def add_weight_decay(model, weight_decay):
    """Add the L2 penalty `weight_decay / 2 * sum ||W||^2` over `model`'s kernels to its loss.

    Weight decay as the papers apply it, a term of the loss (its gradient is
    `weight_decay * W`, and adaptive optimizers rescale it), not Keras'
    decoupled `weight_decay` optimizer argument. The kernels are the trainable
    variables of two or more dimensions: biases, scales and normalization
    parameters are not decayed. Sets each kernel's Keras `regularizer`, which
    `model.losses` (and so `fit`) sums.
    """
    import keras

    if weight_decay:
        for variable in model.trainable_variables:
            if len(variable.shape) >= 2:
                variable.regularizer = keras.regularizers.L2(weight_decay / 2)
