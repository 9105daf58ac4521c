"""Keras 3 multi-device on JAX (keras.distribution.DataParallel): the same masks as one device."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import REPO, pythonpath

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="keras.distribution runs on JAX"
)


def _masks(mode, tmp_path):
    out = tmp_path / f"{mode}.npz"
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        PYTHONPATH=pythonpath(),
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    script = os.path.join(REPO, "tests", "core", "jax_data_parallel.py")
    result = subprocess.run(
        [sys.executable, script, mode, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.slow
def test_data_parallel_gives_single_device_masks(tmp_path):
    single = _masks("single", tmp_path)
    parallel = _masks("parallel", tmp_path)
    assert single.keys() == parallel.keys() and len(single) == 3
    for key in single:
        np.testing.assert_array_equal(single[key], parallel[key], err_msg=key)
    assert 0 < sum(m.sum() for m in single.values()) < sum(m.size for m in single.values())
