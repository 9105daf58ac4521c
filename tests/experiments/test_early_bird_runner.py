"""Early-bird rounds in the runner: config, flags, stops, evaluation rounds, resume."""

import json
import os
import signal

import numpy as np
import pytest
from helpers import lenet_counts, run_until

from lth_keras.experiments import cli
from lth_keras.experiments import runner as experiment
from lth_keras.experiments.config import ExperimentConfig
from lth_keras.experiments.early_bird import mask_iterations
from lth_keras.experiments.presets import preset

# 10 periods of 10 steps; with threshold 1 every distance passes, so each
# round's mask is drawn at the earliest period the window allows: the 3rd.
EARLY = dict(
    rounds=2,
    iterations=100,
    eval_every=10,
    train_examples=600,
    validation_examples=300,
    test_examples=300,
    early_bird=True,
    early_bird_window=3,
    early_bird_threshold=1.0,
)


def _masks(run_dir, round_):
    with np.load(run_dir / "masks" / f"round_{round_:02d}.npz") as data:
        return {key: data[key] for key in data.files}


def _rows(run_dir):
    with open(run_dir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        row.pop("wall_seconds"), row.pop("early_bird_seconds", None)
    return rows


def _assert_same_masks(a, b, rounds):
    for r in range(rounds + 1):
        masks_a, masks_b = _masks(a, r), _masks(b, r)
        assert masks_a.keys() == masks_b.keys()
        for key in masks_a:
            np.testing.assert_array_equal(masks_a[key], masks_b[key])


# Config and flags -----------------------------------------------------------


def test_defaults_round_trip_and_keep_older_hashes():
    config = preset("lenet", early_bird=True, eval_rounds=[1, 3], control_rounds=[2])
    assert (config.early_bird_window, config.early_bird_threshold) == (5, 0.1)
    assert config.eval_rounds == (1, 3) and config.control_rounds == (2,)
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    # Hashes of the release before these fields, computed with its code.
    assert preset("lenet").hash() == "56e89bc1db"
    assert preset("conv2").hash() == "9f90471853"
    changed = preset("lenet", rounds=3, controls=("reinit", "shuffle"), iterations=5000)
    assert changed.replace(eval_every=500).hash() == "fdfae7956e"
    assert preset("lenet", early_bird=True).hash() != preset("lenet").hash()


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"early_bird": 1}, r"`early_bird`, expected True or False. Received: early_bird=1"),
        ({"early_bird_window": 1}, r"early_bird_window`, expected an int >= 2"),
        (
            {"early_bird": True, "iterations": 1000, "eval_every": 500},
            r"at most the 2 evaluation periods .* Received: early_bird_window=5",
        ),
        ({"early_bird_threshold": 1.5}, r"in \[0, 1\]. Received: early_bird_threshold=1.5"),
        ({"early_bird_threshold": "0.1"}, r"Received: early_bird_threshold='0.1'"),
        ({"eval_rounds": (3,)}, r"unless early_bird=True"),
        ({"early_bird": True, "eval_rounds": (16,)}, r"from 0 to rounds=15"),
        ({"control_rounds": (0,)}, r"from 1 to rounds=15. Received: control_rounds=\(0,\)"),
        ({"control_rounds": (3, 2)}, r"strictly increasing"),
        ({"control_rounds": (True,)}, r"control_rounds=\(True,\)"),
    ],
    ids=[
        "early-bird-int",
        "window",
        "window-above-periods",
        "threshold",
        "threshold-str",
        "eval-rounds-without",
        "eval-rounds-range",
        "control-rounds-zero",
        "control-rounds-order",
        "control-rounds-bool",
    ],
)
def test_invalid_configs(changes, match):
    with pytest.raises(ValueError, match=match):
        preset("lenet", **changes)


def test_flags_build_the_config():
    values = {name: None for name in ExperimentConfig.__dataclass_fields__}
    values.update(
        model="lenet",
        early_bird=True,
        early_bird_window=4,
        early_bird_threshold=0.05,
        eval_rounds=["3", "7"],
        control_rounds=["7"],
    )
    config = cli.config_from_flags(values)
    assert config == preset(
        "lenet",
        early_bird=True,
        early_bird_window=4,
        early_bird_threshold=0.05,
        eval_rounds=(3, 7),
        control_rounds=(7,),
    )
    values.update(eval_rounds=["x"])
    with pytest.raises(ValueError, match="`eval_rounds`, expected round numbers"):
        cli.config_from_flags(values)


def test_mask_iterations_adds_each_rounds_draw():
    assert mask_iterations({"mask_iterations": 0, "iterations": 500}, 0) == 500
    drawn = {"mask_iterations": 500, "iterations": 500, "early_bird_iteration": 300}
    assert mask_iterations(drawn, 0) == 800
    assert mask_iterations(dict(drawn, early_bird_iteration=300), 100) == 700
    assert mask_iterations({"iterations": 500}, 0) is None  # a run older than the field


# The runner -----------------------------------------------------------------


@pytest.fixture(scope="module")
def early(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("early")
    experiment.run(preset("lenet", **EARLY), run_dir, verbose=0)
    return run_dir


@pytest.mark.slow
def test_rounds_stop_at_the_draw_and_the_last_trains_in_full(early):
    rows = _rows(early)
    assert [(r["round"], r["iterations"]) for r in rows] == [(0, 30), (1, 30), (2, 100)]
    assert [r["mask_iterations"] for r in rows] == [0, 30, 60]
    for row in rows[:2]:
        assert row["early_bird_iteration"] == 30
        assert len(row["early_bird_distances"]) == 3 and row["early_bird_distances"][0] is None
        assert row["early_bird_distance"] == row["early_bird_distances"][-1]
        assert 0 < row["early_bird_distance"] <= 1
    assert "early_bird_iteration" not in rows[2]
    for r in range(3):
        assert {k: int(m.sum()) for k, m in _masks(early, r).items()} == lenet_counts(r)
    records = json.loads((early / "records" / "ticket-r00.json").read_text())
    assert [("early_bird_distance" in rec) for rec in records] == [False, True, True]
    header = (early / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"mask_iterations", "early_bird_iteration", "early_bird_distance"} <= set(header)


@pytest.mark.slow
def test_evaluation_round_trains_on_without_changing_masks(early, tmp_path):
    run_dir = tmp_path / "eval"
    experiment.run(preset("lenet", **dict(EARLY, eval_rounds=(1,))), run_dir, verbose=0)
    _assert_same_masks(early, run_dir, 2)
    rows = _rows(run_dir)
    assert [(r["round"], r["iterations"]) for r in rows] == [(0, 30), (1, 100), (2, 100)]
    assert rows[1]["early_bird_iteration"] == 30
    assert [r["mask_iterations"] for r in rows] == [0, 30, 60]
    # Round 1's first 30 steps and the mask they draw are those of the plain run.
    plain = _rows(early)
    assert rows[1]["early_bird_distances"] == plain[1]["early_bird_distances"]
    records = json.loads((run_dir / "records" / "ticket-r01.json").read_text())
    assert [rec["iteration"] for rec in records] == list(range(10, 101, 10))
    assert "drawn" not in json.loads((run_dir / "progress.json").read_text())
    assert not os.listdir(run_dir / "checkpoints")


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_resume_at_the_draw_and_after_it(early, tmp_path, monkeypatch):
    """Crashed with a checkpoint at the draw, then inside the evaluation training."""
    config = preset("lenet", **dict(EARLY, eval_rounds=(1,)))
    reference = tmp_path / "reference"
    experiment.run(config, reference, verbose=0, checkpoint_every=1)
    save = experiment.RunState.save_checkpoint
    for job, period in (("ticket-r00", 3), ("ticket-r01-full", 5)):

        def crash(self, name, model, at, *args, job=job, period=period, **kwargs):
            save(self, name, model, at, *args, **kwargs)
            if (name, at) == (job, period):
                raise _Crash()

        monkeypatch.setattr(experiment.RunState, "save_checkpoint", crash)
        with pytest.raises(_Crash):
            experiment.run(config, tmp_path / "resumed", verbose=0, checkpoint_every=1)
    monkeypatch.setattr(experiment.RunState, "save_checkpoint", save)
    experiment.run(config, tmp_path / "resumed", verbose=0, checkpoint_every=1)
    _assert_same_masks(reference, tmp_path / "resumed", 2)
    assert _rows(reference) == _rows(tmp_path / "resumed")


RUNNER = """
import sys
from lth_keras.experiments import runner as experiment
from lth_keras.experiments.presets import preset
experiment.run(preset("lenet", rounds=2, iterations=100, eval_every=10, train_examples=600,
                      validation_examples=300, test_examples=300, early_bird=True,
                      early_bird_window=3, early_bird_threshold=1.0, eval_rounds=(1,)),
               sys.argv[1], verbose=0, checkpoint_every=1)
"""


def _run_until(run_dir, stop):
    return run_until(RUNNER, run_dir, stop)


@pytest.mark.slow
def test_sigkilled_early_bird_run_resumes_to_the_same_masks(tmp_path):
    reference = tmp_path / "reference"
    assert _run_until(reference, None)[0] == 0
    killed = tmp_path / "killed"
    for stop in (
        lambda p: (p.get("checkpoint") or {}).get("job") == "ticket-r00",
        lambda p: "drawn" in p,
        lambda p: (p.get("checkpoint") or {}).get("job") == "ticket-r01-full",
    ):
        code, err = _run_until(killed, stop)
        assert code == -signal.SIGKILL, err[-2000:]
    code, err = _run_until(killed, None)
    assert code == 0, err[-2000:]
    _assert_same_masks(reference, killed, 2)
    assert _rows(reference) == _rows(killed)
