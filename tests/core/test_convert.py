"""prunable() and strip_masks(), and model-level mask access."""

import keras
import numpy as np
import pytest
from helpers import numpy, stored

import lth_keras
from lth_keras import _compat
from lth_keras.layers import MaskedLayerMixin


def _functional():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(x)
    x = keras.layers.Flatten()(x)
    inner = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(6, name="inner_fc")], name="head"
    )
    x = inner(x)
    outputs = keras.layers.Dense(2, name="out")(x)
    return keras.Model(inputs, outputs)


def _sequential():
    return keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(20, 4, name="emb"),
            keras.layers.Conv1D(3, 2, name="conv1d"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2, name="out"),
        ]
    )


def _input_for(model):
    rng = np.random.default_rng(0)
    shape = (2, *model.inputs[0].shape[1:])
    if model.inputs[0].dtype == "int32":
        return rng.integers(0, 20, size=shape)
    return rng.normal(size=shape).astype("float32")


@pytest.mark.parametrize("make", [_functional, _sequential], ids=["functional", "sequential"])
def test_prunable_masks_in_place_keeping_layers_and_weights(make):
    model = make()
    layers = _compat.flatten_layers(model)
    x = _input_for(model)
    before = model.predict(x, verbose=0)
    values = [w.numpy().copy() for w in model.weights]
    assert lth_keras.prunable(model) is model
    assert _compat.flatten_layers(model) == layers  # the same layer objects
    kernels = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Embedding)
    kernels += (keras.layers.SeparableConv2D,)
    with_kernels = [layer for layer in layers if isinstance(layer, kernels)]
    assert all(isinstance(layer, MaskedLayerMixin) for layer in with_kernels)
    assert all(isinstance(m, keras.layers.Layer) for m in lth_keras.masked_layers(model))
    np.testing.assert_allclose(model.predict(x, verbose=0), before, rtol=1e-6, atol=1e-6)
    plain_weights = [w for w in model.weights if not w.name.endswith(("_mask", "_initial"))]
    for w, v in zip(plain_weights, values, strict=True):
        np.testing.assert_array_equal(w.numpy(), v)
    for layer in lth_keras.masked_layers(model):
        for attr, var in ((w.name, w.variable) for w in layer.get_lottery_weights()):
            np.testing.assert_array_equal(getattr(layer, f"{attr}_initial").numpy(), var.numpy())
        assert all(m.all() for m in layer.get_masks().values())


def test_prunable_nested_model_and_names():
    masked = lth_keras.prunable(_functional())
    names = [layer.name for layer in lth_keras.masked_layers(masked)]
    assert names == ["conv", "sep", "inner_fc", "out"]
    assert list(lth_keras.get_masks(masked)) == [
        "conv/kernel",
        "sep/depthwise_kernel",
        "sep/pointwise_kernel",
        "inner_fc/kernel",
        "out/kernel",
    ]


def test_prunable_shared_layer_is_masked_once():
    shared = keras.layers.Dense(4, name="shared")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, shared(shared(inputs)))
    masked = lth_keras.prunable(model)
    assert [layer.name for layer in lth_keras.masked_layers(masked)] == ["shared"]
    x = np.ones((1, 4), "float32")
    np.testing.assert_allclose(numpy(masked(x)), numpy(model(x)), rtol=1e-6)


def test_prunable_refuses_an_unbuilt_model_and_changes_nothing():
    model = keras.Sequential([keras.layers.Dense(3, name="fc")])
    with pytest.raises(ValueError, match=r"needs a built model.*model.build\(input_shape\)"):
        lth_keras.prunable(model)
    assert type(model.layers[0]) is keras.layers.Dense
    model.build((None, 2))
    assert list(lth_keras.get_masks(lth_keras.prunable(model))) == ["fc/kernel"]


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc = keras.layers.Dense(2, name="dense")

    def call(self, x):
        return self.fc(x)


def test_subclassed_model_is_masked_and_stripped():
    model = _Subclassed()
    x = np.ones((2, 3), "float32")
    model(x)
    lth_keras.prunable(model)
    assert list(lth_keras.get_masks(model)) == ["dense/kernel"]
    masks = {"dense/kernel": np.array([[1, 0], [0, 1], [1, 1]], bool)}
    lth_keras.set_masks(model, masks)
    plain = lth_keras.strip_masks(model, in_place=True)
    assert plain is model and type(model.fc) is keras.layers.Dense
    assert len(model.weights) == 2
    np.testing.assert_array_equal(model.fc.kernel.numpy() != 0, masks["dense/kernel"])


def test_prunable_without_supported_layers_raises():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dropout(0.1)])
    with pytest.raises(ValueError, match="no weight to mask.*Dropout"):
        lth_keras.prunable(model)


def test_strip_masks_of_plain_model_raises():
    with pytest.raises(ValueError, match="no masked layers"):
        lth_keras.strip_masks(_sequential())


@pytest.mark.parametrize("make", [_functional, _sequential], ids=["functional", "sequential"])
def test_strip_masks_gives_plain_model_with_effective_kernels(make):
    masked = lth_keras.prunable(make())
    rng = np.random.default_rng(1)
    masks = {k: rng.random(m.shape) > 0.5 for k, m in lth_keras.get_masks(masked).items()}
    lth_keras.set_masks(masked, masks)
    plain = lth_keras.strip_masks(masked)
    classes = {type(layer) for layer in _compat.flatten_layers(plain)}
    assert not any(c.__module__.startswith("lth_keras") for c in classes)
    x = _input_for(masked)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), masked.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )
    weights = {
        f"{layer.name}/{w.name}": w.numpy()
        for layer in _compat.flatten_layers(plain)
        for w in layer.weights
    }
    for key, mask in masks.items():
        assert np.all(weights[key][~mask] == 0)
    assert not any(name.endswith(("_mask", "_initial")) for name in weights)


def test_set_masks_checks_everything_before_writing():
    model = lth_keras.prunable(_functional())
    before = [w.numpy().copy() for w in model.weights]
    masks = {k: np.zeros(m.shape, bool) for k, m in lth_keras.get_masks(model).items()}
    masks["out/kernel"] = np.zeros((1, 1), bool)  # last one is bad
    with pytest.raises(ValueError, match="wrong shape for out/kernel"):
        lth_keras.set_masks(model, masks)
    with pytest.raises(KeyError, match="nope/kernel"):
        lth_keras.set_masks(model, {"nope/kernel": np.ones(2)})
    for w, b in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), b)


def test_weights_remaining_counts_exactly():
    model = lth_keras.prunable(_sequential())
    masks = lth_keras.get_masks(model)
    masks["emb/embeddings"][:5] = False  # 5 rows of 4 = 20 of 80
    lth_keras.set_masks(model, masks)
    total, per = lth_keras.weights_remaining(model)
    sizes = {k: m.size for k, m in masks.items()}
    assert per["emb/embeddings"] == 0.75
    assert total == (sum(sizes.values()) - 20) / sum(sizes.values())


def test_layers_with_the_same_name_in_nested_models_are_keyed_with_their_models():
    a = keras.layers.Dense(2, name="same")
    b = keras.layers.Dense(2, name="same")
    inner_a = keras.Sequential([keras.Input((2,)), a], name="a")
    inner_b = keras.Sequential([keras.Input((2,)), b], name="b")
    inputs = keras.Input((2,))
    model = keras.Model(inputs, inner_b(inner_a(inputs)))
    # Model names are not part of paths, but where two layers would collide they are.
    lth_keras.prunable(model)
    assert list(lth_keras.get_masks(model)) == ["a/same/kernel", "b/same/kernel"]


def test_masked_layers_are_mixins():
    model = lth_keras.prunable(_sequential())
    assert all(isinstance(layer, MaskedLayerMixin) for layer in lth_keras.masked_layers(model))


def test_lambda_layers_are_kept_without_unsafe_deserialization():
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    masked = lth_keras.prunable(model)
    plain = lth_keras.strip_masks(masked)
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(numpy(masked(x)), numpy(model(x)), rtol=1e-6)
    np.testing.assert_allclose(numpy(plain(x)), numpy(model(x)), rtol=1e-6)


def test_strip_masks_applies_masks_even_after_a_direct_kernel_write():
    masked = lth_keras.prunable(_sequential())
    masks = lth_keras.get_masks(masked)
    masks["out/kernel"][:] = False
    lth_keras.set_masks(masked, masks)
    layer = masked.get_layer("out")
    stored(layer).assign(np.ones(stored(layer).shape))  # bypasses the masks
    plain = lth_keras.strip_masks(masked)
    assert np.all(plain.get_layer("out").kernel.numpy() == 0)


def test_source_and_copies_train_independently(data):
    # On JAX, a variable assigned from another shares its buffer; training
    # one model would then delete the other's weights.
    x, y = data
    plain = keras.Sequential([keras.Input((12,)), keras.layers.Dense(3, name="fc")])
    masked = lth_keras.prunable(plain)
    stripped = lth_keras.strip_masks(masked)
    before = plain.get_layer("fc").kernel.numpy().copy()
    for model in (masked, plain, stripped, masked):
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert not np.array_equal(plain.get_layer("fc").kernel.numpy(), before)
    np.testing.assert_array_equal(masked.get_layer("fc").kernel_initial.numpy(), before)


class _Unnamed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.a = keras.layers.Dense(4)
        self.b = keras.layers.Dense(2)

    def call(self, x):
        return self.b(self.a(x))


def test_strip_masks_copies_a_subclassed_model_with_unnamed_layers():
    model = _Unnamed()
    x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    model(x)
    lth_keras.prunable(model, filters=lambda layer: layer is model.a)
    masks = {
        k: np.random.default_rng(1).random(m.shape) > 0.5
        for k, m in lth_keras.get_masks(model).items()
    }
    lth_keras.set_masks(model, masks)
    plain = lth_keras.strip_masks(model)
    assert plain is not model and lth_keras.masked_layers(model)
    assert not lth_keras.masked_layers(plain)
    np.testing.assert_allclose(numpy(plain(x)), numpy(model(x)), rtol=1e-6, atol=1e-6)


def test_strip_masks_of_a_model_its_config_cannot_rebuild_says_what_to_do():
    model = _Subclassed()  # its __init__ takes no arguments, so no config rebuilds it
    model(np.ones((2, 3), "float32"))
    lth_keras.prunable(model)
    with pytest.raises(ValueError, match=r"could not copy the model.*in_place=True"):
        lth_keras.strip_masks(model)
    assert lth_keras.masked_layers(model)  # unchanged


def test_a_twin_built_in_a_subclassed_models_first_call_has_its_initial_weights():
    class Net(keras.Model):  # Keras builds the sublayers inside a trace on TensorFlow
        def __init__(self):
            super().__init__()
            self.fc = lth_keras.MaskedDense(2, name="fc")

        def call(self, x):
            return self.fc(x)

    model = Net()
    model(np.ones((1, 3), "float32"))
    (weight,) = [w for w in model.fc.get_lottery_weights() if w.name == "kernel"]
    np.testing.assert_array_equal(numpy(weight.initial), numpy(weight.variable))
    assert [w.name for w in model.fc.get_lottery_weights()] == ["kernel", "bias"]


def test_masks_of_a_layer_built_inside_a_trace_are_concrete():
    """A subclassed model builds its layers in a trace on first call; masks must not be tracers."""

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = lth_keras.MaskedDense(2, name="fc")

        def call(self, x, training=None):
            return self.fc(x)

    model = Net()
    model(np.ones((1, 3), "float32"))
    mask = keras.ops.convert_to_numpy(model.fc.kernel_mask)
    np.testing.assert_array_equal(mask, np.ones((3, 2), bool))
    lth_keras.set_masks(model, {"fc/kernel": np.eye(3, 2, dtype=bool)})
    assert int(lth_keras.get_masks(model)["fc/kernel"].sum()) == 2


def test_a_layer_the_calls_never_built_is_reported_and_the_rest_masked():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2, name="fc")
            self.unused = keras.layers.Dense(2, name="unused")  # like an SE layer of ratio 0

        def call(self, x, training=None):
            return self.fc(x)

    model = Net()
    model(np.ones((1, 3), "float32"))
    with pytest.warns(UserWarning, match=r"1 layer\(s\) the model's calls never built.*'unused'"):
        lth_keras.prunable(model)
    assert list(lth_keras.get_masks(model)) == ["fc/kernel"]
    assert type(model.unused) is keras.layers.Dense


def _encoder(name):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="embedding")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name=f"head_{name}")(hidden), name=name)


def test_layers_of_one_name_in_two_nested_models_are_keyed_with_the_models_names():
    vision, text = _encoder("vision"), _encoder("text")
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], keras.layers.Add(name="sum")([vision(a), text(b)]))
    lth_keras.prunable(model)
    keys = ["vision/embedding/kernel", "head_vision/kernel", "text/embedding/kernel"]
    assert list(lth_keras.get_masks(model)) == keys + ["head_text/kernel"]
    lth_keras.set_masks(model, {"text/embedding/kernel": np.eye(4, 3, dtype=bool)})
    assert int(numpy(text.get_layer("embedding").kernel_mask).sum()) == 3
    assert int(numpy(vision.get_layer("embedding").kernel_mask).sum()) == 12


def test_two_nested_models_of_one_name_with_layers_of_one_name_are_refused():
    class Pair(keras.Model):
        def __init__(self):
            super().__init__()
            self.first, self.second = _encoder("enc"), _encoder("enc")

        def call(self, x, training=None):
            return self.first(x) + self.second(x)

    model = Pair()
    model(np.ones((1, 4), "float32"))
    with pytest.raises(ValueError, match=r"Two layers of the model have the path 'enc/embedding'"):
        lth_keras.prunable(model)
    assert type(model.first.get_layer("embedding")) is keras.layers.Dense
