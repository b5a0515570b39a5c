"""The training recipes' learning-rate schedules and each builder's registered recipe."""

import pytest

from keras_norms.models import BUILDERS, recipes


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


def test_recipes_follow_the_papers():
    nin = BUILDERS["nin"].recipe
    sgd = nin.optimizer(nin.learning_rate)
    assert (nin.batch_size, nin.learning_rate) == (50, 0.05)
    assert sgd.momentum == 0.9 and sgd.weight_decay == 5e-4
    convpool = BUILDERS["convpool_cnn_c"].recipe
    assert (convpool.batch_size, convpool.learning_rate) == (100, 0.003)


def test_resnet18_recipe_is_micro_batch_sgd():
    recipe = BUILDERS["resnet18"].recipe
    sgd = recipe.optimizer(recipe.learning_rate)
    assert recipe.batch_size == 2 and sgd.momentum == 0.0 and sgd.weight_decay is None
    assert recipe.schedule(0.01, 10)(9) == 0.01
