"""One worker of a MultiWorkerMirroredStrategy run of LotteryPruner (or a single run).

Usage: python tests/tf_backend/multi_worker_fit.py {multi|single} OUT.npz [random]
Trains the tiny MLP of the tests for 3 rounds and saves masks and weights.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

mode, out = sys.argv[1], sys.argv[2]
method = sys.argv[3] if len(sys.argv) > 3 else "magnitude"
# The strategy must exist before any other TensorFlow work.
strategy = (
    tf.distribute.MultiWorkerMirroredStrategy()
    if mode == "multi"
    else (tf.distribute.get_strategy())
)

import keras  # noqa: E402

import lth_keras  # noqa: E402
from lth_keras.tensorflow import distribute  # noqa: E402

keras.utils.set_random_seed(7)
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 12)).astype("float32")
y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
with strategy.scope():
    model = lth_keras.prunable(
        keras.Sequential(
            [
                keras.Input((12,)),
                keras.layers.Dense(16, activation="relu", name="fc1"),
                keras.layers.Dense(8, activation="relu", name="fc2"),
                keras.layers.Dense(3, name="out"),
            ]
        )
    )
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
pruner = lth_keras.LotteryPruner(rate=0.3, method=method)
with distribute.fit_scope(model, strategy):
    for _ in range(3):
        model.fit(data, epochs=2, callbacks=[pruner], verbose=0)
    model.fit(data, epochs=0, callbacks=[pruner], verbose=0)
arrays = {f"mask:{k}": v for k, v in lth_keras.get_masks(model).items()}
arrays.update({f"weight:{w.path.split('/', 1)[1]}": w.numpy() for w in model.weights})
np.savez(out, **arrays)
