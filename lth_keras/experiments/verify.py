"""A rerun verifies its run directory before it trains or reports anything.

Every file `progress.json` records is checked: present, and with the
SHA-256 recorded when it was written. What can be made again from the other
files is made again, with a warning that names it and its source:

- `ticket.keras` of a finished run: re-saved from the last round's state;
- the last round's `masks/round_XX.npz` (and `tickets/round_XX.ticket.npz`):
  from that round's state, which holds the masks;
- the unfinished job's checkpoint (or that of a control trained fused
  beside it): dropped, and the job starts again from its beginning (same
  results: the run is deterministic);
- the reports of a finished run (`metrics.csv`, `metrics.jsonl`,
  `summary.txt`, `plots/*.png`): from the rows in `progress.json`.

Any other damaged file (masks of earlier rounds, the rewind point, round
states, evaluation records, a job's start when its round was drawn early)
holds results nothing else holds: the run stops with one `CorruptRunError`
listing every such file, and what to do.
"""

import warnings

from lth_keras import masks as masks_lib
from lth_keras.experiments import report
from lth_keras.experiments.jobs import trained_ticket_file
from lth_keras.experiments.rundir import CorruptRunError, recorded_files
from lth_keras.tickets import save_ticket

__all__ = ["verify_run"]

_PNG_START = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


def verify_run(experiment):
    """Checks every recorded file of the experiment's run; repairs what can be repaired.

    Args:
        experiment: The `lth_keras.experiments.runner.Experiment` (the
            chief's), its model built and its run directory open.

    Raises:
        CorruptRunError: If a damaged file cannot be made from the others.
    """
    run_dir = experiment.run_dir
    damaged = run_dir.damaged_files()
    progress = run_dir.progress
    if progress.get("final") and "ticket.keras" not in recorded_files(progress):
        damaged["ticket.keras"] = "missing"
    if damaged:
        _repair(experiment, damaged)
    if progress.get("final"):
        _check_reports(run_dir)


def _repair(experiment, damaged):
    run_dir = experiment.run_dir
    progress = run_dir.progress
    end = progress.get("round_end")
    from_state = set()
    if end is not None:
        last = end["round"]
        from_state = {f"masks/round_{last:02d}.npz", trained_ticket_file(last)}
    checkpoint = progress.get("checkpoint") or {}
    start = progress.get("start") or {}
    restart = set(checkpoint.get("files", {}))
    if progress.get("drawn") is None:  # a drawn round's start is that of its first part
        restart |= {start.get("file")}
    slots = {job: _slot_files(slot) for job, slot in (progress.get("fused") or {}).items()}
    for names in slots.values():
        restart |= names
    state_damaged = end is not None and any(name in damaged for name in end["files"])
    lost = {
        name: problem
        for name, problem in damaged.items()
        if not (
            name in restart
            or (name == "ticket.keras" and not state_damaged)
            or (name in from_state and not state_damaged)
        )
    }
    if lost:
        listed = ", ".join(f"{name} ({problem})" for name, problem in lost.items())
        raise CorruptRunError(
            f"The run directory {run_dir.path} has damaged files that cannot be made again "
            f"from the others: {listed}. Restore them from a copy of the run directory, or "
            "delete it to start over."
        )
    main = restart - set().union(*slots.values())
    if main & set(damaged):
        _restart_job(run_dir, damaged, checkpoint, start)
    for job, names in slots.items():
        if names & set(damaged):
            _restart_slot(run_dir, damaged, job, names)
    if "ticket.keras" in damaged:
        run_dir.commit(final=None, forget=["ticket.keras"])  # the run's end saves it again
        run_dir.remove("ticket.keras")
        _warn(run_dir, damaged, ["ticket.keras"], f"saved again from {_weights(end)}")
    again = sorted(from_state & set(damaged))
    if again:
        _from_state(experiment, again)
        _warn(run_dir, damaged, again, f"made again from {_weights(end)}")


def _restart_job(run_dir, damaged, checkpoint, start):
    names = [*checkpoint.get("files", {})]
    drop = {"checkpoint": None}
    if start.get("file") in damaged:
        names.append(start["file"])
        drop["start"] = None
    job = checkpoint.get("job") or start.get("job")
    run_dir.commit(forget=names, **drop)
    run_dir.remove(*names)
    _warn(
        run_dir,
        damaged,
        sorted(set(names) & set(damaged)),
        f"{job} starts again from its beginning",
    )


def _slot_files(slot):
    """The files of a slot of `progress["fused"]`: its checkpoint's and its start."""
    names = set((slot.get("checkpoint") or {}).get("files", {}))
    return names | ({slot["start"]} if "start" in slot else set())


def _restart_slot(run_dir, damaged, job, names):
    """Drops the slot of a control trained fused: it starts again from its beginning."""
    fused = {name: slot for name, slot in run_dir.progress["fused"].items() if name != job}
    run_dir.commit(forget=sorted(names), fused=fused or None)
    run_dir.remove(*names)
    _warn(run_dir, damaged, sorted(names & set(damaged)), f"{job} starts again from its beginning")


def _from_state(experiment, names):
    """Writes the last round's masks (and trained ticket) again from its state."""
    run_dir = experiment.run_dir
    last = run_dir.progress["round_end"]["round"]
    experiment.load_round_end(last)
    model = experiment.model
    files = {}
    for name in names:
        if name.startswith("masks/"):
            files[name] = run_dir.save_npz(name, masks_lib.get_masks(model))
        else:
            files[name] = run_dir.save_with(
                name, lambda path: save_ticket(model, path, pruner=experiment.pruner)
            )
    run_dir.commit(files=files)


def _check_reports(run_dir):
    """Makes the reports of a finished run again where they are missing or differ."""
    rows = list(run_dir.progress["done"].values())
    texts = {
        "metrics.csv": report.csv_text(rows),
        "metrics.jsonl": report.jsonl_text(rows),
        "summary.txt": report.table(report.sort_rows(rows)),
    }
    stale = [name for name, text in texts.items() if _read(run_dir.file(name)) != text.encode()]
    plots = ["plots/accuracy.png", "plots/early_stopping.png"]
    if report.overlap_keys(rows):
        plots.append("plots/overlap.png")
    for name in plots:
        data = _read(run_dir.file(name))
        if data is None or not (data.startswith(_PNG_START) and data.endswith(_PNG_END)):
            stale.append(name)
    if stale:
        report.write_reports(run_dir, rows, plots=any(n.startswith("plots/") for n in stale))
        warnings.warn(
            f"{run_dir.path}: {_names(stale)} missing, damaged or out of date: made again "
            "from the results in progress.json.",
            stacklevel=3,
        )


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _weights(end):
    return next(name for name in end["files"] if name.endswith(".weights.h5"))


def _names(names):
    return ", ".join(names)


def _warn(run_dir, damaged, names, what):
    problems = " or ".join(sorted({damaged[name] for name in names}))
    warnings.warn(f"{run_dir.path}: {_names(names)} {problems}: {what}.", stacklevel=4)
