"""The experiment runner end to end on real MNIST, with resume and corruption."""

import json
import os
import signal
import subprocess

import keras
import numpy as np
import pytest
from helpers import lenet_counts, run_until, stored

import lth_keras
from lth_keras.experiments import jobs
from lth_keras.experiments import runner as experiment
from lth_keras.experiments.presets import preset
from lth_keras.experiments.rundir import CorruptRunError

TINY = dict(
    rounds=2,
    iterations=60,
    eval_every=20,
    train_examples=600,
    validation_examples=300,
    test_examples=300,
    controls=("reinit", "random"),
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    rows = experiment.run(preset("lenet", **TINY), run_dir, verbose=0)
    return run_dir, rows


@pytest.mark.slow
def test_run_writes_every_artifact(finished):
    run_dir, rows = finished
    assert [(r["round"], r["kind"]) for r in rows] == [
        (0, "ticket"),
        (1, "ticket"),
        (1, "reinit"),
        (1, "random"),
        (2, "ticket"),
        (2, "reinit"),
        (2, "random"),
    ]
    for row in rows:
        assert row["iterations"] == 60 and row["es_iteration"] in (20, 40, 60)
        assert 0.3 < row["test_accuracy_es"] <= 1 and 0.3 < row["train_accuracy"] <= 1
    for r in range(3):
        masks = np.load(run_dir / "masks" / f"round_{r:02d}.npz")
        assert {k: int(masks[k].sum()) for k in masks.files} == lenet_counts(r)
    with open(run_dir / "metrics.jsonl") as f:
        assert [json.loads(line) for line in f] == rows
    csv_lines = (run_dir / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("round,kind,weights_remaining") and len(csv_lines) == 8
    for name in ("accuracy", "early_stopping"):
        assert (run_dir / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "winning ticket" in (run_dir / "summary.txt").read_text()
    events = [f for _, _, files in os.walk(run_dir / "tensorboard") for f in files]
    assert len(events) >= 7 and all(f.startswith("events.out.tfevents") for f in events)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"] == preset("lenet", **TINY).to_dict()
    assert set(config["versions"]) == {"lth_keras", "keras", "tensorflow", "backend"}
    rewind = lth_keras.load_ticket(run_dir / "rewind.ticket.npz")
    assert sorted(rewind.rewind) == sorted(
        f"{layer}/{w}" for layer in ("fc1", "fc2", "output") for w in ("kernel", "bias")
    )
    assert all(m.all() for m in rewind.masks.values())
    # The final ticket: the last round's masks, pruned weights exactly zero.
    ticket = keras.models.load_model(run_dir / "ticket.keras")
    last = np.load(run_dir / "masks" / "round_02.npz")
    for key, mask in lth_keras.get_masks(ticket).items():
        np.testing.assert_array_equal(mask, last[key])
        layer = ticket.get_layer(key.split("/")[0])
        assert np.all(stored(layer).numpy()[~mask] == 0)
        np.testing.assert_array_equal(layer.kernel_initial.numpy(), rewind.rewind[key])
    # No checkpoint or superseded round state is left behind.
    assert not os.listdir(run_dir / "checkpoints")
    assert os.listdir(run_dir / "state") == [
        "round_02-snapshot.npz",
        "round_02.weights.h5",
    ] or sorted(os.listdir(run_dir / "state")) == ["round_02-snapshot.npz", "round_02.weights.h5"]


@pytest.mark.slow
def test_rerun_skips_finished_work_and_other_configs_are_refused(finished, capsys, monkeypatch):
    run_dir, rows = finished
    before = (run_dir / "metrics.jsonl").read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run trained again")

    monkeypatch.setattr(jobs.Jobs, "fit", no_training)
    assert experiment.run(preset("lenet", **TINY), run_dir, verbose=1) == rows
    assert (run_dir / "metrics.jsonl").read_bytes() == before
    assert "winning ticket" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"different config \(differences in: \['rounds'\]\)"):
        experiment.run(preset("lenet", **dict(TINY, rounds=3)), run_dir, verbose=0)


def _killed_before(source, run_dir, job):
    """A copy of a finished run as if killed before its last job, `job`, finished."""
    subprocess.run(["cp", "-r", str(source), str(run_dir)], check=True)
    progress = json.loads((run_dir / "progress.json").read_text())
    del progress["done"][job], progress["final"], progress["files"]["ticket.keras"]
    (run_dir / "progress.json").write_text(json.dumps(progress))


@pytest.mark.slow
def test_damaged_files_are_made_again_or_stop_the_run(finished, tmp_path):
    source, rows = finished
    run_dir = tmp_path / "copy"
    _killed_before(source, run_dir, "random-r02")
    masks = run_dir / "masks" / "round_02.npz"
    masks.write_bytes(masks.read_bytes()[:-100])  # the last round's: its state holds them
    with pytest.warns(UserWarning, match="masks/round_02.npz altered or truncated: made again"):
        again = experiment.run(preset("lenet", **TINY), run_dir, verbose=0)
    assert [r["kind"] for r in again] == [r["kind"] for r in rows]
    for name in ("round_02.npz", "round_01.npz"):
        a, b = np.load(source / "masks" / name), np.load(run_dir / "masks" / name)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    # An earlier round's masks: held nowhere else.
    run_dir = tmp_path / "copy2"
    _killed_before(source, run_dir, "random-r02")
    masks = run_dir / "masks" / "round_01.npz"
    masks.write_bytes(masks.read_bytes()[:-100])
    with pytest.raises(
        CorruptRunError, match=r"cannot be made again from the others: masks/round_01.npz \(altered"
    ):
        experiment.run(preset("lenet", **TINY), run_dir, verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["checkpoint", "start"])
def test_a_damaged_checkpoint_restarts_its_job_to_the_same_results(damaged, tmp_path, monkeypatch):
    config = preset("lenet", **dict(TINY, rounds=0, controls=()))
    reference = experiment.run(config, tmp_path / "reference", verbose=0)
    monkeypatch.setattr(experiment, "CHECKPOINT_SECONDS", 0.0)  # one at every period but the last

    def crash(*args, **kwargs):
        raise _Crash()

    monkeypatch.setattr(jobs.Jobs, "finish", crash)
    run_dir = tmp_path / "run"
    with pytest.raises(_Crash):
        experiment.run(config, run_dir, verbose=0)
    monkeypatch.undo()
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["checkpoint"]["period"] == 2
    if damaged == "checkpoint":
        name = next(n for n in progress["checkpoint"]["files"] if n.endswith(".h5"))
    else:
        name = progress["start"]["file"]
    (run_dir / name).write_bytes(b"damaged")
    with pytest.warns(UserWarning, match=f"{name} altered or truncated: ticket-r00 starts again"):
        resumed = experiment.run(config, run_dir, verbose=0)
    for a, b in zip(reference, resumed, strict=True):
        a, b = dict(a), dict(b)
        a.pop("wall_seconds"), b.pop("wall_seconds")
        assert a == b
    assert not os.listdir(run_dir / "checkpoints")


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"exclude": ("nosuchlayer",)}, "Received a key in `exclude` that matches no masked layer"),
        ({"validation_examples": 100000}, "expected an int in (0, 60000) for mnist"),
        ({"train_examples": 50, "batch_size": 60}, "expected at most the 50 training images"),
    ],
    ids=["exclude", "validation-examples", "batch-size"],
)
def test_what_does_not_fit_is_refused_before_the_run_directory_exists(changes, message, tmp_path):
    with pytest.raises(ValueError) as caught:
        experiment.run(preset("lenet", **dict(TINY, **changes)), tmp_path / "run", verbose=0)
    assert message in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_a_batch_whose_activations_cannot_fit_in_memory_is_refused():
    from lth_keras.experiments import checks

    model = lth_keras.prunable(
        keras.Sequential([keras.Input((784,)), keras.layers.Dense(300), keras.layers.Dense(10)])
    )

    class Splits:
        train_size = 55000

    config = preset("lenet", batch_size=50000)
    checks.check_fit(config, Splits(), model, memory=2**40)  # 1 TiB: fits
    with pytest.raises(ValueError, match="one batch of 50000 needs at least 59 MiB for its"):
        checks.check_fit(config, Splits(), model, memory=2**25)


RUNNER = """
import sys
from lth_keras.experiments import runner as experiment
from lth_keras.experiments.presets import preset
experiment.CHECKPOINT_SECONDS = 0.0  # the default policy, due at every period but the last
experiment.run(preset("lenet", rounds=2, iterations=60, eval_every=20, train_examples=600,
                      validation_examples=300, test_examples=300, controls=("reinit", "pft")),
               sys.argv[1], verbose=0)
"""


def _run_until(run_dir, stop):
    return run_until(RUNNER, run_dir, stop)


def _checkpoint_at(job, period):
    def stop(progress):
        entry = progress.get("checkpoint")
        return entry is not None and entry["job"] == job and entry["period"] >= period

    return stop


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_masks(tmp_path):
    reference = tmp_path / "reference"
    code, err = _run_until(reference, None)
    assert code == 0, err[-2000:]
    killed = tmp_path / "killed"
    # Killed inside round 1's training, then inside round 1's controls, then
    # right after round 2 of the ticket finished, then inside its PFT.
    for stop in (
        _checkpoint_at("ticket-r01", 1),
        _checkpoint_at("reinit-r01", 2),
        _checkpoint_at("pft-r01", 1),
        lambda p: "ticket-r02" in p["done"],
        _checkpoint_at("pft-r02", 2),
    ):
        code, err = _run_until(killed, stop)
        assert code == -signal.SIGKILL, err[-2000:]
    code, err = _run_until(killed, None)
    assert code == 0, err[-2000:]
    for r in range(3):
        a = np.load(reference / "masks" / f"round_{r:02d}.npz")
        b = np.load(killed / "masks" / f"round_{r:02d}.npz")
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    rows = [[json.loads(line) for line in open(d / "metrics.jsonl")] for d in (reference, killed)]
    assert [r["kind"] for r in rows[0]].count("pft") == 2
    assert all("overlap@0.2" in row for row in rows[0])
    for row_a, row_b in zip(*rows, strict=True):
        row_a.pop("wall_seconds"), row_b.pop("wall_seconds")
        assert row_a == row_b


class _Crash(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("reset", ["finetune", "lr_rewind"])
def test_resume_between_rounds_restores_the_optimizer(reset, tmp_path, monkeypatch):
    """Finetuning continues the step count, so it must survive a restart."""
    config = preset("lenet", **dict(TINY, controls=(), reset=reset))
    reference = experiment.run(config, tmp_path / "reference", verbose=0)
    original = experiment.Experiment._ticket

    def crash_at_round_2(self, round_):
        if round_ == 2:
            raise _Crash()
        return original(self, round_)

    monkeypatch.setattr(experiment.Experiment, "_ticket", crash_at_round_2)
    with pytest.raises(_Crash):
        experiment.run(config, tmp_path / "resumed", verbose=0)
    monkeypatch.setattr(experiment.Experiment, "_ticket", original)
    resumed = experiment.run(config, tmp_path / "resumed", verbose=0)
    for a, b in zip(reference, resumed, strict=True):
        a, b = dict(a), dict(b)
        a.pop("wall_seconds"), b.pop("wall_seconds")
        assert a == b
    masks = [
        np.load(d / "masks" / "round_02.npz")
        for d in (tmp_path / "reference", tmp_path / "resumed")
    ]
    for key in masks[0].files:
        np.testing.assert_array_equal(masks[0][key], masks[1][key])


@pytest.mark.slow
@pytest.mark.parametrize(
    "every, seconds, expected",
    [(None, 3600.0, []), (None, 0.0, [1, 2]), (2, 3600.0, [2, 3])],
    ids=["default-short-job", "default-due-each-period", "every-2-periods"],
)
def test_checkpoint_policy(every, seconds, expected, tmp_path, monkeypatch):
    saved = []
    original = experiment.RunState.save_checkpoint

    def spy(self, job, model, period, *args, **kwargs):
        if job == "ticket-r00":
            saved.append(period)
        return original(self, job, model, period, *args, **kwargs)

    monkeypatch.setattr(experiment, "CHECKPOINT_SECONDS", seconds)
    monkeypatch.setattr(experiment.RunState, "save_checkpoint", spy)
    config = preset("lenet", **dict(TINY, rounds=0, controls=()))
    experiment.run(config, tmp_path / "run", verbose=0, checkpoint_every=every)
    assert saved == expected
