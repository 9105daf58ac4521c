"""The example scripts run end to end with tiny flags and write their outputs."""

import csv
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import MNIST_DIR, REPO, pythonpath

import lth_keras

TINY = [
    "--rounds=1",
    "--iterations=4",
    "--eval_every=2",
    "--validation_examples=16",
    "--train_examples=48",
    "--test_examples=16",
    "--batch_size=8",
    "--controls=reinit,random",
]


CPP_LOG = re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ |^WARNING: All log messages before absl", re.M)


def run_example(*args, returncode=0, backend="tensorflow"):
    env = dict(os.environ, TFDS_DATA_DIR=MNIST_DIR, PYTHONPATH=pythonpath(), KERAS_BACKEND=backend)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the scripts must be quiet by themselves
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == returncode, result.stderr[-3000:]
    return result


def check_run_dir(run_dir, model, masked_layers, stdout):
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["round"], r["kind"]) for r in rows] == [
        ("0", "ticket"),
        ("1", "ticket"),
        ("1", "reinit"),
        ("1", "random"),
    ]
    assert float(rows[1]["weights_remaining"]) < 1.0
    assert json.loads((run_dir / "flags.json").read_text())["model"] == model
    assert json.loads((run_dir / "config.json").read_text())["config"]["model"] == model
    assert "winning ticket" in stdout and "ticket round  1" in stdout
    ticket = keras.models.load_model(run_dir / "ticket.keras")
    assert len(lth_keras.masked_layers(ticket)) == masked_layers
    masks = np.load(run_dir / "masks" / "round_01.npz")
    for key, mask in lth_keras.get_masks(ticket).items():
        np.testing.assert_array_equal(mask, masks[key])


@pytest.mark.slow
def test_lenet_mnist(tmp_path):
    result = run_example(
        os.path.join(REPO, "examples", "lenet_mnist.py"), *TINY, f"--output_dir={tmp_path}"
    )
    check_run_dir(tmp_path, "lenet", 3, result.stdout)
    # Quiet: no TensorFlow C++ log lines, no TFDS INFO logs; progress lines (not a TTY).
    assert not CPP_LOG.search(result.stderr), result.stderr[:2000]
    assert "Load dataset info" not in result.stderr
    assert "\nticket round  1 | 4/4 it | val acc " in result.stdout


@pytest.mark.slow
def test_lenet_mnist_on_jax(tmp_path):
    pytest.importorskip("jax")
    flags = [*TINY, "--jit_compile", f"--output_dir={tmp_path}"]
    script = os.path.join(REPO, "examples", "lenet_mnist.py")
    result = run_example(script, *flags, backend="jax")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["versions"]["backend"] == "jax"
    check_run_dir(tmp_path, "lenet", 3, result.stdout)
    # A finished run is not trained again and reports the same table.
    again = run_example(script, *flags, backend="jax")
    assert again.stdout.splitlines()[-3:] == result.stdout.splitlines()[-3:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, model, masked",
    [("conv_cifar10.py", "conv2", 5), ("vgg_resnet_cifar10.py", "resnet20", 22)],
    ids=["conv2", "resnet20"],
)
def test_cifar10_examples_with_mock_data(script, model, masked, tmp_path):
    result = run_example(
        os.path.join(REPO, "tests", "experiments", "mock_cifar10.py"),
        os.path.join(REPO, "examples", script),
        f"--model={model}",
        *TINY,
        f"--output_dir={tmp_path}",
    )
    check_run_dir(tmp_path, model, masked, result.stdout)


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--rate=1.5", "expected a float in (0, 1). Received: rate=1.5"),
        ("--verbose=3", "--verbose=3"),
        ("--controls=reinit,bogus", "controls=('reinit', 'bogus')"),
        ("--layer_rates=fc1=x", "expected NAME=RATE with a number RATE"),
        ("--eval_every=300", "a divisor of iterations=50000"),
        ("--eval_rounds=3", "() unless early_bird=True"),
    ],
    ids=["rate", "verbose", "controls", "layer-rates", "eval-every", "eval-rounds"],
)
def test_bad_flags_give_one_line(flag, message, tmp_path):
    result = run_example(
        os.path.join(REPO, "examples", "lenet_mnist.py"),
        flag,
        f"--output_dir={tmp_path}",
        returncode=1,
    )
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.listdir(tmp_path)  # nothing written
