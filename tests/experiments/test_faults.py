"""Faults users meet: a full disk, a read-only folder, two runs in one directory,
missing data offline, a damaged file. Each gives one line and exit status 1,
and nothing written before is lost."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import MNIST_DIR, REPO, pythonpath

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
    from lth_keras.experiments.rundir import RunDir, _held

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
    # As if killed before the last control finished; then damage its input.
    import json

    progress = json.loads((run_dir / "progress.json").read_text())
    del progress["done"]["reinit-r01"]
    (run_dir / "progress.json").write_text(json.dumps(progress))
    masks = run_dir / "masks" / "round_01.npz"
    masks.write_bytes(masks.read_bytes()[:-50])
    line = _one_error_line(_run(*TINY, f"--output_dir={run_dir}"))
    assert "round_01.npz is corrupted" in line
    debug = _run(*TINY, f"--output_dir={run_dir}", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@pytest.mark.slow
@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_crafted_progress_cannot_delete_files_outside(tmp_path, reference, where):
    """A stale checkpoint entry naming a file outside the run (issue 26, item 1)."""
    import json

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
