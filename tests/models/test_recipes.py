"""The training recipes: schedules, optimizers, L2 weight decay, and each builder's recipe."""

import importlib

import keras
import numpy as np
import pytest

from keras_norms.models import BUILDERS
from keras_norms.training import recipes


def test_constant_then_linear_to_zero():
    schedule = recipes.constant_then_linear(1.0, 10)
    assert [schedule(e) for e in range(10)] == pytest.approx([1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2])


def test_halving_scaled_to_the_run():
    # The paper: 200 epochs, halved every 25.
    paper = recipes.halving(0.05, 200)
    assert [paper(e) for e in (0, 24, 25, 50, 199)] == pytest.approx(
        [0.05, 0.05, 0.025, 0.0125, 0.05 / 2**7]
    )
    short = recipes.halving(1.0, 16)
    assert [short(e) for e in range(0, 16, 2)] == pytest.approx([0.5**k for k in range(8)])
    assert recipes.halving(1.0, 3)(2) == 0.25  # period at least one epoch


def test_halving_every_given_period():
    # NormProp's sections 5.1-5.4: halved every 10 epochs, whatever the run's length.
    schedule = recipes.halving(0.05, 50, period=10)
    assert [schedule(e) for e in (0, 9, 10, 29, 30, 49)] == pytest.approx(
        [0.05, 0.05, 0.025, 0.0125, 0.00625, 0.003125]
    )


def test_tenfold_is_normalized_convolutions_schedule():
    # The paper: 0.01, x0.1 after every 30 epochs of 50.
    paper = recipes.tenfold(0.01, 50)
    assert [paper(e) for e in (0, 29, 30, 49)] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    short = recipes.tenfold(0.01, 5)
    assert [short(e) for e in range(5)] == pytest.approx([0.01] * 3 + [0.001] * 2)


@pytest.mark.parametrize("name", sorted(set(recipes.SCHEDULES) - set(recipes.STEP_SCHEDULES)))
def test_a_schedule_without_steps_refuses_a_period(name):
    with pytest.raises(ValueError, match=f"{name}.*Received: period=3"):
        recipes.SCHEDULES[name](0.1, 10, 3)


@pytest.mark.parametrize("name", recipes.STEP_SCHEDULES)
def test_a_step_schedule_steps_every_period_given(name):
    schedule = recipes.SCHEDULES[name](1.0, 10, 3)
    rates = [schedule(epoch) for epoch in range(7)]
    assert rates[0] == rates[2] == 1.0 and rates[3] == rates[5] < 1.0 and rates[6] < rates[5]


@pytest.mark.parametrize(
    "name, cls, momentum",
    [("sgd", keras.optimizers.SGD, 0.0), ("momentum", keras.optimizers.SGD, 0.9)],
)
def test_sgd_optimizers(name, cls, momentum):
    optimizer = recipes.make_optimizer(name, 0.1)
    assert isinstance(optimizer, cls) and optimizer.momentum == momentum
    assert optimizer.weight_decay is None  # weight decay is a loss term (add_weight_decay)


@pytest.mark.parametrize(
    "name, cls", [("rmsprop", keras.optimizers.RMSprop), ("adam", keras.optimizers.Adam)]
)
def test_every_optimizer_is_made_at_the_learning_rate_given(name, cls):
    optimizer = recipes.make_optimizer(name, 0.125)
    assert isinstance(optimizer, cls)  # on PyTorch a backend subclass (torch_adam.Adam)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == 0.125
    assert recipes.make_optimizer(name, 0.125) is not optimizer  # a new one each call


def test_an_unknown_optimizer_is_a_value_error_naming_the_choices():
    with pytest.raises(ValueError, match=r"make_optimizer.*'adam'.*Received: 'lamb'"):
        recipes.make_optimizer("lamb", 0.1)


def test_weight_decay_is_an_l2_term_on_kernels_only():
    # A nested network, as the training CLI builds it: each kernel counted once.
    net = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization()]
        + [keras.layers.Dense(2)]
    )
    inputs = keras.Input((3,))
    model = keras.Model(inputs, net(inputs))
    recipes.add_weight_decay(model, 0.01)
    kernels = [keras.ops.convert_to_numpy(net.layers[i].kernel) for i in (0, 2)]
    penalty = sum(float(loss) for loss in model.losses)  # no bias, gamma or beta term
    expected = 0.01 / 2 * sum(np.sum(kernel**2) for kernel in kernels)
    assert len(model.losses) == 2
    np.testing.assert_allclose(penalty, expected, rtol=1e-6)


def test_weight_decay_gradient_is_coupled():
    # One SGD step on a zero data loss moves W by -lr * weight_decay * W.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False)])
    recipes.add_weight_decay(model, 0.1)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=lambda y, p: 0.0 * p)
    before = keras.ops.convert_to_numpy(model.layers[0].kernel)
    model.train_on_batch(np.zeros((1, 3)), np.zeros((1, 2)))
    after = keras.ops.convert_to_numpy(model.layers[0].kernel)
    np.testing.assert_allclose(after, before * (1 - 0.1), rtol=1e-6)


def test_recipes_follow_the_papers():
    nin = BUILDERS["nin"].recipe
    assert (nin.batch_size, nin.learning_rate, nin.optimizer) == (50, 0.05, "momentum")
    assert (nin.schedule, nin.weight_decay) == ("halving", 5e-4)
    convpool = BUILDERS["convpool_cnn_c"].recipe
    assert (convpool.batch_size, convpool.learning_rate, convpool.optimizer) == (100, 0.003, "adam")
    assert convpool.schedule == "constant_then_linear"


def test_resnet18_recipe_is_normalized_convolutions():
    recipe = BUILDERS["resnet18"].recipe
    assert (recipe.batch_size, recipe.learning_rate, recipe.optimizer) == (2, 0.01, "sgd")
    assert (recipe.schedule, recipe.weight_decay) == ("tenfold", 0.0)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_recipe_names_a_known_optimizer_and_schedule(name):
    recipe = BUILDERS[name].recipe
    assert recipe.optimizer in recipes.OPTIMIZERS and recipe.schedule in recipes.SCHEDULES


def test_the_old_module_path_still_works_for_one_release_with_a_warning():
    import keras_norms.models.recipes as old

    with pytest.warns(DeprecationWarning, match="keras_norms.training.recipes"):
        old = importlib.reload(old)
    assert old.halving is recipes.halving and old.SCHEDULES is recipes.SCHEDULES
    # Its optimizers stay callables of the learning rate.
    assert sorted(old.OPTIMIZERS) == sorted(recipes.OPTIMIZERS)
    optimizer = old.OPTIMIZERS["momentum"](0.25)
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum == 0.9
    assert np.isclose(float(keras.ops.convert_to_numpy(optimizer.learning_rate)), 0.25)
