"""Trains three LotteryPruner rounds on JAX, on one device or DataParallel over two.

Usage: python tests/core/jax_data_parallel.py {single|parallel} OUT.npz
Run by test_distribution.py with KERAS_BACKEND=jax and two host devices.
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import lth_keras  # noqa: E402

mode, out = sys.argv[1], sys.argv[2]
assert len(jax.devices()) == 2, jax.devices()
if mode == "parallel":
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
keras.utils.set_random_seed(7)
rng = np.random.default_rng(0)
x = rng.normal(size=(128, 12)).astype("float32")
y = ((x[:, 0] > 0).astype("int32") + (x[:, 1] > 0)).astype("int32")
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
    jit_compile=True,
)
pruner = lth_keras.LotteryPruner(rate=0.3)
for _ in range(3):
    model.fit(x, y, epochs=2, batch_size=32, shuffle=False, callbacks=[pruner], verbose=0)
model.fit(x, y, epochs=0, callbacks=[pruner], verbose=0)
masks = lth_keras.get_masks(model)
kernels = lth_keras.masks.get_kernels(model)
for key, mask in masks.items():
    assert np.all(kernels[key][~mask] == 0)
np.savez(out, **{k.replace("/", "."): v for k, v in masks.items()})
