"""Faults users meet: a full disk, a read-only folder, two runs in one directory,
missing data offline, damaged or hand-edited run files, damaged data, values
that cannot fit. Each gives one line and exit status 1, and nothing written
before is lost; what can be made again from the other files is, with a
warning."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from helpers import MNIST_DIR, REPO, pythonpath

import lth_keras
from lth_keras.experiments import data

SCRIPT = os.path.join(REPO, "examples", "lenet_mnist.py")
TINY = [
    "--rounds=1",
    "--iterations=40",
    "--eval_every=10",
    "--validation_examples=100",
    "--train_examples=300",
    "--test_examples=100",
    "--controls=reinit",
    "--seed=3",
]


def _env(**changes):
    env = {**os.environ, "TFDS_DATA_DIR": MNIST_DIR, "PYTHONPATH": pythonpath(), **changes}
    env.pop("KERAS_BACKEND", None)
    return env


def _run(*flags, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, SCRIPT, *flags],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=timeout,
    )


def _one_error_line(result):
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


def _files(run_dir):
    """Every file under `run_dir` with its bytes: what "nothing changed on disk" compares."""
    return {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _edit(path, change):
    value = json.loads(path.read_text())
    path.write_text(json.dumps(change(value)))


def _unfinished(job):
    """A change of `progress.json` back to before `job`, the last, finished."""

    def change(progress):
        del progress["done"][job], progress["final"], progress["files"]["ticket.keras"]
        return progress

    return change


def _masks(run_dir):
    out = {}
    for name in sorted(os.listdir(run_dir / "masks")):
        with np.load(run_dir / "masks" / name) as masks:
            out[name] = {key: masks[key] for key in masks.files}
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    result = _run(*TINY, f"--output_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture
def small_disk(tmp_path):
    """A 7 MB tmpfs (root only): room for a few checkpoints of LeNet, not a run."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=7m", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


@pytest.mark.slow
def test_full_disk_one_line_then_resume_to_the_same_masks(small_disk, tmp_path, reference):
    run_dir = small_disk / "run"
    result = _run(*TINY, f"--output_dir={run_dir}")
    line = _one_error_line(result)
    assert "No space left on device" in line and str(small_disk) in line
    assert "MB free" in line and "run the same command again" in line
    assert "Segmentation" not in result.stderr
    # Everything written before stays valid: moved to a larger disk, it resumes.
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    resumed = _run(*TINY, f"--output_dir={moved}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference_masks, masks = _masks(reference), _masks(moved)
    assert reference_masks.keys() == masks.keys()
    for name in masks:
        for key in masks[name]:
            np.testing.assert_array_equal(masks[name][key], reference_masks[name][key])


@pytest.mark.slow
def test_read_only_directory_one_line(small_disk):
    (small_disk / "run").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = _run(*TINY, f"--output_dir={small_disk / 'run'}")
    line = _one_error_line(result)
    assert "Read-only file system" in line and "run" in line


@pytest.mark.slow
def test_second_run_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    # Long enough for the second run to start while the first trains.
    flags = [*TINY, "--iterations=3000", "--eval_every=500", f"--output_dir={run_dir}"]
    first = subprocess.Popen(
        [sys.executable, SCRIPT, *flags],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not (run_dir / "progress.json").exists() and time.time() < deadline:
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.05)
        began = time.time()
        second = _run(*flags)
        line = _one_error_line(second)
        assert f"is in use by process {first.pid}" in line and "examples/lenet_mnist.py" in line
        assert time.time() - began < 60  # refused at once (start-up included)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The lock of the killed run is free: the same command resumes and finishes.
    resumed = _run(*flags)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(_masks(run_dir)) == ["round_00.npz", "round_01.npz"]


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    from lth_keras.experiments.rundir import RunDir
    from lth_keras.experiments.runlock import _held

    first = RunDir(tmp_path, {"a": 1})
    second = RunDir(tmp_path, {"a": 1})
    assert _held[str(tmp_path)][1] == 2
    first.close()
    second.close()
    assert str(tmp_path) not in _held


@pytest.mark.skipif(
    data._reachable("storage.googleapis.com", timeout=2) is None,
    reason="MNIST's download host is reachable here",
)
def test_missing_data_offline_fails_within_seconds(tmp_path):
    empty = tmp_path / "tfds"
    empty.mkdir()
    began = time.time()
    result = _run(*TINY, f"--output_dir={tmp_path / 'run'}", env=_env(TFDS_DATA_DIR=str(empty)))
    line = _one_error_line(result)
    assert time.time() - began < 60  # TFDS alone retries for minutes
    assert f"mnist is not in the TFDS data directory {empty}" in line
    assert "Set TFDS_DATA_DIR" in line


@pytest.mark.slow
def test_damaged_file_one_line_and_traceback_with_debug(tmp_path, reference):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    # As if killed before the last control finished; then damage a file no other holds.
    _edit(run_dir / "progress.json", _unfinished("reinit-r01"))
    masks = run_dir / "masks" / "round_00.npz"
    masks.write_bytes(masks.read_bytes()[:-50])
    before = _files(run_dir)
    line = _one_error_line(_run(*TINY, f"--output_dir={run_dir}"))
    assert line == (
        f"error: The run directory {run_dir} has damaged files that cannot be made again from "
        "the others: masks/round_00.npz (altered or truncated). Restore them from a copy of "
        "the run directory, or delete it to start over."
    )
    assert _files(run_dir) == before
    debug = _run(*TINY, f"--output_dir={run_dir}", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@pytest.mark.slow
@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_crafted_progress_cannot_delete_files_outside(tmp_path, reference, where):
    """A stale checkpoint entry naming a file outside the run (issue 26, item 1)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run_dir = tmp_path / "a" / "run"
    shutil.copytree(reference, run_dir)
    progress = json.loads((run_dir / "progress.json").read_text())
    del progress["done"]["reinit-r01"]  # so the next run trains and finishes a job
    name = str(victim) if where == "absolute" else "../../victim.txt"
    progress["checkpoint"] = {"job": "reinit-r01", "period": 1, "files": {name: "0" * 64}}
    (run_dir / "progress.json").write_text(json.dumps(progress))
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    line = _one_error_line(_run(*TINY, f"--output_dir={run_dir}"))
    assert "not a file a run writes" in line and repr(name) in line
    assert victim.read_text() == "keep me"
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "lock"}
    assert after == {p: b for p, b in before.items() if p.name != "lock"}


def test_the_lock_is_removed_when_the_run_ends(reference):
    assert not (reference / "lock").exists()


def _set(*keys, to):
    def change(value):
        inner = value
        for key in keys[:-1]:
            inner = inner[key]
        inner[keys[-1]] = to
        return value

    return change


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, change, message",
    [
        (
            "config.json",
            _set("config", "iterations", to="40"),
            "config.json is damaged: field `config`: Received an invalid value for `iterations`, "
            "expected an int >= 1. Received: iterations='40'",
        ),
        (
            "progress.json",
            _set("done", "ticket-r01", "test_accuracy_es", to="0.85"),
            "progress.json is damaged: field `done.ticket-r01.test_accuracy_es` should be a "
            "number in [0, 1], found the string '0.85'",
        ),
        (
            "progress.json",
            _set("round_end", "round", to=0),
            "progress.json is damaged: field `round_end.round` should be 1, the last ticket "
            "round finished, found the int 0",
        ),
    ],
    ids=["config-string", "progress-string", "progress-round"],
)
def test_hand_edited_run_files_give_one_line(tmp_path, reference, name, change, message):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    _edit(run_dir / name, change)
    before = _files(run_dir)
    line = _one_error_line(_run(*TINY, f"--output_dir={run_dir}"))
    assert line.startswith(f"error: {run_dir / name} is damaged: ") and message in line
    assert line.endswith(
        "Restore the file (or undo the edit), or delete the run directory to start over."
    )
    assert _files(run_dir) == before


@pytest.mark.slow
def test_finished_run_makes_damaged_files_again_and_says_so(tmp_path, reference):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    (run_dir / "ticket.keras").unlink()
    masks = run_dir / "masks" / "round_01.npz"  # the last round: its state holds the masks
    masks.write_bytes(masks.read_bytes()[:-50])
    (run_dir / "metrics.csv").unlink()
    plot = run_dir / "plots" / "accuracy.png"
    plot.write_bytes(plot.read_bytes()[:100])
    result = _run(*TINY, f"--output_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.splitlines() == [
        f"warning: {run_dir}: ticket.keras missing: saved again from state/round_01.weights.h5.",
        f"warning: {run_dir}: masks/round_01.npz altered or truncated: made again from "
        "state/round_01.weights.h5.",
        f"warning: {run_dir}: metrics.csv, plots/accuracy.png missing, damaged or out of date: "
        "made again from the results in progress.json.",
    ]
    assert result.stdout.endswith((reference / "summary.txt").read_text())
    masks, reference_masks = _masks(run_dir), _masks(reference)
    assert masks.keys() == reference_masks.keys()
    for name in masks:
        for key in reference_masks[name]:
            np.testing.assert_array_equal(masks[name][key], reference_masks[name][key])
    for name in ("metrics.csv", "metrics.jsonl", "summary.txt"):
        assert (run_dir / name).read_bytes() == (reference / name).read_bytes()
    assert plot.read_bytes() == (reference / "plots" / "accuracy.png").read_bytes()
    ticket = lth_keras.get_masks(keras.models.load_model(run_dir / "ticket.keras"))
    for key, mask in _masks(reference)["round_01.npz"].items():
        np.testing.assert_array_equal(ticket[key], mask)
    # The new checksums are recorded: the next run finds nothing to say.
    again = _run(*TINY, f"--output_dir={run_dir}")
    assert again.returncode == 0 and again.stderr == "", again.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, listed",
    [
        (
            {"rewind.ticket.npz": "truncate", "masks/round_00.npz": "delete"},
            "masks/round_00.npz (missing), rewind.ticket.npz (altered or truncated)",
        ),
        (
            {"state/round_01.weights.h5": "truncate", "ticket.keras": "truncate"},
            "state/round_01.weights.h5 (altered or truncated), ticket.keras (altered or truncated)",
        ),
        ({"records/ticket-r00.json": "delete"}, "records/ticket-r00.json (missing)"),
    ],
    ids=["rewind-and-masks", "state-and-ticket", "records"],
)
def test_finished_run_with_files_lost_one_line(tmp_path, reference, damage, listed):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    for name, how in damage.items():
        path = run_dir / name
        if how == "delete":
            path.unlink()
        else:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = _files(run_dir)
    result = _run(*TINY, f"--output_dir={run_dir}")
    line = _one_error_line(result)
    assert f"cannot be made again from the others: {listed}. Restore them" in line
    assert "winning ticket" not in result.stdout  # no table
    assert _files(run_dir) == before


@pytest.fixture
def tfds_copy(tmp_path):
    copy = tmp_path / "tfds"
    shutil.copytree(MNIST_DIR, copy)
    return copy, next((copy / "mnist").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_tfds_shard_one_line(tmp_path, tfds_copy, damage):
    copy, folder = tfds_copy
    shard = folder / "mnist-test.tfrecord-00000-of-00001"
    if damage == "missing":
        shard.unlink()
        problem = "is missing"
    else:
        shard.write_bytes(shard.read_bytes()[:100000])
        problem = "is truncated or altered (the test split has 100000 bytes"
    env = _env(TFDS_DATA_DIR=str(copy), LTH_KERAS_CACHE=str(tmp_path / "cache"))
    line = _one_error_line(_run(*TINY, f"--output_dir={tmp_path / 'run'}", env=env))
    shard_name = "mnist-test.tfrecord-00000-of-00001"
    assert line.startswith(f"error: The mnist data in {folder} is damaged: {shard_name} {problem}")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "flag, message",
    [
        (
            "--batch_size=1000000",
            "Received an invalid value for `batch_size`, expected at most the 300 training "
            "images of mnist (validation_examples=100 held out). Received: batch_size=1000000",
        ),
        (
            "--layer_rates=nosuchlayer=0.5",
            "Received a key in `layer_rates` that matches no masked layer name, path or type. "
            "Received: 'nosuchlayer'; layers: ['fc1', 'fc2', 'output']",
        ),
    ],
    ids=["batch-size", "layer-rates"],
)
def test_values_that_do_not_fit_are_refused_before_anything_is_written(tmp_path, flag, message):
    line = _one_error_line(_run(*TINY, flag, f"--output_dir={tmp_path / 'run'}"))
    assert message in line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_failed_start_leaves_nothing_and_an_unwritable_cache_is_skipped(tmp_path):
    run_dir = tmp_path / "run"
    # Refused when round 0 starts, after the run directory was made: it is removed again.
    line = _one_error_line(_run(*TINY, "--structure=block:1x16", f"--output_dir={run_dir}"))
    assert "'block:1x16'" in line and not run_dir.exists()
    # The corrected command runs, with a cache that cannot be written (a file in its path).
    (tmp_path / "file").write_text("not a folder")
    env = _env(LTH_KERAS_CACHE=str(tmp_path / "file" / "cache"))
    result = _run(*TINY, f"--output_dir={run_dir}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    [warning] = result.stderr.splitlines()
    assert warning.startswith(f"warning: The compile cache {tmp_path / 'file' / 'cache'}")
    assert "cannot be written (Not a directory); running without it" in warning
    assert "winning ticket" in result.stdout and not (run_dir / "lock").exists()


@pytest.mark.slow
def test_output_dir_that_is_a_file_one_line(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("keep me")
    line = _one_error_line(_run(*TINY, f"--output_dir={path}"))
    assert line == (
        f"error: Cannot use {path} as a run directory: it or a folder above it is a file. Use "
        "another --output_dir, or move the file away."
    )
    assert path.read_text() == "keep me" and os.listdir(tmp_path) == ["results.txt"]
