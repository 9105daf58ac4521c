"""Masked layers: masks, initial weights, masking in call, serialization."""

import keras
import numpy as np
import pytest
from helpers import kernel_gradients, numpy, stored

import lth_keras
from lth_keras import layers as L

CASES = [
    (L.MaskedDense, (4,), (5,)),
    (L.MaskedConv1D, (4, 3), (8, 3)),
    (L.MaskedConv2D, (4, 3), (6, 6, 2)),
    (L.MaskedConv3D, (2, 2), (4, 4, 4, 2)),
    (L.MaskedConv1DTranspose, (4, 3), (8, 3)),
    (L.MaskedConv2DTranspose, (4, 3), (6, 6, 2)),
    (L.MaskedConv3DTranspose, (2, 2), (3, 3, 3, 2)),
    (L.MaskedDepthwiseConv1D, (3,), (8, 3)),
    (L.MaskedDepthwiseConv2D, (3,), (6, 6, 2)),
    (L.MaskedSeparableConv1D, (4, 3), (8, 3)),
    (L.MaskedSeparableConv2D, (4, 3), (6, 6, 2)),
    (L.MaskedEmbedding, (10, 4), (7,)),
]
IDS = [c[0].__name__ for c in CASES]


def _inputs(cls, shape, n=3):
    rng = np.random.default_rng(0)
    if cls is L.MaskedEmbedding:
        return rng.integers(0, 10, size=(n, *shape))
    return rng.normal(size=(n, *shape)).astype("float32")


def _built(cls, args, shape):
    layer = cls(*args)
    layer.build((None, *shape))
    return layer


def _random_masks(layer, seed=0):
    rng = np.random.default_rng(seed)
    return {a: rng.random(getattr(layer, f"{a}_mask").shape) > 0.4 for a in layer.prunable_attrs}


@pytest.mark.parametrize("cls, args, shape", CASES, ids=IDS)
def test_build_creates_masks_and_initial_weights(cls, args, shape):
    layer = _built(cls, args, shape)
    base = lth_keras.layers.keras_class_of(cls)
    plain = base(*args)
    plain.build((None, *shape))
    assert [w.name for w in layer.trainable_weights] == [w.name for w in plain.weights]
    for attr in layer.prunable_attrs:
        assert np.all(getattr(layer, f"{attr}_mask").numpy() == 1)
        assert not getattr(layer, f"{attr}_mask").trainable
    for attr, var in ((w.name, w.variable) for w in layer.get_lottery_weights()):
        initial = getattr(layer, f"{attr}_initial")
        assert not initial.trainable
        np.testing.assert_array_equal(initial.numpy(), var.numpy())


@pytest.mark.parametrize("cls, args, shape", CASES, ids=IDS)
def test_call_uses_masked_kernel_and_zero_gradients(cls, args, shape):
    layer = _built(cls, args, shape)
    base = lth_keras.layers.keras_class_of(cls)
    masks = _random_masks(layer)
    raw_before = {a: stored(layer, a).numpy() for a in layer.prunable_attrs}
    layer.set_masks(masks)
    for attr, mask in masks.items():
        value = stored(layer, attr).numpy()
        assert np.all(value[~mask] == 0)
        np.testing.assert_array_equal(value[mask], raw_before[attr][mask])
    # A plain Keras layer holding kernel * mask gives the same outputs.
    plain = base.from_config(layer.get_config())
    plain.build((None, *shape))
    plain.set_weights([v.numpy() for v in layer.trainable_weights])
    x = _inputs(cls, shape)
    np.testing.assert_allclose(numpy(layer(x)), numpy(plain(x)), rtol=1e-6, atol=1e-6)
    # Pruned entries get exactly zero gradient.
    grads = kernel_gradients(layer, x)
    for attr, grad in zip(layer.prunable_attrs, grads, strict=True):
        assert np.all(grad[~masks[attr]] == 0)
        assert np.any(grad[masks[attr]] != 0)


@pytest.mark.parametrize("cls, args, shape", CASES, ids=IDS)
def test_config_round_trip_equals_keras_config(cls, args, shape):
    layer = cls(*args, name="x")
    config = layer.get_config()
    assert config == lth_keras.layers.keras_class_of(cls)(*args, name="x").get_config()
    assert cls.from_config(config).get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"lth_keras>{cls.__qualname__}"
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is cls and again.get_config() == config


@pytest.mark.parametrize("cls, args, shape", CASES, ids=IDS)
def test_keras_file_round_trips_masks_and_initial_weights(cls, args, shape, tmp_path):
    inputs = keras.Input(shape, dtype="int32" if cls is L.MaskedEmbedding else "float32")
    layer = cls(*args)
    model = keras.Model(inputs, layer(inputs))
    layer.set_masks(_random_masks(layer, seed=3))
    for var in layer.trainable_weights:  # make "trained" weights differ from initial ones
        var.assign(var.numpy() + 0.5)
    layer.set_masks(layer.get_masks())
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[-1]) is cls
    before = {w.name: w.numpy() for w in layer.weights}
    after = {w.name: w.numpy() for w in loaded.layers[-1].weights}
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    x = _inputs(cls, shape)
    np.testing.assert_array_equal(numpy(model(x)), numpy(loaded(x)))


def test_rewind_restores_initial_times_mask_bit_for_bit():
    layer = _built(L.MaskedDense, (6,), (5,))
    initial = layer.kernel_initial.numpy().copy()
    bias_initial = layer.bias_initial.numpy().copy()
    stored(layer).assign(np.random.default_rng(0).normal(size=(5, 6)))
    layer.bias.assign(np.ones(6))
    mask = np.random.default_rng(1).random((5, 6)) > 0.5
    layer.set_masks({"kernel": mask})
    layer.rewind()
    np.testing.assert_array_equal(stored(layer).numpy(), np.where(mask, initial, 0))
    np.testing.assert_array_equal(layer.bias.numpy(), bias_initial)


def test_weights_written_through_keras_keep_pruned_entries_zero(tmp_path):
    model = keras.Sequential([keras.Input((3,)), L.MaskedDense(4, name="fc")])
    layer = model.layers[0]
    mask = np.array([[1, 0, 1, 0]] * 3, dtype=bool)
    layer.set_masks({"kernel": mask})
    values = [w.numpy() for w in layer.weights]
    values[0] = np.ones((3, 4), "float32")  # a dense kernel, masks kept
    layer.set_weights(values)
    np.testing.assert_array_equal(stored(layer).numpy(), mask.astype("float32"))
    # A weights file written with a dense kernel loads as the masked kernel.
    stored(layer).assign(np.ones((3, 4)))
    model.save_weights(tmp_path / "w.weights.h5")
    stored(layer).assign(np.zeros((3, 4)))
    model.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_array_equal(stored(layer).numpy(), mask.astype("float32"))
    # A direct variable write is mended by apply_masks().
    stored(layer).assign(np.full((3, 4), 2.0))
    layer.apply_masks()
    np.testing.assert_array_equal(stored(layer).numpy(), 2.0 * mask)


@pytest.mark.parametrize("cls,args,shape", CASES, ids=IDS)
def test_masks_are_boolean_variables(cls, args, shape):
    layer = _built(cls, args, shape)
    for weight in layer.get_prunable_weights():
        assert weight.mask.dtype == "bool"
        assert not weight.mask.trainable


def test_pruned_gradients_are_zero_next_to_infinite_and_nan_ones():
    layer = _built(L.MaskedDense, (2,), (3,))
    stored(layer).assign(np.ones((3, 2)))
    mask = np.array([[1, 0], [0, 1], [1, 0]], dtype=bool)
    layer.set_masks({"kernel": mask})
    x = np.array([[np.inf, 1.0, 0.0]], "float32")
    (grad,) = kernel_gradients(layer, x)
    assert not np.isfinite(grad[mask]).all()  # inf * inf and 0 * inf upstream
    np.testing.assert_array_equal(grad[~mask], 0.0)


def test_float_masks_of_older_weight_files_load(tmp_path):
    """Releases before 0.3 stored masks as float 0/1 in the kernel's dtype."""
    h5py = pytest.importorskip("h5py")
    model = keras.Sequential([keras.Input((3,)), L.MaskedDense(4)])
    layer = model.layers[0]
    mask = np.array([[1, 0, 1, 0]] * 3, dtype=bool)
    layer.set_masks({"kernel": mask})
    path = tmp_path / "old.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r+") as f:
        found = []

        def masks_only(name, item):
            if isinstance(item, h5py.Dataset) and item.dtype == np.bool_:
                found.append(name)

        f.visititems(masks_only)
        assert len(found) == 1  # the one mask
        del f[found[0]]
        f[found[0]] = mask.astype("float32")
    layer.set_masks({"kernel": np.ones((3, 4))})
    stored(layer).assign(np.ones((3, 4)))
    model.load_weights(path)
    assert layer.kernel_mask.dtype == "bool"
    np.testing.assert_array_equal(numpy(layer.kernel_mask), mask)
    np.testing.assert_array_equal(numpy(stored(layer)) != 0, mask)
    # set_weights takes float masks too, as get_weights() of older releases gave.
    values = [numpy(v) for v in layer.weights]
    values[[v.name for v in layer.weights].index("kernel_mask")] = np.ones((3, 4), "float32")
    layer.set_weights(values)
    assert layer.kernel_mask.dtype == "bool"
    assert numpy(layer.kernel_mask).all()


def test_save_initial_records_current_weights():
    layer = _built(L.MaskedDense, (3,), (2,))
    stored(layer).assign(np.full((2, 3), 7.0))
    layer.save_initial()
    np.testing.assert_array_equal(layer.kernel_initial.numpy(), np.full((2, 3), 7.0))


def test_reinitialize_is_seeded_masked_and_fresh():
    layer = _built(L.MaskedDense, (50,), (40,))
    mask = np.random.default_rng(1).random((40, 50)) > 0.5
    layer.set_masks({"kernel": mask})
    layer.reinitialize(seed=5)
    first = stored(layer).numpy().copy()
    layer.reinitialize(seed=5)
    np.testing.assert_array_equal(stored(layer).numpy(), first)
    assert np.all(first[~mask] == 0)
    assert np.all(first[mask] != 0)
    assert not np.allclose(first[mask], np.where(mask, layer.kernel_initial.numpy(), 0)[mask])
    layer.reinitialize(seed=6)
    assert not np.array_equal(stored(layer).numpy(), first)


@pytest.mark.parametrize(
    "masks, match",
    [
        ({"bias": np.ones(3)}, "not a masked weight"),
        ({"kernel": np.ones((3, 2))}, r"wrong shape.*Expected: \(2, 3\)"),
        ({"kernel": np.full((2, 3), 0.5)}, "only 0 and 1"),
    ],
    ids=["attr", "shape", "values"],
)
def test_set_masks_rejects_bad_masks_and_changes_nothing(masks, match):
    layer = _built(L.MaskedDense, (3,), (2,))
    before = [w.numpy().copy() for w in layer.weights]
    with pytest.raises(ValueError, match=match):
        layer.set_masks(masks)
    for w, b in zip(layer.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), b)


def test_unbuilt_layer_methods_raise():
    layer = L.MaskedDense(3)
    with pytest.raises(ValueError, match="not built"):
        layer.set_masks({"kernel": np.ones((2, 3))})
    with pytest.raises(ValueError, match="not built"):
        layer.get_masks()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: L.MaskedDense(4, lora_rank=2), "does not support LoRA.*lora_rank=2"),
        (lambda: L.MaskedConv2D(4, 3, lora_rank=2), "does not support LoRA"),
        (lambda: L.MaskedEmbedding(10, 4, lora_rank=2), "does not support LoRA"),
        (lambda: L.MaskedDense(4, dtype="int8_from_float32"), "quantized dtype"),
    ],
    ids=["dense-lora", "conv-lora", "embedding-lora", "quantized-policy"],
)
def test_unsupported_options_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_quantize_and_enable_lora_are_rejected():
    layer = _built(L.MaskedDense, (4,), (3,))
    with pytest.raises(ValueError, match="does not support quantization"):
        layer.quantize("int8")
    with pytest.raises(ValueError, match="does not support LoRA"):
        layer.enable_lora(2)


def test_embedding_weights_argument_sets_initial_weights():
    values = np.arange(12, dtype="float32").reshape(4, 3)
    layer = L.MaskedEmbedding(4, 3, weights=[values])
    np.testing.assert_array_equal(stored(layer, "embeddings").numpy(), values)
    np.testing.assert_array_equal(layer.embeddings_initial.numpy(), values)
    assert np.all(layer.embeddings_mask.numpy() == 1)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="sparse gradients are TensorFlow's"
)
def test_embedding_gradient_stays_sparse_and_masked():
    import tensorflow as tf

    layer = L.MaskedEmbedding(50, 4)
    layer.build()
    mask = np.random.default_rng(0).random((50, 4)) > 0.5
    layer.set_masks({"embeddings": mask})
    ids = np.array([[1, 3, 3, 7]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(ids))
    grad = tape.gradient(loss, stored(layer, "embeddings").value)
    assert isinstance(grad, tf.IndexedSlices)
    dense = tf.convert_to_tensor(grad).numpy()
    expected = np.zeros((50, 4))
    for i in ids[0]:
        expected[i] += mask[i]
    np.testing.assert_array_equal(dense, expected)


def test_mixed_precision_keeps_masks_exact():
    layer = L.MaskedDense(4, dtype="mixed_float16")
    layer.build((None, 3))
    assert layer.kernel_mask.dtype == "bool"
    mask = np.array([[1, 0, 1, 0]] * 3)
    layer.set_masks({"kernel": mask})
    out = layer(np.ones((2, 3), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    plain = keras.layers.Dense(4, dtype="mixed_float16")
    plain.build((None, 3))
    plain.set_weights([stored(layer).numpy(), layer.bias.numpy()])
    np.testing.assert_array_equal(numpy(out), numpy(plain(np.ones((2, 3), "float32"))))


def test_public_names_are_exported():
    for cls, _, _ in CASES:
        assert getattr(lth_keras, cls.__qualname__) is cls
