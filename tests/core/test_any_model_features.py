"""Everything lth_keras does, on models it did not build: a KerasHub BERT and a subclassed model.

Global IMP with a late rewind (bit-exact), the reinit reset, random and
shuffled masks, structures where the layout has the axis, SNIP/GraSP/
SynFlow, early-bird rounds, `.keras` files and tickets with masks and
initial weights, and `strip_masks` back to the model's own classes.
"""

import keras
import numpy as np
import pytest
from helpers import numpy

import lth_keras
from lth_keras import pruning, saliency

keras_hub = pytest.importorskip("keras_hub")
SCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _bert():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=40,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=8,
    )
    model = keras.Model(
        backbone.input, keras.layers.Dense(3, name="head")(backbone.output["pooled_output"])
    )
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 40, (16, 8))
    x = {
        "token_ids": tokens,
        "segment_ids": np.zeros_like(tokens),
        "padding_mask": np.ones_like(tokens),
    }
    return lth_keras.prunable(model), x, rng.integers(0, 3, 16)


@keras.saving.register_keras_serializable(package="lth_keras_tests")
class Block(keras.layers.Layer):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.up = keras.layers.Dense(units, activation="relu", name="up")
        self.down = keras.layers.Dense(units, name="down")

    def call(self, x):
        return x + self.down(self.up(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="lth_keras_tests")
class Net(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stem = keras.layers.Dense(12, name="stem")
        self.block = Block(12, name="block")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x):
        return self.head(self.block(self.stem(x)))


def _net(data):
    keras.utils.set_random_seed(0)
    model = Net()
    model(data[0][:2])
    return lth_keras.prunable(model)


def _compile(model):
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), SCE)
    return model


@pytest.mark.parametrize("which", ["bert", "subclassed"])
def test_global_imp_with_a_late_rewind_is_bit_exact(which, data):
    model, x, y = _bert() if which == "bert" else (_net(data), *data)
    _compile(model)
    pruner = lth_keras.LotteryPruner(rate=0.3, scope="global", rewind_iteration=2)
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[pruner], verbose=0)
    snapshot = {k: v.copy() for k, v in pruner.get_state()["snapshot"].items()}
    initial = {
        key: numpy(weight.initial) for key, _, weight in lth_keras.masks.prunable_entries(model)
    }
    model.fit(x, y, batch_size=4, epochs=0, callbacks=[pruner], verbose=0)  # prune, rewind
    masks = lth_keras.get_masks(model)
    sizes = {k: m.size for k, m in masks.items()}
    assert sum(m.sum() for m in masks.values()) == sum(sizes.values()) - pruning.prune_count(
        sum(sizes.values()), 0.3
    )
    for key, _, weight in lth_keras.masks.prunable_entries(model):
        np.testing.assert_array_equal(numpy(weight.variable), np.where(masks[key], initial[key], 0))
    weights = lth_keras.masks.weights_by_key(model)
    for key, value in snapshot.items():  # biases, norms, positional tables: bit for bit
        np.testing.assert_array_equal(numpy(weights[key]), value, err_msg=key)


def test_reinit_and_random_controls_and_shuffled_masks():
    model, x, y = _bert()
    _compile(model)
    pruner = lth_keras.LotteryPruner(rate=0.5, method="random", reset="reinit", seed=1)
    for _ in range(2):
        model.fit(x, y, batch_size=4, epochs=1, callbacks=[pruner], verbose=0)
    masks = lth_keras.get_masks(model)
    for key, _, weight in lth_keras.masks.prunable_entries(model):
        value, initial = numpy(weight.variable), numpy(weight.initial)
        assert np.all(value[~masks[key]] == 0)
        assert not np.array_equal(value[masks[key]], initial[masks[key]])  # re-drawn, trained
    shuffled = pruning.shuffle_masks(masks, np.random.default_rng(0))
    lth_keras.set_masks(model, {k: shuffled[k] & masks[k] for k in masks})  # masks only shrink


@pytest.mark.parametrize("structure", ["2:4", "block:1x4"])
def test_structures_where_the_layout_has_the_axis(structure):
    model, x, y = _bert()
    _compile(model)
    # Embedding rows are looked up, not summed: no input axis, so excluded.
    pruner = lth_keras.LotteryPruner(rate=0.5, structure=structure, exclude=["Embedding"])
    for _ in range(2):
        model.fit(x, y, batch_size=4, epochs=1, callbacks=[pruner], verbose=0)
    resolved = lth_keras.Targets(exclude=["Embedding"]).resolve(model)
    masks = lth_keras.get_masks(model)
    assert "transformer_layer_0/self_attention_layer/query/kernel" in resolved.rates
    for key, rate in resolved.rates.items():
        layout = resolved.layouts[key]
        kept = np.moveaxis(masks[key], layout.input_axis, -1).reshape(-1, 4).sum(axis=1)
        if structure == "2:4":  # rounds tighten towards 2:4; rate 0.5 gets there in one
            assert np.all(kept >= 2) and (rate < 0.5 or np.all(kept == 2)), key
        else:  # whole blocks of 1x4 along the input axis
            assert np.all((kept == 0) | (kept == 4)), key
        assert not masks[key].all(), key
    with pytest.raises(ValueError, match="needs the input axis"):
        lth_keras.Targets(structure="2:4").check(model)  # the embeddings have none


def test_scores_at_initialisation(data):
    model, x, y = _bert()
    _compile(model)
    for score in (saliency.Snip(data=(x, y)), saliency.GraSP(data=(x, y))):
        lth_keras.set_masks(
            model, {k: np.ones_like(m) for k, m in lth_keras.get_masks(model).items()}
        )
        masks = saliency.prune_at_init(model, score, 0.5, scope="global")
        size = sum(m.size for m in masks.values())
        assert sum(m.sum() for m in masks.values()) == size - pruning.prune_count(size, 0.5)
    net = _net(data)
    masks = saliency.prune_at_init(net, saliency.SynFlow(iterations=3, input_shape=(12,)), 0.5)
    assert all(m.sum() == m.size - pruning.prune_count(m.size, 0.5) for m in masks.values())


def test_early_bird_rounds(data):
    model = _compile(_net(data))
    pruner = lth_keras.LotteryPruner(rate=0.2, epochs_per_round=8, max_rounds=2, early_bird=True)
    history = model.fit(*data, batch_size=16, epochs=16, callbacks=[pruner], verbose=0)
    assert "early_bird_distance" in history.history
    assert pruner.history[0]["early_bird"]["distances"]


def test_keras_file_round_trips_masks_initial_weights_and_optimizer(tmp_path):
    model, x, y = _bert()
    _compile(model)
    pruner = lth_keras.LotteryPruner(rate=0.5)
    for _ in range(2):
        model.fit(x, y, batch_size=4, epochs=1, callbacks=[pruner], verbose=0)
    model.save(tmp_path / "bert.keras")
    loaded = lth_keras.load_model(tmp_path / "bert.keras")
    original, again = lth_keras.masks.weights_by_key(model), lth_keras.masks.weights_by_key(loaded)
    assert list(original) == list(again)  # masks and initial weights included
    for key in original:
        np.testing.assert_array_equal(numpy(original[key]), numpy(again[key]), err_msg=key)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(numpy(a), numpy(b))
    np.testing.assert_allclose(numpy(loaded(x)), numpy(model(x)), rtol=1e-6, atol=1e-6)
    # Plain Keras loads it too when the masks are stripped first.
    plain = lth_keras.strip_masks(model)
    plain.save(tmp_path / "plain.keras")
    reloaded = keras.saving.load_model(tmp_path / "plain.keras")
    assert not lth_keras.masked_layers(reloaded)
    np.testing.assert_allclose(numpy(reloaded(x)), numpy(model(x)), rtol=1e-5, atol=1e-6)


def test_tickets_of_a_subclassed_model(tmp_path, data):
    model = _compile(_net(data))
    pruner = lth_keras.LotteryPruner(rate=0.5)
    for _ in range(2):
        model.fit(*data, batch_size=16, epochs=1, callbacks=[pruner], verbose=0)
    lth_keras.save_ticket(model, tmp_path / "net.ticket.npz", pruner=pruner)
    rebuilt = lth_keras.load_ticket(tmp_path / "net.ticket.npz").build_model()
    assert lth_keras.get_masks(rebuilt).keys() == lth_keras.get_masks(model).keys()
    x = data[0][:4]
    np.testing.assert_allclose(numpy(rebuilt(x)), numpy(model(x)), rtol=1e-6, atol=1e-6)


def test_strip_masks_gives_back_the_models_own_classes():
    model, x, _ = _bert()
    masks = {
        k: np.random.default_rng(2).random(m.shape) > 0.3
        for k, m in lth_keras.get_masks(model).items()
    }
    lth_keras.set_masks(model, masks)
    plain = lth_keras.strip_masks(model)
    classes = {type(layer) for layer in lth_keras._compat.flatten_layers(plain)}
    assert not any(issubclass(c, lth_keras.MaskedLayerMixin) for c in classes)
    assert "ReversibleEmbedding" in {c.__name__ for c in classes}
    np.testing.assert_allclose(numpy(plain(x)), numpy(model(x)), rtol=1e-5, atol=1e-6)
    lth_keras.strip_masks(model, in_place=True)
    assert not lth_keras.masked_layers(model)
    np.testing.assert_allclose(numpy(model(x)), numpy(plain(x)), rtol=1e-6, atol=1e-6)
