"""The example scripts run end to end on real MNIST with tiny flags."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import MNIST_DIR, REPO

import lth_keras


def run_example(script, *flags):
    env = dict(os.environ, TFDS_DATA_DIR=MNIST_DIR, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", script), *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_lenet_mnist_example(tmp_path):
    out = run_example(
        "lenet_mnist.py",
        "--rounds=2",
        "--epochs=1",
        "--train_examples=1200",
        f"--output_dir={tmp_path}",
    )
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [row[:2] for row in rows] == [["0", "100.0%"], ["1", "80.0%"], ["2", "64.1%"]]
    assert all(0.5 < float(row[2]) <= 1.0 for row in rows)
    with open(tmp_path / "flags.json") as f:
        assert json.load(f)["rounds"] == 2
    ticket = keras.models.load_model(tmp_path / "ticket.keras")
    total, _ = lth_keras.weights_remaining(ticket)
    assert total == pytest.approx(0.6406, abs=1e-4)
    for layer in lth_keras.masked_layers(ticket):
        assert np.all(layer._kernel.numpy()[layer.kernel_mask.numpy() == 0] == 0)
