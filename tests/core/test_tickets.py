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


def _crafted(tmp_path, change):
    """A ticket file of a small model, its metadata and arrays changed by `change`."""
    source = tmp_path / "source.ticket.npz"
    if not source.exists():
        lth_keras.save_ticket(mlp(), source)
    with np.load(source) as data:
        arrays = {key: data[key] for key in data.files}
    metadata = json.loads(arrays["metadata"].tobytes())
    metadata = change(metadata, arrays) or metadata
    arrays["metadata"] = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
    path = tmp_path / "crafted.ticket.npz"
    np.savez(path, **arrays)
    return path


def _setting(field, value):
    def change(metadata, arrays):
        metadata[field] = value

    return change


def _packed_kernel_of_wrong_size(metadata, arrays):
    arrays["final/fc1/kernel"] = arrays["final/fc1/kernel"][:-1]


def _unknown_array(metadata, arrays):
    arrays["evil/fc1/kernel"] = np.zeros(3)


def _object_array(metadata, arrays):
    arrays["final/fc1/bias"] = np.array([{"a": 1}], dtype=object)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m, a: [m], "is not an lth_keras ticket file of version 1"),
        (_setting("shapes", [[12, 16]]), "metadata field `shapes` should be a mapping"),
        (
            lambda m, a: m["shapes"].update({"fc1/kernel": "12x16"}),
            "metadata field `shapes['fc1/kernel']` should be a list of sizes, found '12x16'",
        ),
        (
            lambda m, a: m["shapes"].update({"fc1/kernel": ["12", 16]}),
            "metadata field `shapes['fc1/kernel']` should be a list of sizes",
        ),
        (
            lambda m, a: m["shapes"].update({"fc1/kernel": [10**6, 10**6]}),
            "array 'mask/fc1/kernel' (uint8, 24 values) does not hold the 1000000000000 bits",
        ),
        (
            lambda m, a: m["kernels"].update({"fc1/kernel": "nosuch/kernel"}),
            "metadata field `kernels['fc1/kernel']` should be a key of `shapes`",
        ),
        (
            _setting("weights_remaining", "0.5"),
            "metadata field `weights_remaining` should be a number in [0, 1], found '0.5'",
        ),
        (_setting("layers", [0.5]), "metadata field `layers` should be a mapping"),
        (
            lambda m, a: m["layers"].update({"fc1/kernel": 2.0}),
            "metadata field `layers['fc1/kernel']` should be a number in [0, 1]",
        ),
        (_setting("config", "lenet"), "metadata field `config` should be a mapping or null"),
        (_setting("model", {"config": {}}), "metadata field `model.class_name` should be a string"),
        (
            _packed_kernel_of_wrong_size,
            "array 'final/fc1/kernel' holds 191 values of shape (191,), not the 192 kept entries",
        ),
        (_unknown_array, "array 'evil/fc1/kernel' is not a mask, final or rewind weight"),
        (_object_array, "array 'final/fc1/bias' holds object, not numbers"),
    ],
    ids=[
        "metadata-list",
        "shapes-list",
        "shape-string",
        "shape-of-strings",
        "huge-shape",
        "kernel-without-mask",
        "remaining-string",
        "layers-list",
        "layer-above-1",
        "config-string",
        "model-without-class",
        "packed-kernel-size",
        "unknown-array",
        "object-array",
    ],
)
def test_malformed_ticket_files_name_the_field(tmp_path, change, message):
    path = _crafted(tmp_path, change)
    with pytest.raises(ValueError) as caught:
        lth_keras.load_ticket(path)
    text = str(caught.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_a_declared_huge_array_is_refused_before_it_is_allocated(tmp_path):
    """A few KB declaring 93 GiB: refused from the file's size, nothing allocated."""
    import io
    import tracemalloc
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (100000, 250000)}
    )
    path = _crafted(tmp_path, lambda m, a: None)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("final/huge.npy", header.getvalue() + bytes(4096))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"declares the shape \(100000, 250000\)"):
            lth_keras.load_ticket(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert os.path.getsize(path) < 20000 and peak < 10 * 2**20


def test_unreadable_metadata_and_a_damaged_model_config(tmp_path):
    def garbage(metadata, arrays):
        return None

    path = _crafted(tmp_path, garbage)
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["metadata"] = np.frombuffer(b"\xff{not json", np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="is not a readable lth_keras ticket file"):
        lth_keras.load_ticket(path)
    path = _crafted(tmp_path, lambda m, a: m["model"].update({"config": "layers"}))
    with pytest.raises(ValueError, match="metadata field `model` is not a Keras model config"):
        lth_keras.load_ticket(path).build_model()
