"""LotteryPruner under MirroredStrategy: the same masks as on one device."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import compile_model, mlp, stored

import lth_keras


def _masks_after_rounds(strategy, data):
    x, y = data
    with strategy.scope():
        model = compile_model(mlp())
    pruner = lth_keras.LotteryPruner(rate=0.3)
    for _ in range(3):
        model.fit(x, y, epochs=2, batch_size=16, shuffle=False, callbacks=[pruner], verbose=0)
    model.fit(x, y, epochs=0, callbacks=[pruner], verbose=0)
    return lth_keras.get_masks(model), model


@pytest.mark.slow
def test_mirrored_strategy_gives_single_device_masks(data):
    keras.utils.set_random_seed(7)
    single, _ = _masks_after_rounds(tf.distribute.get_strategy(), data)
    keras.utils.set_random_seed(7)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored, model = _masks_after_rounds(strategy, data)
    assert single.keys() == mirrored.keys()
    for k in single:
        np.testing.assert_array_equal(single[k], mirrored[k])
    # Every replica holds the same masks and rewound weights.
    for layer in lth_keras.masked_layers(model):
        for var in (layer.kernel_mask, stored(layer), layer.bias):
            values = [v.numpy() for v in var.value.values]
            assert len(values) == 2
            np.testing.assert_array_equal(values[0], values[1])
