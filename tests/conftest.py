"""Shared fixtures: fixed seeds, tiny data and tiny models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Real MNIST, offline (CI sets the same path in .ci/run).
MNIST_DIR = os.environ.setdefault(
    "TFDS_DATA_DIR", os.path.join(REPO, "..", "shared", "data", "tensorflow_datasets")
)

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so MirroredStrategy tests run on one CPU. This must
# happen before TensorFlow initialises its devices, hence here.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lth_keras  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 12)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    return x, y


def mlp(batch_norm=False, name=None):
    """A tiny prunable MLP: 12 -> 16 -> 8 -> 3 (optionally with BatchNorm)."""
    layers = [keras.Input((12,)), keras.layers.Dense(16, activation="relu", name="fc1")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers += [
        keras.layers.Dense(8, activation="relu", name="fc2"),
        keras.layers.Dense(3, name="out"),
    ]
    return lth_keras.prunable(keras.Sequential(layers, name=name))


def compile_model(model, optimizer=None, **kwargs):
    model.compile(
        optimizer or keras.optimizers.SGD(0.1, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs,
    )
    return model


class Probe(keras.callbacks.Callback):
    """Records model state when training starts and at every epoch start.

    Placed after a `LotteryPruner` in the callback list, it sees the model
    right after the pruner's round transition.
    """

    def __init__(self):
        super().__init__()
        self.states = []

    def _record(self, where):
        optimizer = self.model.optimizer
        self.states.append(
            {
                "where": where,
                "weights": {w.path: w.numpy().copy() for w in self.model.weights},
                "masks": lth_keras.get_masks(self.model),
                "iterations": int(optimizer.iterations.numpy()),
                "slots": [
                    v.numpy().copy()
                    for v in optimizer.variables
                    if v.name not in ("iteration", "learning_rate")
                ],
            }
        )

    def on_train_begin(self, logs=None):
        self._record("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self._record(f"epoch_begin_{epoch}")


@pytest.fixture
def probe():
    return Probe()
