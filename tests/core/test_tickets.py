"""Portable ticket files."""

import json
import os

import keras
import numpy as np
import pytest
from helpers import compile_model, mlp, numpy, stored

import lth_keras
from lth_keras.experiments.models import build_model


@pytest.fixture
def trained_ticket(data):
    x, y = data
    model = compile_model(mlp(batch_norm=True))
    pruner = lth_keras.LotteryPruner(rate=0.5, output_rate=0.5)
    for _ in range(4):
        model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    return model, pruner


def _values(model):
    return {w.path.split("/", 1)[1]: w.numpy() for w in model.weights}


def test_round_trip_final_and_rewind(trained_ticket, tmp_path):
    model, pruner = trained_ticket
    path = tmp_path / "t.ticket.npz"
    meta = lth_keras.save_ticket(model, path, pruner=pruner, config={"note": "test"})
    assert meta["weights_remaining"] == lth_keras.weights_remaining(model)[0]
    ticket = lth_keras.load_ticket(path)
    assert ticket.metadata["config"] == {"note": "test"}
    assert set(ticket.metadata["versions"]) == {"lth_keras", "keras"}
    for key, mask in lth_keras.get_masks(model).items():
        np.testing.assert_array_equal(ticket.masks[key], mask)
    # Into a fresh model of the same architecture: every weight bit for bit.
    fresh = mlp(batch_norm=True)
    ticket.apply(fresh)
    expected, got = _values(model), _values(fresh)
    for name, value in expected.items():
        if name.endswith("_initial"):  # pruned initial values are not stored
            mask = ticket.masks.get(name.replace("_initial", ""))
            value = value if mask is None else np.where(mask, value, 0)
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    # The rewind point: kernels = initial * mask, BatchNorm back to the start.
    again = mlp(batch_norm=True)
    ticket.apply(again, weights="rewind")
    snapshot = pruner.get_state()["snapshot"]
    for layer in lth_keras.masked_layers(again):
        mask = ticket.masks[f"{layer.name}/kernel"]
        original = model.get_layer(layer.name).kernel_initial.numpy()  # not from the file
        np.testing.assert_array_equal(stored(layer).numpy(), np.where(mask, original, 0))
    np.testing.assert_array_equal(
        again.get_layer("bn").moving_mean.numpy(), snapshot["bn/moving_mean"]
    )


def test_file_is_compact_and_rebuilds_without_code(tmp_path):
    model = lth_keras.prunable(build_model("lenet", (28, 28, 1)))
    masks = {
        k: np.random.default_rng(0).random(m.shape) < 0.05
        for k, m in lth_keras.get_masks(model).items()
    }
    lth_keras.set_masks(model, masks)
    path = tmp_path / "lenet.ticket.npz"
    lth_keras.save_ticket(model, path)
    dense_bytes = 2 * 4 * sum(m.size for m in masks.values())  # final + rewind kernels
    assert os.path.getsize(path) < 0.12 * dense_bytes
    rebuilt = lth_keras.load_ticket(path).build_model()
    x = np.random.default_rng(1).random((4, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(numpy(rebuilt(x)), numpy(model(x)))
    with np.load(path, allow_pickle=False) as data:  # no pickled objects inside
        assert all(data[k].dtype != object for k in data.files)


def test_safe_mode_refuses_lambda_layers(tmp_path):
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: t * 2)(inputs)
    model = lth_keras.prunable(keras.Model(inputs, keras.layers.Dense(2)(x)))
    path = tmp_path / "lambda.ticket.npz"
    lth_keras.save_ticket(model, path)
    with pytest.raises(ValueError, match="(?i)unsafe|lambda"):
        lth_keras.load_ticket(path).build_model()


def test_wrong_architecture_is_refused_and_unchanged(trained_ticket, tmp_path):
    model, _ = trained_ticket
    path = tmp_path / "t.ticket.npz"
    lth_keras.save_ticket(model, path)
    other = lth_keras.prunable(
        keras.Sequential(
            [
                keras.Input((12,)),
                keras.layers.Dense(32, name="fc1"),
                keras.layers.Dense(3, name="out"),
            ]
        )
    )
    before = [w.numpy().copy() for w in other.weights]
    with pytest.raises(ValueError, match="does not fit this model.*fc1/kernel shape"):
        lth_keras.load_ticket(path, other)
    for w, b in zip(other.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), b)


def test_errors(trained_ticket, tmp_path):
    model, _ = trained_ticket
    path = tmp_path / "t.ticket.npz"
    lth_keras.save_ticket(model, path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        lth_keras.save_ticket(model, path)
    with pytest.raises(ValueError, match="weights='best'"):
        lth_keras.load_ticket(path).apply(model, weights="best")
    with pytest.raises(ValueError, match="no masked layers"):
        lth_keras.save_ticket(
            keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), tmp_path / "plain.npz"
        )
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable lth_keras ticket"):
        lth_keras.load_ticket(tmp_path / "junk.npz")
    whole = path.read_bytes()
    for cut in (len(whole) // 2, len(whole) - 30):  # truncated: a zip without its end
        (tmp_path / "cut.npz").write_bytes(whole[:cut])
        with pytest.raises(ValueError, match="not a readable lth_keras ticket"):
            lth_keras.load_ticket(tmp_path / "cut.npz")
    meta = {"format": "other", "format_version": 9}
    np.savez(tmp_path / "other.npz", metadata=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(ValueError, match="format='other'"):
        lth_keras.load_ticket(tmp_path / "other.npz")


def test_layers_with_sublayers_and_nested_models(tmp_path):
    inner = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(6, name="inner_fc")], name="inner"
    )
    inputs = keras.Input((4, 3))
    h = keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    h = inner(keras.layers.Flatten()(h))
    model = lth_keras.prunable(keras.Model(inputs, keras.layers.Dense(2, name="out")(h)))
    rng = np.random.default_rng(0)
    lth_keras.set_masks(
        model, {k: rng.random(m.shape) > 0.5 for k, m in lth_keras.get_masks(model).items()}
    )
    path = tmp_path / "t.ticket.npz"
    lth_keras.save_ticket(model, path)
    rebuilt = lth_keras.load_ticket(path).build_model()
    weights = lth_keras.masks.weights_by_key(model)
    rebuilt_weights = lth_keras.masks.weights_by_key(rebuilt)
    assert list(weights) == list(rebuilt_weights)
    masks = lth_keras.get_masks(model)
    assert sum(k.startswith("mha/") for k in masks) == 4  # the projections inside the MHA
    for key, a in weights.items():
        expected = a.numpy()
        if key.endswith("kernel_initial"):  # initial values of pruned weights are not kept
            expected = np.where(masks[key[: -len("_initial")]], expected, 0)
        np.testing.assert_array_equal(rebuilt_weights[key].numpy(), expected, err_msg=key)
    x = np.random.default_rng(1).random((2, 4, 3)).astype("float32")
    np.testing.assert_array_equal(numpy(rebuilt(x)), numpy(model(x)))


def test_incomplete_file_is_a_clear_error(trained_ticket, tmp_path):
    model, _ = trained_ticket
    path = tmp_path / "t.ticket.npz"
    lth_keras.save_ticket(model, path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if not k.startswith("mask/")}
    np.savez(tmp_path / "cut.npz", **arrays)
    with pytest.raises(ValueError, match="incomplete lth_keras ticket"):
        lth_keras.load_ticket(tmp_path / "cut.npz")
