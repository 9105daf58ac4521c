"""Run directories: atomic writes, the config guard, checksums."""

import os
import warnings

import numpy as np
import pytest

from lth_keras.experiments.rundir import CorruptRunError, RunDir, atomic_write


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write(tmp_path / "a" / "f.txt", b"one")
    atomic_write(tmp_path / "a" / "f.txt", b"two")
    assert (tmp_path / "a" / "f.txt").read_bytes() == b"two"
    assert os.listdir(tmp_path / "a") == ["f.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    run = RunDir(tmp_path, {"a": 1})
    run.write_bytes("x.bin", b"old")

    def broken(path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run.save_with("x.bin", broken)
    assert (tmp_path / "x.bin").read_bytes() == b"old"
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
    digest = run.save_npz("m.npz", {"w": np.arange(1000)})
    run.commit(files={"m.npz": digest})
    np.testing.assert_array_equal(run.load_npz("m.npz")["w"], np.arange(1000))
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "m.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptRunError, match="m.npz is corrupted"):
        run.load_npz("m.npz")
    os.remove(tmp_path / "m.npz")
    with pytest.raises(CorruptRunError, match="missing"):
        run.load_npz("m.npz")
    with pytest.raises(CorruptRunError, match="never recorded"):
        run.verified("other.npz")


def test_progress_round_trip_and_damage(tmp_path):
    run = RunDir(tmp_path, {})
    run.commit(done={"ticket-r00": {"round": 0}}, files={"f": "0" * 64}, checkpoint={"p": 1})
    run.commit(checkpoint=None)
    again = RunDir(tmp_path, {})
    assert again.progress == {"done": {"ticket-r00": {"round": 0}}, "files": {"f": "0" * 64}}
    (tmp_path / "progress.json").write_text('{"done": {')
    with pytest.raises(CorruptRunError, match="progress.json"):
        RunDir(tmp_path, {})


def test_workers_read_the_chiefs_run_and_write_elsewhere(tmp_path):
    chief = RunDir(tmp_path / "run", {"a": 1})
    chief.commit(files={"m.npz": chief.save_npz("m.npz", {"w": np.ones(3)})})
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    worker = RunDir(tmp_path / "run", {"a": 1}, write_to=tmp_path / "private")
    np.testing.assert_array_equal(worker.load_npz("m.npz")["w"], np.ones(3))  # the chief's file
    worker.commit(files={"n.npz": worker.save_npz("n.npz", {"v": np.zeros(2)})})
    np.testing.assert_array_equal(worker.load_npz("n.npz")["v"], np.zeros(2))  # its own
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    assert sorted(p.name for p in (tmp_path / "private").iterdir()) == ["n.npz", "progress.json"]
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
