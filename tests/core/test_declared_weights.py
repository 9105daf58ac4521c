"""A layer that names its prunable weights (tfmot's `get_prunable_weights` protocol)."""

import warnings

import keras
import numpy as np
import pytest
from helpers import numpy

import lth_keras
from lth_keras.layers import MaskedDense, rules, twin_class


class DenseWithBias(keras.layers.Dense):
    def get_prunable_weights(self):
        return [self.kernel, self.bias]


class DenseNothing(keras.layers.Dense):
    def get_prunable_weights(self):
        return []


class Scale(keras.layers.Layer):
    """A layer lth_keras does not know, holding a rank-2 weight in `self.kernel`."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 2), initializer="ones")

    def call(self, x):
        return x @ self.kernel

    def get_prunable_weights(self):
        return [self.kernel]


class Hidden(Scale):
    def build(self, input_shape):
        self.parts = [self.add_weight(shape=(input_shape[-1], 2), initializer="ones")]

    def call(self, x):
        return x @ self.parts[0]

    def get_prunable_weights(self):
        return list(self.parts)


def _model(layer):
    return keras.Sequential([keras.Input((3,)), layer])


def test_declared_weights_are_masked_bias_included():
    model = lth_keras.prunable(_model(DenseWithBias(2, name="d")))
    assert sorted(lth_keras.get_masks(model)) == ["d/bias", "d/kernel"]
    model.layers[0].set_masks({"bias": np.array([True, False])})
    assert numpy(model.layers[0].bias).tolist()[1] == 0.0


def test_a_declaration_replaces_the_table():
    with pytest.raises(ValueError, match="found no weight to mask"):
        lth_keras.prunable(_model(DenseNothing(2, name="d")))
    rows = lth_keras.summary(_model(DenseNothing(2, name="d")), print_fn=lambda line: None)
    reasons = {row["key"]: row["reason"] for row in rows}
    assert reasons["d/kernel"] == "not returned by its get_prunable_weights()"


def test_an_unknown_layer_declaring_its_kernel_is_masked_without_a_warning():
    model = _model(Scale(name="s"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lth_keras.prunable(model)
    assert [str(w.message) for w in caught if "prunable()" in str(w.message)] == []
    assert list(lth_keras.get_masks(model)) == ["s/kernel"]
    mask = np.array([[True, False], [True, True], [False, True]])
    lth_keras.set_masks(model, {"s/kernel": mask})
    out = numpy(model(np.ones((1, 3), "float32")))
    assert out.tolist() == [[2.0, 2.0]]  # the pruned entries read as exactly 0


def test_a_weight_not_held_in_an_attribute_is_refused():
    model = _model(Hidden(name="h"))
    with pytest.raises(ValueError, match="does not hold in an attribute"):
        lth_keras.prunable(model)


def test_the_masked_layers_own_method_is_not_a_declaration():
    assert rules.declared_weights_method(MaskedDense) is None
    assert rules.declared_weights_method(keras.layers.Dense) is None
    twin = twin_class(DenseWithBias)
    assert rules.declared_weights_method(twin) is DenseWithBias.__dict__["get_prunable_weights"]
