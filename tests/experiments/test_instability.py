"""Instability analysis of a tiny run's tickets: entries, masks, resume and refusals."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import MNIST_DIR, REPO, pythonpath

import lth_keras
from lth_keras.connectivity import barrier
from lth_keras.experiments import data, instability, runner
from lth_keras.experiments.placement import Placement
from lth_keras.experiments.presets import preset
from lth_keras.experiments.rundir import CorruptRunError

TINY = dict(
    rounds=1,
    iterations=40,
    eval_every=20,
    train_examples=600,
    validation_examples=300,
    test_examples=300,
    train_eval_examples=300,
    controls=(),
    width=0.2,
    jit_compile=False,  # compiling takes longer than these few steps
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    runner.run(preset("lenet", **TINY), path, verbose=0)
    return path


@pytest.mark.slow
def test_entries_of_two_rounds_at_two_rewind_points(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    entries = instability.run_instability(
        run_dir, rounds=(0, 1), rewind_iterations=(0, 20), alphas=3, output_dir=out
    )
    assert [(e["trial"], e["round"], e["k"]) for e in entries] == [
        (0, 0, 0),
        (0, 1, 0),
        (0, 0, 20),
        (0, 1, 20),
    ]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    remaining = {row["round"]: row["weights_remaining"] for row in rows}
    for entry in entries:
        assert entry["alphas"] == [0.0, 0.5, 1.0]
        assert all(0 <= e <= 1 for e in entry["errors"])
        assert entry["barrier"] == barrier(entry["errors"])
        assert entry["end_errors"] == [entry["errors"][0], entry["errors"][-1]]
        assert entry["weights_remaining"] == remaining[entry["round"]]
    assert remaining[0] == 1.0 > remaining[1]
    assert "k=20: 2 pairs" in capsys.readouterr().out
    assert json.loads((out / "instability.json").read_text()) == entries
    assert (out / "instability.png").read_bytes()[:4] == b"\x89PNG"
    # Run again: everything is done, nothing trains.
    again = instability.run_instability(
        run_dir, rounds=(1,), rewind_iterations=(20,), output_dir=out, verbose=0
    )
    assert again == [entries[3]]


def test_copies_start_from_the_masked_rewind_point_on_two_data_orders(run_dir):
    config = preset("lenet", **TINY)
    splits = data.load_config(config)
    members, meta = instability._pairs(config, run_dir, 20, [(0, 1)], splits, Placement(None))
    assert meta == [(0, 1), (0, 1)]
    masks = np.load(run_dir / "masks" / "round_01.npz")
    (a, stream_a), (b, stream_b) = members
    for model in (a, b):
        assert int(model.optimizer.iterations) == 20
        kernels = lth_keras.masks.get_kernels(model)
        for key in masks.files:
            assert not np.any(kernels[key][~masks[key]])
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
    (x_a, _), (x_b, _) = next(iter(stream_a)), next(iter(stream_b))
    assert not np.array_equal(x_a, x_b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rounds=(2,)), r"`rounds`, expected values in \[0, 1\]"),
        (dict(trials=(1,)), r"`trials`, expected values in \[0, 0\]"),
        (dict(rewind_iterations=(30,)), "multiples of eval_every=20 below iterations=40"),
        (dict(rewind_iterations=(40,)), "multiples of eval_every=20 below iterations=40"),
    ],
    ids=["round", "trial", "not-a-period", "at-the-end"],
)
def test_what_the_run_cannot_answer_is_refused(run_dir, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        instability.run_instability(run_dir, output_dir=tmp_path, verbose=0, **kwargs)


def _copy(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("lock"))
    return copy


def test_an_unfinished_round_is_refused(run_dir, tmp_path):
    copy = _copy(run_dir, tmp_path)
    progress = json.loads((copy / "progress.json").read_text())
    del progress["files"]["masks/round_01.npz"]
    (copy / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(ValueError, match="round_01.npz is not recorded as complete"):
        instability.run_instability(copy, rounds=(1,), output_dir=tmp_path / "o", verbose=0)


def test_an_altered_file_is_refused(run_dir, tmp_path):
    copy = _copy(run_dir, tmp_path)
    with open(copy / "rewind.ticket.npz", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(CorruptRunError, match="rewind.ticket.npz is altered or truncated"):
        instability.run_instability(copy, output_dir=tmp_path / "o", verbose=0)


@pytest.mark.slow
def test_the_example_script(run_dir, tmp_path):
    env = dict(os.environ, TFDS_DATA_DIR=MNIST_DIR, PYTHONPATH=pythonpath())
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the script must be quiet by itself
    script = os.path.join(REPO, "examples", "instability.py")
    args = [script, f"--run_dir={run_dir}", f"--output_dir={tmp_path}", "--rounds=1", "--alphas=2"]
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "oneDNN" not in result.stderr  # TensorFlow's C++ start-up lines are hidden
    assert result.stdout.splitlines()[-1].startswith("round  1 k=     0: barrier mean ")
    assert json.loads((tmp_path / "flags.json").read_text())["rounds"] == ["1"]
    assert [e["round"] for e in json.loads((tmp_path / "instability.json").read_text())] == [1]
