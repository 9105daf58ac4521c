"""The fields of a run's `progress.json`, checked against its config when a run opens it.

A run directory is untrusted input (copied, synced, edited by hand), so
before a run reads anything from `progress.json` every field the runner
uses is checked: its type, its range, and how it fits the run's config and
the rest of the file. The finished jobs (`done`) are the first jobs of the
run's schedule, each row with the fields a report reads; the round end is
that of the last ticket round finished (or drawn); the unfinished job's
`checkpoint`, `start` and `drawn` entries name the next job, and the slots
of `fused` (controls trained together) jobs of its round; evaluation
records and the pruner's state have the types the runner and
`LotteryPruner.set_state` expect. Damage gives one `CorruptRunError` that
names the file, the field, what was expected and what to do, instead of an
`AttributeError` or a `TypeError` deep inside a job.

`RunDir` checks the layout and the file names first (see
`lth_keras.experiments.rundir`).
"""

import base64
import binascii
import math
import re
import zlib

from lth_keras.experiments.arms import ARMS, schedule
from lth_keras.experiments.rundir import CorruptRunError, describe

__all__ = ["check_progress", "job_name"]

_OVERLAP = re.compile(r"overlap@\d+(\.\d+)?(e-?\d+)?")
_ENTRIES = ("done", "files", "checkpoint", "round_end", "start", "drawn", "final", "fused")


class _Damage(Exception):
    def __init__(self, field, problem):
        super().__init__(field, problem)
        self.field, self.problem = field, problem


def job_name(kind, round_):
    """The name of a job in `progress.json`, e.g. `"ticket-r03"`."""
    return f"{kind}-r{round_:02d}"


def check_progress(progress, config, path, masked_weights=None):
    """Checks every field of a run's `progress.json` that the runner reads.

    Args:
        progress: The parsed file (its layout already checked by `RunDir`).
        config: The run's `ExperimentConfig`.
        path: The file's path, for the message.
        masked_weights: The number of masked weights of the run's model,
            which the early-bird candidates of the pruner's state must
            have. Defaults to `None` (not checked).

    Raises:
        CorruptRunError: Naming the first damaged field.

    Example:

    ```python
    check_progress(run_dir.progress, config, run_dir.file("progress.json"))
    ```
    """
    try:
        _Progress(config, masked_weights).check(progress)
    except _Damage as damage:
        raise CorruptRunError(
            f"{path} is damaged: field `{damage.field}` {damage.problem}. Restore the file (or "
            "undo the edit), or delete the run directory to start over."
        ) from None


def _expect(ok, field, expected, value):
    if not ok:
        raise _Damage(field, f"should be {expected}, found {describe(value)}")


def _is_int(value, low=0, high=None):
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def _is_number(value, low=None, high=None, finite=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if math.isnan(value) or math.isinf(value):
        return not finite and low is None and high is None
    return (low is None or value >= low) and (high is None or value <= high)


def _mapping(value, field):
    _expect(isinstance(value, dict), field, "a mapping", value)
    return value


def _list(value, field):
    _expect(isinstance(value, list), field, "a list", value)
    return value


class _Progress:
    """The checks of one config: `check(progress)` raises `_Damage`."""

    def __init__(self, config, masked_weights):
        self.config = config
        self.masked_weights = masked_weights
        self.jobs = [job_name(kind, round_) for kind, round_ in schedule(config)]

    def check(self, progress):
        unknown = sorted(set(progress) - set(_ENTRIES))
        if unknown:
            raise _Damage(unknown[0], "is not a field of progress.json")
        done = progress["done"]
        for job, row in done.items():
            self.row(job, row)
        if set(done) != set(self.jobs[: len(done)]):
            missing = next(job for job in self.jobs if job not in done)
            raise _Damage("done", f"skips {missing}: jobs finish in the order of the schedule")
        following = self.jobs[len(done)] if len(done) < len(self.jobs) else None
        if "final" in progress:
            _expect(
                progress["final"] is True and following is None,
                "final",
                "true once every job is done",
                progress["final"],
            )
        for entry in ("checkpoint", "start", "drawn", "fused"):
            if following is None and progress.get(entry) is not None:
                raise _Damage(entry, "is present though every job is done")
        drawn = progress.get("drawn")
        if drawn is not None:
            self.drawn(drawn, following)
        self.round_end(progress.get("round_end"), done, drawn)
        if progress.get("checkpoint") is not None:
            self.checkpoint(progress["checkpoint"], following, drawn)
        if progress.get("fused") is not None:
            self.fused(progress["fused"], following, progress["files"])
        if progress.get("start") is not None:
            start = _mapping(progress["start"], "start")
            _expect(start.get("job") == following, "start.job", repr(following), start.get("job"))
            _expect(
                start.get("file") in progress["files"],
                "start.file",
                "a recorded file",
                start.get("file"),
            )

    # Rows and records -------------------------------------------------------

    def row(self, job, row):
        config, field = self.config, f"done.{job}"
        _mapping(row, field)
        required = {
            "round": lambda v: _is_int(v, 0, config.rounds),
            "kind": lambda v: v in ARMS.names(),
            "weights_remaining": lambda v: _is_number(v, 0, 1),
            "layers": lambda v: (
                isinstance(v, dict)
                and all(isinstance(k, str) and _is_number(x, 0, 1) for k, x in v.items())
            ),
            "iterations": lambda v: _is_int(v, 0, config.iterations),
            "es_iteration": lambda v: _is_int(v, 0, config.iterations),
            "val_loss_min": _is_number,
            "val_accuracy_es": lambda v: _is_number(v, 0, 1),
            "test_accuracy_es": lambda v: _is_number(v, 0, 1),
            "test_accuracy_final": lambda v: _is_number(v, 0, 1),
            "train_accuracy": lambda v: _is_number(v, 0, 1),
            "wall_seconds": lambda v: _is_number(v, 0, finite=True),
        }
        for key, valid in required.items():
            _expect(key in row, f"{field}.{key}", "present", None)
            _expect(valid(row[key]), f"{field}.{key}", _ROW_EXPECTED[key], row[key])
        for key, value in row.items():
            if key in required:
                continue
            if _OVERLAP.fullmatch(key):
                _expect(value is None or _is_number(value), f"{field}.{key}", "a number", value)
            elif key in _OPTIONAL:
                _expect(_OPTIONAL[key](value), f"{field}.{key}", _OPTIONAL_EXPECTED[key], value)
            else:
                raise _Damage(f"{field}.{key}", "is not a field of a result row")
        name = job_name(row["kind"], row["round"])
        if name != job:
            raise _Damage(field, f"holds the row of {name}")

    def records(self, records, field, empty=False):
        _list(records, field)
        _expect(empty or records, field, "a non-empty list", records)
        for i, record in enumerate(records):
            where = f"{field}[{i}]"
            _mapping(record, where)
            _expect(
                _is_int(record.get("iteration"), 1, self.config.iterations),
                f"{where}.iteration",
                f"an iteration in [1, {self.config.iterations}]",
                record.get("iteration"),
            )
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                _expect(key in record, f"{where}.{key}", "present", None)
            for key, value in record.items():
                if key in ("accuracy", "val_accuracy", "test_accuracy"):
                    _expect(_is_number(value, 0, 1), f"{where}.{key}", "a number in [0, 1]", value)
                elif key in ("loss", "val_loss", "test_loss", "early_bird_distance"):
                    _expect(_is_number(value), f"{where}.{key}", "a number", value)
                elif key != "iteration":
                    raise _Damage(f"{where}.{key}", "is not a field of an evaluation record")

    # Entries ----------------------------------------------------------------

    def round_end(self, end, done, drawn):
        rounds = [row["round"] for row in done.values() if row["kind"] == "ticket"]
        if drawn is not None:
            rounds.append(int(drawn["job"].rsplit("-r", 1)[1]))
        if not rounds:
            _expect(end is None, "round_end", "absent before a ticket round ends", end)
            return
        _mapping(end, "round_end")
        _expect(
            end.get("round") == max(rounds),
            "round_end.round",
            f"{max(rounds)}, the last ticket round finished",
            end.get("round"),
        )
        self.state(end, "round_end", pruner=True)

    def checkpoint(self, entry, following, drawn, field="checkpoint"):
        _mapping(entry, field)
        jobs = [following] if drawn is None else [f"{following}-full"]
        _expect(entry.get("job") in jobs, f"{field}.job", repr(jobs[0]), entry.get("job"))
        periods = self.config.iterations // self.config.eval_every
        _expect(
            _is_int(entry.get("period"), 1, periods),
            f"{field}.period",
            f"an int in [1, {periods}]",
            entry.get("period"),
        )
        self.records(entry.get("records"), f"{field}.records")
        _expect(
            _is_number(entry.get("wall"), 0, finite=True),
            f"{field}.wall",
            "seconds",
            entry.get("wall"),
        )
        ticket = following.startswith("ticket-") and drawn is None
        self.state(entry, field, pruner=ticket)

    def fused(self, fused, following, files):
        """The slots of controls trained together: jobs of the next job's round, it included."""
        _mapping(fused, "fused")
        index = self.jobs.index(following)
        kind, round_ = following.split("-r")
        group = []
        if kind != "ticket":
            for job in self.jobs[index:]:
                if job.startswith("ticket-") or not job.endswith(f"-r{round_}"):
                    break
                group.append(job)
        for job, slot in fused.items():
            field = f"fused.{job}"
            _expect(job in group, "fused", f"slots of the controls of {following}'s round", job)
            _mapping(slot, field)
            unknown = sorted(set(slot) - {"checkpoint", "start"})
            _expect(not unknown, field, "a mapping of `checkpoint` and `start`", slot)
            _expect(slot, field, "a non-empty mapping", slot)
            if "checkpoint" in slot:
                self.checkpoint(slot["checkpoint"], job, None, f"{field}.checkpoint")
            if "start" in slot:
                _expect(slot["start"] in files, f"{field}.start", "a recorded file", slot["start"])

    def drawn(self, drawn, following):
        _mapping(drawn, "drawn")
        ticket = following is not None and following.startswith("ticket-")
        _expect(
            ticket and drawn.get("job") == following, "drawn.job", repr(following), drawn.get("job")
        )
        self.records(drawn.get("records"), "drawn.records")
        _expect(
            _is_number(drawn.get("wall"), 0, finite=True),
            "drawn.wall",
            "seconds",
            drawn.get("wall"),
        )
        fields = _mapping(drawn.get("fields"), "drawn.fields")
        for key, value in fields.items():
            _expect(key in _OPTIONAL, f"drawn.fields.{key}", "a field of a ticket row", key)
            _expect(_OPTIONAL[key](value), f"drawn.fields.{key}", _OPTIONAL_EXPECTED[key], value)

    def state(self, entry, field, pruner):
        """A saved state: its files (weights, and the pruner's snapshot) and the pruner's state."""
        files = _mapping(entry.get("files"), f"{field}.files")
        suffixes = (".weights.h5", "-snapshot.npz") if pruner else (".weights.h5",)
        for suffix in suffixes:
            count = sum(name.endswith(suffix) for name in files)
            _expect(count == 1, f"{field}.files", f"one file ending in {suffix}", files)
        if not pruner:
            _expect(entry.get("pruner") is None, f"{field}.pruner", "null", entry.get("pruner"))
            return
        self.pruner(_mapping(entry.get("pruner"), f"{field}.pruner"), f"{field}.pruner")

    def pruner(self, state, field):
        """`LotteryPruner.get_state()` without its snapshot, as `set_state` reads it."""
        checks = {
            "round": (lambda v: _is_int(v, 0, self.config.rounds), "a round of the run"),
            "history": (lambda v: isinstance(v, list), "a list"),
            "started": (lambda v: isinstance(v, bool), "true or false"),
            "round_trained": (lambda v: isinstance(v, bool), "true or false"),
            "epochs_in_round": (_is_int, "an int >= 0"),
            "rewind_step": (lambda v: v is None or _is_int(v), "an int >= 0 or null"),
            "iteration0": (_is_int, "an int >= 0"),
            "remaining": (lambda v: _is_number(v, 0, 1), "a number in [0, 1]"),
            "rng": (lambda v: isinstance(v, dict), "a mapping"),
            "early_bird": (lambda v: v is None or isinstance(v, dict), "a mapping or null"),
        }
        for key, (valid, expected) in checks.items():
            _expect(key in state, f"{field}.{key}", "present", None)
            _expect(valid(state[key]), f"{field}.{key}", expected, state[key])
        for i, entry in enumerate(state["history"]):
            where = f"{field}.history[{i}]"
            _mapping(entry, where)
            round_ = entry.get("round")
            _expect(_is_int(round_, 0, self.config.rounds), f"{where}.round", "a round", round_)
            if entry.get("early_bird") is not None:
                self.draw(entry["early_bird"], f"{where}.early_bird")
        self.early_bird(state["early_bird"] or {"round": None, "recent": []}, f"{field}.early_bird")

    def draw(self, record, field):
        """A history entry's early-bird record: the epoch of the draw and the distances."""
        _mapping(record, field)
        epoch = record.get("epoch")
        _expect(epoch is None or _is_int(epoch), f"{field}.epoch", "an int or null", epoch)
        distances = _list(record.get("distances"), f"{field}.distances")
        valid = all(isinstance(d, list) and all(_is_number(x, 0, 1) for x in d) for d in distances)
        _expect(valid, f"{field}.distances", "lists of numbers in [0, 1]", distances)

    def early_bird(self, early, field):
        _expect(
            early.get("round") is None or _is_int(early.get("round")),
            f"{field}.round",
            "a round or null",
            early.get("round"),
        )
        for i, packed in enumerate(_list(early.get("recent"), f"{field}.recent")):
            where = f"{field}.recent[{i}]"
            _mapping(packed, where)
            size = packed.get("size")
            _expect(_is_int(size), f"{where}.size", "an int >= 0", size)
            if self.masked_weights is not None:
                _expect(
                    size <= self.masked_weights,
                    f"{where}.size",
                    f"at most the model's {self.masked_weights} masked weights",
                    size,
                )
            _expect(
                _packed_bits(packed.get("bits"), size),
                f"{where}.bits",
                f"{size} bits, compressed and in base64",
                packed.get("bits"),
            )


def _packed_bits(text, size):
    """Whether `text` is base64 of zlib-compressed bytes holding `size` bits (bounded reads)."""
    if not isinstance(text, str):
        return False
    try:
        data = base64.b64decode(text, validate=True)
        inflate = zlib.decompressobj()
        expected = -(-size // 8)
        out = inflate.decompress(data, expected + 1)
    except (binascii.Error, ValueError, zlib.error):
        return False
    return len(out) == expected and inflate.eof


def _optional_int(value):
    return value is None or _is_int(value)


_ROW_EXPECTED = {
    "round": "a round of the run",
    "kind": f"one of {list(ARMS.names())}",
    "weights_remaining": "a number in [0, 1]",
    "layers": "a mapping of kernels to numbers in [0, 1]",
    "iterations": "an int in [0, iterations]",
    "es_iteration": "an int in [0, iterations]",
    "val_loss_min": "a number",
    "val_accuracy_es": "a number in [0, 1]",
    "test_accuracy_es": "a number in [0, 1]",
    "test_accuracy_final": "a number in [0, 1]",
    "train_accuracy": "a number in [0, 1]",
    "wall_seconds": "seconds",
}
#: Row fields that only some runs record (see `lth_keras.experiments.report`).
_OPTIONAL = {
    "mask_iterations": _optional_int,
    "early_bird_iteration": _optional_int,
    "early_bird_distance": lambda v: v is None or _is_number(v, 0, 1),
    "early_bird_distances": lambda v: (
        isinstance(v, list) and all(x is None or _is_number(x, 0, 1) for x in v)
    ),
    "early_bird_seconds": lambda v: _is_number(v, 0, finite=True),
}
_OPTIONAL_EXPECTED = {
    "mask_iterations": "an int >= 0 or null",
    "early_bird_iteration": "an int >= 0 or null",
    "early_bird_distance": "a number in [0, 1] or null",
    "early_bird_distances": "a list of numbers in [0, 1] or null",
    "early_bird_seconds": "seconds",
}
