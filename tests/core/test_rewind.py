"""WeightSnapshot and OptimizerReset."""

import keras
import numpy as np
import pytest
from helpers import compile_model, mlp

import lth_keras
from lth_keras.rewind import OptimizerReset, WeightSnapshot


def test_snapshot_restores_every_weight_bit_for_bit(data):
    x, y = data
    model = compile_model(mlp(batch_norm=True))
    snapshot = WeightSnapshot(model)
    before = {w.path: w.numpy().copy() for w in model.weights}
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    masks = {
        k: np.random.default_rng(0).random(m.shape) > 0.5
        for k, m in lth_keras.get_masks(model).items()
    }
    lth_keras.set_masks(model, masks)
    snapshot.restore(model)
    by_layer = {layer.name: layer for layer in lth_keras.masked_layers(model)}
    for w in model.weights:
        layer_name, name = w.path.split("/")[-2:]
        if name.endswith("_mask"):
            continue
        expected = before[w.path]
        if name == "kernel" and layer_name in by_layer:
            expected = np.where(masks[f"{layer_name}/kernel"], expected, 0)
        np.testing.assert_array_equal(w.numpy(), expected, err_msg=w.path)
    # BatchNorm moving statistics were moved by training and are back.
    assert "bn/moving_mean" in snapshot.values


def test_snapshot_from_values_and_mismatch(data):
    model = mlp(batch_norm=True)
    snapshot = WeightSnapshot.from_values(WeightSnapshot(model).values)
    snapshot.restore(model)
    with pytest.raises(ValueError, match="do not match the snapshot. Missing"):
        snapshot.restore(mlp(batch_norm=False))


@pytest.mark.parametrize(
    "make, state_value",
    [
        (lambda: keras.optimizers.Adam(1e-2), 0.0),
        (lambda: keras.optimizers.SGD(0.1, momentum=0.9), 0.0),
        (lambda: keras.optimizers.Adagrad(0.1, initial_accumulator_value=0.25), 0.25),
    ],
    ids=["adam", "sgd-momentum", "adagrad"],
)
def test_optimizer_reset_restores_initial_state(make, state_value, data):
    x, y = data
    model = compile_model(mlp(), make())
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    reset = OptimizerReset(model.optimizer, model.trainable_variables)  # after steps
    assert reset.iterations() == 6
    reset.reset(iterations=2)
    assert int(model.optimizer.iterations.numpy()) == 2
    for v in model.optimizer.variables:
        if v.name == "iteration":
            continue
        if v.name == "learning_rate":
            assert float(v.numpy()) == pytest.approx(model.optimizer.get_config()["learning_rate"])
            continue
        assert np.all(v.numpy() == state_value), v.path
