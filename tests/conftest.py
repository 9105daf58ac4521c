"""Shared fixtures, and the split between backend-neutral and TensorFlow tests.

`tests/core` holds the backend-neutral tests: they run on every Keras
backend (`KERAS_BACKEND=jax python -m pytest tests/core`). `tests/tf_backend`
(export, tf.distribute) and `tests/experiments` (the TFDS-based harness) need
the TensorFlow backend and are skipped on others.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import MNIST_DIR, Probe  # noqa: E402, F401  (sets TFDS_DATA_DIR)

BACKEND = keras.backend.backend()

if BACKEND != "tensorflow":
    collect_ignore = ["tf_backend", "experiments"]


def pytest_configure(config):
    if BACKEND == "tensorflow":
        # Two logical CPU devices, so MirroredStrategy tests run on one CPU.
        # This must happen before TensorFlow initialises its devices.
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpus[0],
            [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
        )


def pytest_report_header(config):
    return f"keras backend: {BACKEND}"


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


@pytest.fixture
def probe():
    return Probe()
