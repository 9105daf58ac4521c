"""Every field of progress.json checked against the run's config: damage is one clear error."""

import base64
import copy
import zlib

import numpy as np
import pytest

from lth_keras.experiments.presets import preset
from lth_keras.experiments.rundir import CorruptRunError, RunDir
from lth_keras.experiments.runfiles import check_progress

CONFIG = preset("lenet", rounds=2, iterations=40, eval_every=10, controls=("reinit",))
MASKED = 266200  # LeNet-300-100's kernels


def _row(kind, round_):
    return {
        "round": round_,
        "kind": kind,
        "weights_remaining": 0.8**round_,
        "layers": {"fc1/kernel": 0.8**round_},
        "iterations": 40,
        "es_iteration": 30,
        "val_loss_min": 0.4,
        "val_accuracy_es": 0.9,
        "test_accuracy_es": 0.85,
        "test_accuracy_final": 0.86,
        "train_accuracy": 0.99,
        "wall_seconds": 1.5,
        "mask_iterations": 40 * round_,
        "overlap@0.1": 0.7,
    }


def _records(count=2):
    return [
        {
            "iteration": 10 * (i + 1),
            "loss": 0.5,
            "accuracy": 0.9,
            "val_loss": 0.4,
            "val_accuracy": 0.88,
        }
        for i in range(count)
    ]


def _pruner(round_):
    recent = np.packbits(np.ones(100, bool))
    return {
        "round": round_,
        "history": [{"round": r, "weights_remaining": 0.8**r} for r in range(round_ + 1)],
        "started": True,
        "round_trained": True,
        "epochs_in_round": 4,
        "rewind_step": 0,
        "iteration0": 0,
        "remaining": 0.8**round_,
        "rng": {"bit_generator": "PCG64", "state": {"state": 1, "inc": 3}},
        "early_bird": {
            "round": round_,
            "recent": [{"size": 100, "bits": base64.b64encode(zlib.compress(recent)).decode()}],
        },
    }


def _state(tag):
    return {f"{tag}.weights.h5": "a" * 64, f"{tag}-snapshot.npz": "b" * 64}


def _progress():
    """Round 1's ticket done, its control half trained: a checkpoint, a start."""
    files = {
        "masks/round_00.npz": "c" * 64,
        "masks/round_01.npz": "d" * 64,
        **_state("state/round_01"),
    }
    files["checkpoints/reinit-r01-start.npz"] = "e" * 64
    return {
        "done": {"ticket-r00": _row("ticket", 0), "ticket-r01": _row("ticket", 1)},
        "files": files,
        "round_end": {"round": 1, "files": _state("state/round_01"), "pruner": _pruner(1)},
        "checkpoint": {
            "job": "reinit-r01",
            "period": 2,
            "records": _records(),
            "wall": 0.5,
            "files": {"checkpoints/reinit-r01-p0002.weights.h5": "f" * 64},
            "pruner": None,
        },
        "start": {"job": "reinit-r01", "file": "checkpoints/reinit-r01-start.npz"},
    }


def test_a_runs_progress_passes():
    check_progress(_progress(), CONFIG, "progress.json", MASKED)


def _set(path, value):
    def change(progress):
        inner = progress
        for key in path[:-1]:
            inner = inner[key]
        if value is _DELETE:
            del inner[path[-1]]
        else:
            inner[path[-1]] = value

    return change


_DELETE = object()
_BOMB = base64.b64encode(zlib.compress(bytes(10**7))).decode()  # 10 MB of zeros, 10 KB here

CASES = {
    # A list where a mapping belongs.
    "row-list": (("done", "ticket-r01"), [], "`done.ticket-r01` should be a mapping, found a list"),
    "round-end-list": (("round_end",), [1], "`round_end` should be a mapping"),
    "pruner-list": (("round_end", "pruner"), [], "`round_end.pruner` should be a mapping"),
    "history-mapping": (
        ("round_end", "pruner", "history"),
        {},
        "`round_end.pruner.history` should be a list",
    ),
    "record-list": (
        ("checkpoint", "records", 0),
        [],
        "`checkpoint.records[0]` should be a mapping",
    ),
    "checkpoint-files-list": (
        ("checkpoint", "files"),
        [],
        "`checkpoint.files` should be a mapping",
    ),
    # A string where a number belongs.
    "accuracy-string": (
        ("done", "ticket-r01", "test_accuracy_es"),
        "0.85",
        "`done.ticket-r01.test_accuracy_es` should be a number in [0, 1], found the string '0.85'",
    ),
    "round-string": (("done", "ticket-r00", "round"), "0", "`done.ticket-r00.round` should be"),
    "period-string": (
        ("checkpoint", "period"),
        "2",
        "`checkpoint.period` should be an int in [1, 4]",
    ),
    "wall-string": (("checkpoint", "wall"), "0.5", "`checkpoint.wall` should be seconds"),
    "remaining-string": (
        ("round_end", "pruner", "remaining"),
        "0.8",
        "`round_end.pruner.remaining` should be",
    ),
    "record-loss-string": (
        ("checkpoint", "records", 1, "val_loss"),
        "x",
        "`checkpoint.records[1].val_loss`",
    ),
    # Out of range, or not what the run records.
    "accuracy-above-1": (("done", "ticket-r00", "train_accuracy"), 7, "train_accuracy` should"),
    "iteration-beyond": (
        ("checkpoint", "records", 0, "iteration"),
        10**6,
        "an iteration in [1, 40]",
    ),
    "wall-infinite": (("done", "ticket-r00", "wall_seconds"), float("inf"), "should be seconds"),
    "unknown-row-field": (("done", "ticket-r00", "bonus"), 1, "is not a field of a result row"),
    "unknown-entry": (("extra",), {}, "`extra` is not a field of progress.json"),
    "missing-field": (("done", "ticket-r00", "es_iteration"), _DELETE, "should be present"),
    # A mismatched round or job.
    "round-end-round": (
        ("round_end", "round"),
        0,
        "`round_end.round` should be 1, the last ticket round finished",
    ),
    "row-of-another-job": (("done", "ticket-r01", "round"), 0, "holds the row of ticket-r00"),
    "row-of-another-kind": (
        ("done", "ticket-r01", "kind"),
        "reinit",
        "holds the row of reinit-r01",
    ),
    "skipped-job": (("done", "ticket-r00"), _DELETE, "`done` skips ticket-r00"),
    "checkpoint-of-another-job": (
        ("checkpoint", "job"),
        "ticket-r02",
        "`checkpoint.job` should be",
    ),
    "start-of-another-job": (("start", "job"), "ticket-r01", "`start.job` should be 'reinit-r01'"),
    "start-unrecorded": (
        ("start", "file"),
        "checkpoints/ticket-r01-start.npz",
        "`start.file` should be a recorded",
    ),
    "final-too-early": (("final",), True, "`final` should be true once every job is done"),
    "pruner-round-beyond": (("round_end", "pruner", "round"), 9, "a round of the run"),
    "state-without-weights": (
        ("round_end", "files"),
        {"state/round_01-snapshot.npz": "b" * 64},
        "one file ending in .weights.h5",
    ),
    # The early-bird candidates of the pruner's state: bounded before they are unpacked.
    "candidate-huge": (
        ("round_end", "pruner", "early_bird", "recent", 0, "size"),
        10**12,
        "at most the model's 266200 masked weights",
    ),
    "candidate-bomb": (
        ("round_end", "pruner", "early_bird", "recent", 0, "bits"),
        _BOMB,
        "100 bits, compressed and in base64",
    ),
    "candidate-not-base64": (
        ("round_end", "pruner", "early_bird", "recent", 0, "bits"),
        "!!",
        "in base64",
    ),
}


def _damaged(progress, config, path, value):
    """The message `check_progress` gives for `progress` changed at `path` to `value`."""
    progress = copy.deepcopy(progress)
    _set(path, value)(progress)
    with pytest.raises(CorruptRunError) as caught:
        check_progress(progress, config, "/runs/x/progress.json", MASKED)
    return str(caught.value)


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_progress_names_the_field(case):
    path, value, message = CASES[case]
    text = _damaged(_progress(), CONFIG, path, value)
    assert text.startswith("/runs/x/progress.json is damaged: field ") and message in text
    assert text.endswith(
        "Restore the file (or undo the edit), or delete the run directory to start over."
    )
    assert "\n" not in text


def test_every_entry_is_gone_once_every_job_is_done():
    progress = _progress()
    progress["done"]["reinit-r01"] = _row("reinit", 1)
    progress["done"]["ticket-r02"] = _row("ticket", 2)
    progress["done"]["reinit-r02"] = _row("reinit", 2)
    progress["round_end"] = {"round": 2, "files": _state("state/round_02"), "pruner": _pruner(2)}
    with pytest.raises(CorruptRunError, match="`checkpoint` is present though every job is done"):
        check_progress(progress, CONFIG, "progress.json", MASKED)
    del progress["checkpoint"], progress["start"]
    progress["final"] = True
    check_progress(progress, CONFIG, "progress.json", MASKED)


def test_a_drawn_round_and_its_full_job():
    config = CONFIG.replace(early_bird=True, eval_rounds=(1,), early_bird_window=2)
    progress = _progress()
    del progress["done"]["ticket-r01"], progress["checkpoint"], progress["start"]
    fields = {
        "early_bird_iteration": 20,
        "early_bird_distance": 0.0,
        "early_bird_distances": [None, 0.0],
    }
    progress["drawn"] = {"job": "ticket-r01", "records": _records(), "wall": 0.3, "fields": fields}
    progress["checkpoint"] = {
        "job": "ticket-r01-full",
        "period": 3,
        "records": _records(3),
        "wall": 0.4,
        "files": {"checkpoints/ticket-r01-full-p0003.weights.h5": "f" * 64},
        "pruner": None,
    }
    check_progress(progress, config, "progress.json", MASKED)
    progress["drawn"]["fields"]["bonus"] = 1
    with pytest.raises(
        CorruptRunError, match=r"`drawn.fields.bonus` should be a field of a ticket"
    ):
        check_progress(progress, config, "progress.json", MASKED)


def test_run_dir_reads_a_crafted_npz_with_bounded_memory(tmp_path):
    """A recorded mask file whose header declares a huge shape (checksum recorded too)."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|b1", "fortran_order": False, "shape": (10**6, 10**5)}
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("fc1/kernel.npy", header.getvalue() + bytes(64))
    run = RunDir(tmp_path, {})
    name = "masks/round_00.npz"
    run.commit(files={name: run.write_bytes(name, buffer.getvalue())})
    with pytest.raises(CorruptRunError, match=r"declares the shape \(1000000, 100000\)"):
        run.load_npz(name)
    run.close()


def _fused_progress():
    """Round 1's reinit and random controls trained together: random's slot in `fused`."""
    progress = _progress()
    progress["files"]["checkpoints/random-r01-start.npz"] = "9" * 64
    progress["fused"] = {
        "random-r01": {
            "checkpoint": {
                "job": "random-r01",
                "period": 2,
                "records": _records(),
                "wall": 0.5,
                "files": {"checkpoints/random-r01-p0002.weights.h5": "8" * 64},
                "pruner": None,
            },
            "start": "checkpoints/random-r01-start.npz",
        }
    }
    return progress


FUSED_CONFIG = CONFIG.replace(controls=("reinit", "random"))

FUSED_CASES = {
    "slot-of-a-ticket": (("fused", "ticket-r02"), {"start": "x"}, "`fused` should be slots of"),
    "slot-of-another-round": (
        ("fused", "random-r02"),
        {"start": "checkpoints/random-r01-start.npz"},
        "`fused` should be slots of the controls of reinit-r01's round, found the string "
        "'random-r02'",
    ),
    "slot-list": (("fused", "random-r01"), [], "`fused.random-r01` should be a mapping"),
    "slot-empty": (("fused", "random-r01"), {}, "`fused.random-r01` should be a non-empty"),
    "slot-unknown-field": (("fused", "random-r01", "period"), 3, "`checkpoint` and `start`"),
    "slot-checkpoint-of-another-job": (
        ("fused", "random-r01", "checkpoint", "job"),
        "reinit-r01",
        "`fused.random-r01.checkpoint.job` should be 'random-r01'",
    ),
    "slot-checkpoint-period": (
        ("fused", "random-r01", "checkpoint", "period"),
        0,
        "`fused.random-r01.checkpoint.period` should be an int in [1, 4]",
    ),
    "slot-start-unrecorded": (
        ("fused", "random-r01", "start"),
        "checkpoints/shuffle-r01-start.npz",
        "`fused.random-r01.start` should be a recorded file",
    ),
}


def test_a_fused_runs_progress_passes():
    check_progress(_fused_progress(), FUSED_CONFIG, "progress.json", MASKED)


@pytest.mark.parametrize("case", list(FUSED_CASES))
def test_damaged_fused_slots_name_the_field(case):
    path, value, message = FUSED_CASES[case]
    assert message in _damaged(_fused_progress(), FUSED_CONFIG, path, value)


def test_fused_slots_are_gone_once_every_job_is_done():
    progress = _fused_progress()
    del progress["checkpoint"], progress["start"]
    for job in ("reinit-r01", "random-r01", "ticket-r02", "reinit-r02", "random-r02"):
        kind, round_ = job.split("-r")
        progress["done"][job] = _row(kind, int(round_))
    progress["round_end"] = {"round": 2, "files": _state("state/round_02"), "pruner": _pruner(2)}
    with pytest.raises(CorruptRunError, match="`fused` is present though every job is done"):
        check_progress(progress, FUSED_CONFIG, "progress.json", MASKED)
