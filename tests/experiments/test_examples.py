"""The example scripts run end to end with tiny flags and write their outputs."""

import csv
import dataclasses
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
from lth_keras.experiments import flag_help
from lth_keras.experiments.config import ExperimentConfig

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


def run_example(*args, returncode=0, backend="tensorflow", cwd=None):
    env = dict(os.environ, TFDS_DATA_DIR=MNIST_DIR, PYTHONPATH=pythonpath(), KERAS_BACKEND=backend)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the scripts must be quiet by themselves
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=600, cwd=cwd
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
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "lenet on mnist: 4 jobs (1 pruning round, controls reinit,random) of up to 4 "
        f"iterations; run directory {tmp_path}; a new run"
    )
    assert "\njob 2 of 4 | ticket round  1 | 4/4 it | val acc " in result.stdout
    assert "\njob 4 of 4 | random round  1 |  80.04% remaining | test acc " in result.stdout
    assert re.fullmatch(
        rf"finished 4 jobs in 0:\d\d; results in {re.escape(str(tmp_path))} \(.*\)", lines[-6]
    )


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
        ("--rate=abc", "flag --rate=abc: could not convert string to float: 'abc'"),
        ("--verbose=3", "flag --verbose=3: 3 is not an integer in the range [0, 2]"),
        ("--controls=reinit,bogus", "controls=('reinit', 'bogus')"),
        ("--layer_rates=fc1=x", "expected NAME=RATE with a number RATE"),
        ("--eval_every=300", "a divisor of iterations=50000"),
        ("--eval_rounds=3", "() unless early_bird=True"),
        ("--model=conv2", "flag --model=conv2: value should be one of <lenet>"),
        ("--ratee=0.1", "Unknown command line flag 'ratee'"),
        ("--iterations=1e19", "flag --iterations=1e19: invalid literal for int()"),
        (
            "--iterations=10000000000000000000",
            "expected an int of at most 1000000000. Received: iterations=10000000000000000000",
        ),
    ],
    ids=[
        "rate",
        "rate-type",
        "verbose",
        "controls",
        "layer-rates",
        "eval-every",
        "eval-rounds",
        "model",
        "unknown",
        "iterations-float",
        "iterations-bound",
    ],
)
def test_bad_flags_give_one_line_and_status_2(flag, message, tmp_path):
    result = run_example(
        os.path.join(REPO, "examples", "lenet_mnist.py"),
        flag,
        f"--output_dir={tmp_path}",
        returncode=2,
    )
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and message in line
    assert result.stdout == ""
    assert not os.listdir(tmp_path)  # nothing written


def _help_sections(text):
    """`{group: [flag names]}` of a script's `--help` output, groups in order."""
    sections = {}
    for line in text.splitlines():
        if re.fullmatch(r"[a-z]+:", line):
            group = sections.setdefault(line[:-1], [])
        elif line.startswith("  --"):
            group.append(re.match(r"  --(?:\[no\])?(\w+)", line).group(1))
    return sections


def test_help_groups_name_every_flag_once():
    names = [name for _, group in flag_help.GROUPS for name in group]
    fields = [f.name for f in dataclasses.fields(ExperimentConfig)]
    run_flags = ["output_dir", "fuse", "strategy", "tpu", "checkpoint_every", "verbose"]
    run_flags += ["compile_cache", "debug", "tf_logs"]
    assert sorted(names) == sorted(fields + run_flags)


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, help_flag, defaults",
    [
        ("lenet_mnist.py", "--help", ["--iterations (int)  default: 50000"]),
        ("lenet_mnist.py", "--helpshort", ["--model (lenet)  default: lenet"]),
        ("lenet_mnist.py", "-h", ["--verbose (int in [0, 2])  default: 1"]),
        (
            "conv_cifar10.py",
            "--help",
            [
                "--model (conv2|conv4|conv6)  default: conv2",
                "--iterations (int)  default: 20000 (conv2), 25000 (conv4), 30000 (conv6)",
            ],
        ),
        (
            "vgg_resnet_cifar10.py",
            "--help",
            [
                "--steps_per_execution (int)  default: 76 (the largest divisor of eval_every "
                "up to 100) (vgg19), 100 (the largest divisor of eval_every up to 100) "
                "(resnet20)",
                "--[no]augment  default: true",
                "--scope (layerwise|global)  default: global",
            ],
        ),
    ],
    ids=["lenet", "lenet-helpshort", "lenet-h", "conv", "vgg-resnet"],
)
def test_help_lists_the_flags_by_concern_with_defaults(script, help_flag, defaults, tmp_path):
    result = run_example(os.path.join(REPO, "examples", script), help_flag, cwd=tmp_path)
    assert result.stdout.startswith("Find a winning ticket") or result.stdout.startswith(
        "Find winning tickets"
    )
    assert _help_sections(result.stdout) == {
        group: list(names) for group, names in flag_help.GROUPS
    }
    lines = result.stdout.splitlines()
    for line in defaults:
        assert f"  {line}" in lines
    assert result.stderr == ""
    assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.slow
def test_helpfull_exits_0_and_lists_absl_flags():
    result = run_example(os.path.join(REPO, "examples", "lenet_mnist.py"), "--helpfull")
    assert "--[no]only_check_args" in result.stdout
    assert "  --iterations: Training steps per round." in result.stdout
