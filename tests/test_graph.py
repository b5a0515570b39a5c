"""Graph utilities: layer walk, producers, consumer counts, normalization pairs."""

import keras
import numpy as np
import pytest

from keras_norms.graph import _Graph, _single_producer, iter_layers, normalization_pairs
from keras_norms.layers import MeanOnlyBatchNormalization, WeightNormalization
from tests.layer_test_helper import assert_allclose, assert_array_equal, numpy


# The graph reads normalization_pairs is built on, checked one by one.
def producer(model, tensor):
    return _Graph(model).producer.get(id(tensor))


def consumer_count(model, tensor):
    return _Graph(model).consumers[id(tensor)]


def single_producer(model, layer, candidates):
    return _single_producer(_Graph(model), layer, {id(c): c for c in candidates})


def _branching_model():
    """x -> conv -> c; y = MOBN(c); out = Add(c, y), and c is an output too."""
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")
    c = conv(inputs)
    mobn = MeanOnlyBatchNormalization(name="mobn")
    y = mobn(c)
    out = keras.layers.Add(name="add")([c, y])
    return keras.Model(inputs, [out, c]), conv, mobn, c, y, out


def test_iter_layers_descends_into_nested_models_in_order():
    inner = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, name="d1"), keras.layers.ReLU(name="r1")],
        name="inner",
    )
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(1, name="d2")(inner(keras.layers.Identity(name="id")(inputs)))
    model = keras.Model(inputs, outputs)
    names = [layer.name for layer in iter_layers(model)]
    assert names == [model.layers[0].name, "id", "inner", "d1", "r1", "d2"]


def test_consumer_count_counts_layer_calls_and_model_outputs():
    model, conv, mobn, c, y, out = _branching_model()
    assert consumer_count(model, c) == 3  # MOBN, Add, and a model output
    assert consumer_count(model, y) == 1  # Add
    assert consumer_count(model, out) == 1  # a model output only
    assert consumer_count(model, model.inputs[0]) == 1  # the conv
    twice = keras.layers.Add()([c, c])
    assert consumer_count(keras.Model(model.inputs, twice), c) == 2


def test_consumer_count_ignores_calls_outside_the_model():
    model, conv, mobn, c, y, out = _branching_model()
    keras.layers.ReLU()(c)  # a call on c that no model holds
    assert consumer_count(model, c) == 3
    sub = keras.Model(model.inputs, y)  # shares the nodes of `model`
    assert consumer_count(sub, c) == 1


def test_producer_and_single_producer():
    model, conv, mobn, c, y, out = _branching_model()
    assert producer(model, c) is conv
    assert producer(model, y) is mobn
    assert producer(model, model.inputs[0]) is None
    assert single_producer(model, mobn, [conv]) is conv
    assert single_producer(model, mobn, [mobn]) is None
    add = model.get_layer("add")
    assert single_producer(model, add, [conv, mobn]) is None  # two inputs


def test_consumer_count_in_a_sequential_model():
    dense, bn = keras.layers.Dense(3), keras.layers.BatchNormalization()
    model = keras.Sequential([keras.Input((4,)), dense, bn])
    assert consumer_count(model, dense.output) == 1
    assert consumer_count(model, bn.output) == 1
    assert producer(model, bn.output) is bn


def _pair_names(model, linears, norms, **kwargs):
    pairs = normalization_pairs(model, linears, norms, **kwargs)
    by_id = {id(layer): layer for layer in linears}
    return sorted((by_id[key].name, norm.name) for key, norm in pairs.items())


def test_pairs_only_a_normalization_that_alone_uses_a_linear_output():
    inputs = keras.Input((6, 6, 2))
    alone = WeightNormalization(keras.layers.Conv2D(4, 3, use_bias=False), name="alone")
    shared = keras.layers.Conv2D(4, 1, name="shared")
    first = MeanOnlyBatchNormalization(name="first")
    second = MeanOnlyBatchNormalization(name="second")
    a = first(alone(inputs))
    s = shared(a)
    out = keras.layers.Add()([s, second(s)])
    model = keras.Model(inputs, out)
    assert _pair_names(model, [alone, shared], [first, second]) == [("alone", "first")]


def test_no_pair_when_the_linear_output_is_a_model_output():
    inputs = keras.Input((5,))
    dense, bn = keras.layers.Dense(3, name="dense"), keras.layers.BatchNormalization(name="bn")
    h = dense(inputs)
    model = keras.Model(inputs, [bn(h), h])
    assert _pair_names(model, [dense], [bn]) == []
    assert _pair_names(keras.Model(inputs, bn.output), [dense], [bn]) == [("dense", "bn")]


def test_no_pair_off_the_channel_axis_or_for_a_shared_normalization():
    inputs = keras.Input((3, 6, 6))
    conv = keras.layers.Conv2D(4, 3, data_format="channels_first", name="conv")
    last = MeanOnlyBatchNormalization(axis=-1, name="last")  # a spatial axis here
    model = keras.Model(inputs, last(conv(inputs)))
    assert _pair_names(model, [conv], [last]) == []
    first = MeanOnlyBatchNormalization(axis=1, name="first")
    assert _pair_names(keras.Model(inputs, first(conv.output)), [conv], [first]) == [
        ("conv", "first")
    ]
    x = keras.Input((4,))
    d1, d2 = keras.layers.Dense(3, name="d1"), keras.layers.Dense(3, name="d2")
    norm = MeanOnlyBatchNormalization(name="norm")
    twice = keras.Model(x, keras.layers.Add()([norm(d1(x)), norm(d2(x))]))
    assert _pair_names(twice, [d1, d2], [norm]) == []


def test_pairs_inside_nested_models_but_not_across_their_boundary():
    inner_dense = keras.layers.Dense(3, name="inner_dense")
    inner_bn = keras.layers.BatchNormalization(name="inner_bn")
    inner = keras.Sequential([keras.Input((4,)), inner_dense, inner_bn], name="inner")
    tail = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="tail_dense")])
    outer_bn = keras.layers.BatchNormalization(name="outer_bn")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, outer_bn(tail(inner(inputs))))
    linears = [inner_dense, tail.layers[0]]
    assert _pair_names(model, linears, [inner_bn, outer_bn]) == [("inner_dense", "inner_bn")]


@pytest.mark.parametrize("build", ["subclassed", "unbuilt"])
def test_models_without_a_graph_give_no_pairs(build):
    dense, bn = keras.layers.Dense(3), keras.layers.BatchNormalization()
    if build == "unbuilt":
        model = keras.Sequential([dense, bn])
    else:

        class Chain(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense, self.bn = dense, bn

            def call(self, x):
                return self.bn(self.dense(x))

        model = Chain()
        model(keras.ops.ones((2, 4)))
    assert normalization_pairs(model, [dense], [bn]) == {}
    assert [type(layer) for layer in iter_layers(model)] == [
        keras.layers.Dense,
        keras.layers.BatchNormalization,
    ]


def test_rebuild_replaces_removes_and_copies_each_layer_once():
    from keras_norms.graph import REMOVE, rebuild

    inner = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4, name="inner_dense")], name="inner"
    )
    inputs = keras.Input((4,))
    h = keras.layers.BatchNormalization(name="bn")(inner(inputs))
    wrapper = keras.Sequential([keras.Input((4,)), inner], name="wrapper")  # inner again
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(wrapper(h)))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    new_head = keras.layers.Dense(2, name="head")
    zeros = [np.zeros((4, 2), "float32"), np.full((2,), 7.0, "float32")]

    def replace(layer):
        if layer.name == "bn":
            return REMOVE
        if layer.name == "head":
            return new_head, zeros
        return None

    rebuilt = rebuild(model, replace)
    assert [layer.name for layer in rebuilt.layers][1:] == ["inner", "wrapper", "head"]
    assert rebuilt.get_layer("head") is new_head
    assert_array_equal(numpy(rebuilt(x)), np.full((3, 2), 7.0))  # weights set once built
    copied = rebuilt.get_layer("inner")
    assert copied is not inner and copied.layers[0] is not inner.layers[0]
    assert rebuilt.get_layer("wrapper").layers[0] is copied  # one copy, reused
    assert_array_equal(numpy(copied.layers[0].kernel), numpy(inner.layers[0].kernel))
    # Without the normalization the copy computes inner(inner(x)).
    head = rebuilt.get_layer("head")
    assert_allclose(numpy(rebuilt(x)), numpy(head(inner(inner(x)))), rtol=1e-6)


def test_rebuild_in_float32_copies_a_mixed_precision_model():
    from keras_norms.graph import rebuild

    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, dtype="mixed_float16")
    model = keras.Model(inputs, dense(inputs))
    copy = rebuild(model, float32=True)
    assert copy.layers[1].dtype_policy.compute_dtype == "float32"
    assert_array_equal(numpy(copy.layers[1].kernel), numpy(dense.kernel))
    assert rebuild(model).layers[1].dtype_policy.compute_dtype == "float16"
