"""Run directories: atomic writes, the config guard, checksums."""

import json
import os
import warnings

import numpy as np
import pytest

from lth_keras.experiments.config import ExperimentConfig
from lth_keras.experiments.rundir import CorruptRunError, RunDir, RunDirInUseError, atomic_write
from lth_keras.experiments.runlock import _lock_file


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write(tmp_path / "a" / "f.txt", b"one")
    atomic_write(tmp_path / "a" / "f.txt", b"two")
    assert (tmp_path / "a" / "f.txt").read_bytes() == b"two"
    assert os.listdir(tmp_path / "a") == ["f.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    run = RunDir(tmp_path, {"a": 1})
    run.write_bytes("summary.txt", b"old")

    def broken(path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run.save_with("summary.txt", broken)
    assert (tmp_path / "summary.txt").read_bytes() == b"old"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_config_guard(tmp_path):
    RunDir(tmp_path, {"model": "lenet", "rounds": 3}, extra={"hash": "h"})
    RunDir(tmp_path, {"model": "lenet", "rounds": 3})  # same config: fine
    before = (tmp_path / "config.json").read_bytes()
    with pytest.raises(ValueError, match=r"different config \(differences in: \['rounds'\]\)"):
        RunDir(tmp_path, {"model": "lenet", "rounds": 4})
    assert (tmp_path / "config.json").read_bytes() == before


def test_resuming_on_other_versions_warns(tmp_path):
    started = {"versions": {"lth_keras": "0.3.0", "keras": "3.15.1"}}
    RunDir(tmp_path, {"a": 1}, extra=started)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RunDir(tmp_path, {"a": 1}, extra=started)  # the same versions: silent
    later = {"versions": {"lth_keras": "0.4.0", "keras": "3.15.1"}}
    with pytest.warns(UserWarning, match=r"other versions \(lth_keras 0.3.0 -> 0.4.0\)"):
        RunDir(tmp_path, {"a": 1}, extra=later)
    assert '"0.3.0"' in (tmp_path / "config.json").read_text()  # as it started


def test_checksums_catch_corruption_and_truncation(tmp_path):
    run = RunDir(tmp_path, {})
    name = "masks/round_00.npz"
    digest = run.save_npz(name, {"w": np.arange(1000)})
    run.commit(files={name: digest})
    np.testing.assert_array_equal(run.load_npz(name)["w"], np.arange(1000))
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptRunError, match="round_00.npz is corrupted"):
        run.load_npz(name)
    os.remove(tmp_path / name)
    with pytest.raises(CorruptRunError, match="missing"):
        run.load_npz(name)
    with pytest.raises(CorruptRunError, match="never recorded"):
        run.verified("masks/round_01.npz")


def test_progress_round_trip_and_damage(tmp_path):
    run = RunDir(tmp_path, {})
    run.commit(
        done={"ticket-r00": {"round": 0}}, files={"summary.txt": "0" * 64}, checkpoint={"p": 1}
    )
    run.commit(checkpoint=None)
    again = RunDir(tmp_path, {})
    assert again.progress == {
        "done": {"ticket-r00": {"round": 0}},
        "files": {"summary.txt": "0" * 64},
    }
    (tmp_path / "progress.json").write_text('{"done": {')
    with pytest.raises(CorruptRunError, match="progress.json"):
        RunDir(tmp_path, {})


def test_workers_read_the_chiefs_run_and_write_elsewhere(tmp_path):
    chief = RunDir(tmp_path / "run", {"a": 1})
    chief.commit(
        files={"masks/round_00.npz": chief.save_npz("masks/round_00.npz", {"w": np.ones(3)})}
    )
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    worker = RunDir(tmp_path / "run", {"a": 1}, write_to=tmp_path / "private")
    np.testing.assert_array_equal(worker.load_npz("masks/round_00.npz")["w"], np.ones(3))
    name = "masks/round_01.npz"  # the worker's own
    worker.commit(files={name: worker.save_npz(name, {"v": np.zeros(2)})})
    np.testing.assert_array_equal(worker.load_npz(name)["v"], np.zeros(2))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    assert sorted(p.name for p in (tmp_path / "private").iterdir()) == ["masks", "progress.json"]
    with pytest.raises(ValueError, match="different config"):
        RunDir(tmp_path / "run", {"a": 2}, write_to=tmp_path / "other")


def test_files_get_the_usual_permissions(tmp_path):
    # Not mkstemp's 0600: a TF Serving process of another user must read exports.
    mask = os.umask(0)
    os.umask(mask)
    atomic_write(tmp_path / "f.bin", b"x")
    assert os.stat(tmp_path / "f.bin").st_mode & 0o777 == 0o666 & ~mask


def test_config_without_a_config_is_corrupt(tmp_path):
    (tmp_path / "config.json").write_text('{"hash": "x"}')
    with pytest.raises(CorruptRunError, match="holds no run config"):
        RunDir(tmp_path, {})


def test_failed_commit_keeps_progress(tmp_path, monkeypatch):
    run = RunDir(tmp_path, {})
    run.commit(done={"a": 1})

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(run, "write_json", fail)
    with pytest.raises(OSError):
        run.commit(done={"b": 2})
    assert run.progress["done"] == {"a": 1}


def test_a_field_added_later_matches_at_its_default(tmp_path):
    RunDir(tmp_path, {"a": 1}).close()
    RunDir(tmp_path, {"a": 1, "b": 2}, defaults={"b": 2}).close()
    with pytest.raises(ValueError, match=r"differences in: \['b'\]"):
        RunDir(tmp_path, {"a": 1, "b": 3}, defaults={"b": 2})


@pytest.mark.parametrize(
    "name",
    [
        "ABSOLUTE",
        "../victim.txt",
        "../../victim.txt",
        "masks/../../victim.txt",
        "masks/./round_00.npz",
        "masks//round_00.npz",
        "victim.txt",  # inside, but not a file a run writes
        "masks/round_00.npz/",
        "checkpoints\\..\\victim.txt",
        7,
    ],
    ids=[
        "absolute",
        "parent",
        "grandparent",
        "parent-inside",
        "dot",
        "double-slash",
        "unknown-kind",
        "trailing-slash",
        "backslash",
        "not-a-string",
    ],
)
def test_recorded_names_cannot_touch_files_outside(tmp_path, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run_path = tmp_path / "a" / "run"
    run = RunDir(run_path, {})
    (run_path / "victim.txt").write_text("not the run's")
    if name == "ABSOLUTE":
        name = str(victim)
    with pytest.raises(CorruptRunError, match="not a file a run writes"):
        run.remove(name)
    with pytest.raises(CorruptRunError, match="not a file a run writes"):
        run.verified(name, "0" * 64)
    with pytest.raises(CorruptRunError, match="not a file a run writes"):
        run.write_bytes(name, b"x")
    assert victim.read_text() == "keep me"
    assert (run_path / "victim.txt").read_text() == "not the run's"
    # Recorded in progress.json, the name stops the next run before anything is done.
    run.close()
    progress = {"done": {}, "files": {name: "0" * 64}}
    (run_path / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(CorruptRunError, match="not a file a run writes"):
        RunDir(run_path, {})
    assert victim.read_text() == "keep me"


def test_symlinks_leading_out_are_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "round_00.npz").write_bytes(b"victim")
    (outside / "summary.txt").write_bytes(b"victim")
    run_path = tmp_path / "run"
    run = RunDir(run_path, {})
    os.symlink(outside, run_path / "masks")  # a folder leading out
    os.symlink(outside / "summary.txt", run_path / "summary.txt")  # a file leading out
    for name in ("masks/round_00.npz", "summary.txt"):
        with pytest.raises(CorruptRunError, match="leads outside the run directory"):
            run.remove(name)
        with pytest.raises(CorruptRunError, match="leads outside the run directory"):
            run.verified(name, "0" * 64)
    assert (outside / "round_00.npz").read_bytes() == b"victim"
    assert (outside / "summary.txt").read_bytes() == b"victim"


@pytest.mark.parametrize(
    "progress, message",
    [
        ([], "expected a mapping"),
        ({"done": {}, "files": []}, "expected a mapping"),
        ({"done": [], "files": {}}, "expected a mapping"),
        ({"done": {}, "files": {"summary.txt": 5}}, "is not a SHA-256"),
    ],
    ids=["list", "files-list", "done-list", "bad-digest"],
)
def test_damaged_progress_is_one_clear_error(tmp_path, progress, message):
    RunDir(tmp_path, {}).close()
    (tmp_path / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(CorruptRunError, match=message):
        RunDir(tmp_path, {})


@pytest.mark.parametrize("entry", ["checkpoint", "round_end", "start"])
def test_names_in_progress_entries_are_checked_at_open(tmp_path, entry):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run_path = tmp_path / "run"
    RunDir(run_path, {}).close()
    value = {"file": str(victim)} if entry == "start" else {"files": {"../victim.txt": "0" * 64}}
    (run_path / "progress.json").write_text(json.dumps({"done": {}, "files": {}, entry: value}))
    with pytest.raises(CorruptRunError, match="not a file a run writes"):
        RunDir(run_path, {})
    assert victim.read_text() == "keep me"


def _stored_config(**changes):
    return {
        "config": {**ExperimentConfig(rounds=1).to_dict(), **changes},
        "hash": "0123456789",
        "versions": {"lth_keras": "0.4.0"},
    }


@pytest.mark.parametrize(
    "stored, message",
    [
        ([_stored_config()], "expected a mapping, found a list of 1"),
        ({**_stored_config(), "config": []}, "field `config` holds no run config (found a list"),
        (
            _stored_config(rounds="1"),
            "field `config`: Received an invalid value for `rounds`, expected an int >= 0. "
            "Received: rounds='1'",
        ),
        (
            _stored_config(learning_rate="fast"),
            "field `config`: Received an invalid value for `learning_rate`, expected a finite "
            "number. Received: learning_rate='fast'",
        ),
        (
            _stored_config(controls={"reinit": 1}),
            "field `config`: Received an invalid value for `controls`",
        ),
        (_stored_config(epochs=3), "field `config`: Received unknown config keys: ['epochs']"),
        ({**_stored_config(), "versions": ["0.4.0"]}, "field `versions`: expected a mapping"),
        ({**_stored_config(), "hash": 12}, "field `hash`: expected a string, found the int 12"),
    ],
    ids=[
        "list",
        "config-list",
        "rounds-string",
        "rate-string",
        "controls-mapping",
        "unknown-field",
        "versions-list",
        "hash-number",
    ],
)
def test_hand_edited_config_json_names_the_field(tmp_path, stored, message):
    (tmp_path / "config.json").write_text(json.dumps(stored))
    before = sorted(os.listdir(tmp_path))
    config = ExperimentConfig(rounds=1).to_dict()
    with pytest.raises(CorruptRunError) as caught:
        RunDir(tmp_path, config, check=ExperimentConfig.from_dict)
    text = str(caught.value)
    assert text.startswith(f"{tmp_path / 'config.json'} is damaged: ") and message in text
    assert text.endswith(
        "Restore the file (or undo the edit), or delete the run directory to start over."
    )
    assert sorted(os.listdir(tmp_path)) == before  # not even the lock is left


def test_the_lock_file_lives_as_long_as_the_run(tmp_path):
    run = RunDir(tmp_path, {})
    assert (tmp_path / "lock").exists()
    with pytest.raises(RunDirInUseError):  # another process: the flock of another open file
        _lock_file(str(tmp_path))
    run.close()
    assert not (tmp_path / "lock").exists()
    RunDir(tmp_path, {}).close()  # taken again at once
    assert os.listdir(tmp_path) == ["config.json"]


def test_a_lock_file_removed_while_waiting_is_not_a_lock(tmp_path, monkeypatch):
    """A process that opened the lock file just before its holder removed it tries again."""
    (tmp_path / "lock").write_text("")
    stale = os.open(tmp_path / "lock", os.O_RDWR)
    opened = []
    real_open = os.open

    def open_then_lose_the_race(path, *args):
        fd = real_open(path, *args)
        if not opened:  # the holder removes the file between our open and our flock
            os.remove(path)
            real_open(path, os.O_RDWR | os.O_CREAT)
        opened.append(fd)
        return fd

    monkeypatch.setattr(os, "open", open_then_lose_the_race)
    fd = _lock_file(str(tmp_path))
    assert len(opened) == 2 and fd == opened[1]  # the first, of the removed file, was dropped
    assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "lock"))
    os.close(stale)
    os.close(fd)


def test_damaged_files_lists_every_recorded_file_missing_or_altered(tmp_path):
    run = RunDir(tmp_path, {})
    files = {name: run.write_bytes(name, b"x" * 10) for name in ("summary.txt", "metrics.csv")}
    checkpoint = {
        "job": "ticket-r00",
        "files": {"checkpoints/ticket-r00-p0001.weights.h5": "0" * 64},
    }
    run.commit(files=files, checkpoint=checkpoint)
    assert run.damaged_files() == {"checkpoints/ticket-r00-p0001.weights.h5": "missing"}
    (tmp_path / "summary.txt").write_bytes(b"x" * 9)
    os.remove(tmp_path / "metrics.csv")
    assert run.damaged_files() == {
        "checkpoints/ticket-r00-p0001.weights.h5": "missing",
        "metrics.csv": "missing",
        "summary.txt": "altered or truncated",
    }


def test_discard_removes_a_failed_start_and_nothing_else(tmp_path):
    run = RunDir(tmp_path / "new", {"a": 1})
    run.write_json("flags.json", {})
    name = "checkpoints/ticket-r00-start.npz"
    run.commit(
        files={name: run.save_npz(name, {"k": np.ones(2)})},
        start={"job": "ticket-r00", "file": name},
    )
    assert run.discard()
    assert not (tmp_path / "new").exists()
    # A folder that existed keeps what others put there.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("mine")
    run = RunDir(tmp_path / "old", {"a": 1})
    assert run.discard()
    assert os.listdir(tmp_path / "old") == ["notes.txt"]
    # A run with a finished job or a checkpoint, or one started before, stays.
    run = RunDir(tmp_path / "done", {"a": 1})
    run.commit(done={"ticket-r00": {}})
    assert not run.discard()
    run.close()
    again = RunDir(tmp_path / "done", {"a": 1})
    assert not again.discard()
    assert sorted(os.listdir(tmp_path / "done")) == ["config.json", "lock", "progress.json"]
    again.close()


@pytest.mark.parametrize("where", ["itself", "above"])
def test_a_file_in_place_of_the_run_directory_is_a_value_error(tmp_path, where):
    (tmp_path / "file").write_text("keep me")
    path = tmp_path / "file" if where == "itself" else tmp_path / "file" / "run"
    with pytest.raises(
        ValueError, match=f"Cannot use {path} as a run directory: it or a folder above it is a file"
    ):
        RunDir(path, {})
    assert (tmp_path / "file").read_text() == "keep me"


def test_superseded_files_are_forgotten_before_they_are_deleted(tmp_path):
    run = RunDir(tmp_path, {})
    old = {"state/round_00.weights.h5": run.write_bytes("state/round_00.weights.h5", b"old")}
    run.commit(files=old)
    new = {"state/round_01.weights.h5": run.write_bytes("state/round_01.weights.h5", b"new")}
    run.commit(files=new, forget=list(old))
    # Killed here: the record names no file that is about to go.
    assert json.loads((tmp_path / "progress.json").read_text())["files"] == new
    run.remove(*old)
    assert run.damaged_files() == {} and not (tmp_path / "state" / "round_00.weights.h5").exists()
