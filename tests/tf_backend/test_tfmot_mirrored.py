"""`lth_keras.tfmot` under MirroredStrategy: tfmot's counts, the same masks on every replica."""

import keras
import numpy as np
import tensorflow as tf
from helpers import stored

import lth_keras
from lth_keras import tfmot


def test_gradual_pruning_under_mirrored_strategy(data):
    x, y = data
    # Reduced on one device: collective ops keep instance keys per process, and
    # another test's strategy in the same process can leave them out of step.
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((12,)),
                keras.layers.Dense(16, name="fc"),
                keras.layers.Dense(4, name="out"),
            ]
        )
        schedule = tfmot.PolynomialDecay(0.5, 0.8, begin_step=0, end_step=6, frequency=2)
        model = tfmot.prune_low_magnitude(model, pruning_schedule=schedule)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = tfmot.UpdatePruningStep()
    model.fit(x[:48], y[:48], batch_size=8, epochs=1, callbacks=[callback], verbose=0)
    assert [u["step"] for u in callback.pruners[0].history[-1]["updates"]] == [2, 4, 6]
    masks = lth_keras.get_masks(model)
    # tfmot's count at 0.8: 192 -> round(38.4) = 38, 64 -> round(12.8) = 13.
    assert {k: int(m.sum()) for k, m in masks.items()} == {"fc/kernel": 38, "out/kernel": 13}
    for layer in lth_keras.masked_layers(model):
        for var in (layer.kernel_mask, stored(layer)):
            first, second = (v.numpy() for v in var.value.values)
            np.testing.assert_array_equal(first, second)
        assert (np.asarray(stored(layer))[~masks[f"{layer.name}/kernel"]] == 0).all()
