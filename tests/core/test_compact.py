"""compact(): dead units and channels removed, predictions unchanged."""

import keras
import numpy as np
import pytest
from helpers import compile_model

import lth_keras

L = keras.layers


def mlp_sequential():
    return keras.Sequential(
        [
            keras.Input((12,)),
            L.Dense(16, activation="relu", name="fc1"),
            L.Dense(10, activation="tanh", name="fc2"),
            L.Dense(3, name="out"),
        ]
    )


def mlp_functional():
    inputs = keras.Input((12,))
    x = L.Dense(16, name="fc1")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Activation("relu")(x)
    x = L.Dropout(0.5)(x)
    x = L.Dense(10, activation="sigmoid", name="fc2")(x)
    x = L.LeakyReLU(0.1)(x)
    return keras.Model(inputs, L.Dense(3, name="out")(x))


def conv2d_flatten():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(6, 3, activation="relu", name="c1"),
            L.MaxPooling2D(2),
            L.Conv2D(5, 2, activation="elu", name="c2"),
            L.BatchNormalization(),
            L.Flatten(),
            L.Dense(7, activation="relu", name="fc"),
            L.Dense(3, name="out"),
        ]
    )


def conv2d_same_padding():
    inputs = keras.Input((5, 5, 2))  # odd: pooling pads
    x = L.Conv2D(6, 3, padding="same", name="c1")(inputs)
    x = L.ReLU()(x)
    x = L.AveragePooling2D(2, padding="same")(x)
    x = L.Conv2D(5, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(3, name="out")(x))


def conv1d_chain():
    return keras.Sequential(
        [
            keras.Input((10, 4)),
            L.Conv1D(6, 3, activation="relu", name="c1"),
            L.AveragePooling1D(2),
            L.Conv1D(5, 2, activation="relu", name="c2"),
            L.GlobalMaxPooling1D(),
            L.Dense(4, activation="relu", name="fc"),
            L.Dense(3, name="out"),
        ]
    )


TOPOLOGIES = {
    "mlp_sequential": mlp_sequential,
    "mlp_functional_bn": mlp_functional,
    "conv2d_flatten": conv2d_flatten,
    "conv2d_same_padding": conv2d_same_padding,
    "conv1d_chain": conv1d_chain,
}


def randomize(model, rng):
    """Random biases and BatchNorm statistics, so dead units' constants matter."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [rng.normal(size=gamma.shape), rng.normal(size=beta.shape)]
                + [rng.normal(size=mean.shape), rng.uniform(0.5, 2, size=var.shape)]
            )
        elif getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))


def unit_masks(model, rng, fraction=0.4):
    """Whole units pruned at random in every masked layer but the last."""
    masks = lth_keras.get_masks(model)
    for key in list(masks)[:-1]:
        dead = rng.random(masks[key].shape[-1]) < fraction
        masks[key][..., dead] = False
    return masks


def unstructured_masks(model, rng, sparsity=0.85):
    masks = lth_keras.get_masks(model)
    return {key: rng.random(m.shape) >= sparsity for key, m in masks.items()}


def build(name, seed, make_masks):
    rng = np.random.default_rng(seed)
    model = lth_keras.prunable(TOPOLOGIES[name]())
    randomize(model, rng)
    lth_keras.set_masks(model, make_masks(model, rng))
    x = rng.normal(size=(16, *model.input_shape[1:])).astype("float32")
    return model, x


def widths(model):
    return {
        layer.name: getattr(layer, "units", None) or layer.filters
        for layer in model.layers
        if isinstance(layer, (L.Dense, L.Conv1D, L.Conv2D))
    }


def assert_same_predictions(model, small, x):
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = keras.ops.convert_to_numpy(small(x, training=False))
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make_masks", [unit_masks, unstructured_masks], ids=["units", "unstr"])
@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_predictions_are_unchanged(name, make_masks):
    model, x = build(name, 0, make_masks)
    small = lth_keras.compact(model)
    assert_same_predictions(model, small, x)
    assert type(small) is type(model)
    assert all(type(layer).__module__.startswith("keras") for layer in small.layers)
    before, after = widths(model), widths(small)
    assert after["out"] == before["out"]
    assert all(after[k] <= before[k] for k in before)
    assert sum(after.values()) < sum(before.values())  # some dead unit was removed


@pytest.mark.parametrize("name", ["mlp_sequential", "mlp_functional_bn", "conv2d_flatten"])
def test_units_with_no_incoming_weights_are_removed_exactly(name):
    model, x = build(name, 1, unit_masks)
    masks = lth_keras.get_masks(model)
    expected = {
        key.split("/")[0]: int(mask.reshape(-1, mask.shape[-1]).any(axis=0).sum())
        for key, mask in masks.items()
    }
    small = lth_keras.compact(model)
    assert widths(small) == expected
    assert_same_predictions(model, small, x)


def test_units_with_no_outgoing_weights_are_removed_and_dead_units_cascade():
    model = lth_keras.prunable(mlp_sequential())
    randomize(model, np.random.default_rng(2))
    masks = lth_keras.get_masks(model)
    masks["fc2/kernel"][[0, 1, 2], :] = False  # fc1 units 0-2: no outgoing weights
    masks["fc1/kernel"][:, [3, 4]] = False  # fc1 units 3, 4: no incoming weights
    masks["fc2/kernel"][5:, 0] = False  # fc2 unit 0 reads only fc1 units 0-4: dead too
    masks["out/kernel"][1, :] = False  # fc2 unit 1: no outgoing weights
    lth_keras.set_masks(model, masks)
    small = lth_keras.compact(model)
    assert widths(small) == {"fc1": 11, "fc2": 8, "out": 3}
    x = np.random.default_rng(3).normal(size=(8, 12)).astype("float32")
    assert_same_predictions(model, small, x)


def test_same_padding_keeps_dead_channels_with_a_nonzero_constant():
    model = lth_keras.prunable(conv2d_same_padding())
    masks = lth_keras.get_masks(model)
    masks["c1/kernel"][..., [0, 1, 2]] = False
    lth_keras.set_masks(model, masks)
    c1 = model.get_layer("c1")
    c1.bias.assign(np.array([-1.0, 0.0, 2.0, 0.5, 0.5, 0.5], "float32"))
    small = lth_keras.compact(model)
    # relu(-1) = relu(0) = 0: removed; relu(2) != 0 would meet zero padding: kept.
    assert widths(small)["c1"] == 4
    x = np.random.default_rng(4).normal(size=(4, 5, 5, 2)).astype("float32")
    assert_same_predictions(model, small, x)


def test_a_pruned_model_compacts_after_lottery_pruner():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(32, 12)).astype("float32"), rng.integers(0, 3, size=32)
    model = compile_model(lth_keras.prunable(mlp_sequential()))
    pruner = lth_keras.LotteryPruner(rate=0.5, structure="units")
    for _ in range(3):
        model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    small = lth_keras.compact(model)
    assert widths(small) == {"fc1": 4, "fc2": 2, "out": 3}  # 16 -> 8 -> 4; 10 -> 5 -> 2
    assert_same_predictions(model, small, x)


def test_plain_models_compact_too():
    model = mlp_sequential()
    kernel, bias = model.get_layer("fc1").get_weights()
    kernel[:, :4] = 0.0
    model.get_layer("fc1").set_weights([kernel, bias + 0.3])
    small = lth_keras.compact(model)
    assert widths(small)["fc1"] == 12
    x = np.random.default_rng(6).normal(size=(4, 12)).astype("float32")
    assert_same_predictions(model, small, x)


def _branch():
    inputs = keras.Input((4,))
    a, b = L.Dense(3)(inputs), L.Dense(3)(inputs)
    return keras.Model(inputs, L.Dense(2)(L.Add(name="add")([a, b])))


def _skip():
    inputs = keras.Input((4,))
    x = L.Dense(4)(inputs)
    return keras.Model(inputs, L.Dense(2)(L.Dense(4)(x) + x))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(2)

    def call(self, x):
        return self.dense(x)


REFUSED = [
    ("add", _branch, "layer 'add' of type Add: unsupported layer type"),
    ("skip", _skip, "its input is not the previous layer's output.*no branches or merges"),
    (
        "channels_first",
        lambda: keras.Sequential(
            [keras.Input((2, 6, 6)), L.Conv2D(3, 3, data_format="channels_first"), L.Flatten()]
        ),
        "data_format='channels_first'",
    ),
    (
        "transpose",
        lambda: keras.Sequential([keras.Input((4, 4, 2)), L.Conv2DTranspose(3, 2)]),
        "type Conv2DTranspose: unsupported layer type",
    ),
    (
        "nested",
        lambda: keras.Sequential([keras.Input((4,)), mlp_sequential_small()]),
        "type Sequential: unsupported layer type",
    ),
    (
        "bn_axis",
        lambda: keras.Sequential([keras.Input((4, 3)), L.BatchNormalization(axis=1)]),
        "not the last \\(channels\\) axis",
    ),
    ("subclassed", _Subclassed, "supports Sequential and functional"),
    (
        "grouped",
        lambda: keras.Sequential([keras.Input((5, 5, 4)), L.Conv2D(4, 3, groups=2)]),
        "grouped convolution \\(groups=2\\)",
    ),
    ("unbuilt", lambda: keras.Sequential([L.Dense(2)]), "needs a built model"),
]


def mlp_sequential_small():
    return keras.Sequential([keras.Input((4,)), L.Dense(2)])


@pytest.mark.parametrize("make, match", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_unsupported_models_are_refused(make, match):
    model = make()
    if isinstance(model, _Subclassed):
        model(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match=match):
        lth_keras.compact(model)
