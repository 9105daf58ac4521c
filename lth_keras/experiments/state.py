"""Run state on disk: a round's end state and the unfinished job's checkpoint.

A state is the model's weights with the optimizer's (`.weights.h5`) and, for
the ticket, the pruner's progress and rewind snapshot (`-snapshot.npz`),
recorded with their SHA-256 in `progress.json` by the run directory.
"""

from lth_keras.experiments.rundir import CorruptRunError

__all__ = ["RunState", "find_checkpoint", "slot_of", "with_slot"]

# What Keras and LotteryPruner raise on a weights file or a state they cannot use.
_UNUSABLE = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, OSError)


class RunState:
    """Writes and reads states and checkpoints of one run directory.

    Args:
        run_dir: The `RunDir`.
        pruner: The run's `LotteryPruner`.
        scope: `scope(model)`, the context in which to build the optimizer
            (the strategy's).

    Example:

    ```python
    state = RunState(run_dir, pruner, scope)
    entry = state.save("state/round_00", model, pruner=True)
    state.load(entry, model, pruner=True)
    ```
    """

    def __init__(self, run_dir, pruner, scope):
        self.run_dir = run_dir
        self.pruner = pruner
        self.scope = scope

    def save(self, tag, model, pruner):
        """Writes weights (with the optimizer's) and, with `pruner`, its state.

        Returns:
            `{"files": {name: sha256}, "pruner": state or None}`.
        """
        files = {
            f"{tag}.weights.h5": self.run_dir.save_with(f"{tag}.weights.h5", model.save_weights)
        }
        state = None
        if pruner:
            state = self.pruner.get_state()
            snapshot = state.pop("snapshot") or {}
            name = f"{tag}-snapshot.npz"
            files[name] = self.run_dir.save_npz(name, snapshot, compress=False)
        return {"files": files, "pruner": state}

    def load(self, entry, model, pruner=False):
        """Restores what `save` wrote, optimizer state included."""
        files = entry["files"]
        if not model.optimizer.built:  # Keras loads optimizer weights only into a built one
            with self.scope(model):
                model.optimizer.build(model.trainable_variables)
        weights = next(name for name in files if name.endswith(".weights.h5"))
        path = self.run_dir.verified(weights, files[weights])
        try:
            model.load_weights(path)
        except _UNUSABLE as error:
            raise CorruptRunError(
                f"{path} does not fit the run's model ({error}). The run directory is damaged; "
                "delete it to start over."
            ) from error
        if pruner:
            name = next(name for name in files if name.endswith("-snapshot.npz"))
            snapshot = self.run_dir.load_npz(name, files[name])
            state = entry["pruner"]
            # The snapshot exists once the rewind point is taken (it may be
            # empty: a model whose weights are all in masked layers).
            taken = state["rewind_step"] is not None
            try:
                self.pruner.set_state(dict(state, snapshot=snapshot if taken else None))
            except _UNUSABLE as error:
                raise CorruptRunError(
                    f"The pruner state recorded with {weights} in progress.json cannot be "
                    f"restored ({error!r}). The run directory is damaged; delete it to start over."
                ) from error

    def save_checkpoint(self, job, model, period, records, wall, pruner, slot=False):
        """Writes the checkpoint of an unfinished job, replacing its last one.

        Args:
            slot: `True` for a job trained fused beside the next job of the
                schedule (a later control of the same round): its checkpoint
                goes to `progress["fused"][job]`; otherwise to
                `progress["checkpoint"]`. Defaults to `False`.
        """
        entry = {
            "job": job,
            "period": period,
            "records": list(records),
            "wall": wall,
            **self.save(f"checkpoints/{job}-p{period:04d}", model, pruner),
        }
        progress = self.run_dir.progress
        slot_entry = slot_of(progress, job).get("checkpoint")
        old = list(slot_entry["files"]) if slot_entry else []
        if not slot and progress.get("checkpoint"):
            old += list(progress["checkpoint"]["files"])
        if slot:
            self.run_dir.commit(fused=with_slot(progress, job, checkpoint=entry))
        else:
            # A job first trained fused and now alone moves its slot here: its
            # checkpoint, and its start with it (so a damaged start restarts
            # the job from its beginning, as the next job's does).
            moved = {}
            start = slot_of(progress, job).get("start")
            if start is not None:
                moved["start"] = {"job": job, "file": start}
            self.run_dir.commit(
                checkpoint=entry,
                fused=with_slot(progress, job, checkpoint=None, start=None),
                **moved,
            )
        self.run_dir.remove(*old)

    def load_checkpoint(self, job, model, pruner=False):
        """Restores `job`'s checkpoint; returns `(period, records, wall)` or `None`."""
        entry = find_checkpoint(self.run_dir.progress, job)
        if entry is None:
            return None
        self.load(entry, model, pruner)
        return entry["period"], entry["records"], entry["wall"]


def find_checkpoint(progress, job):
    """`job`'s checkpoint entry in `progress` (the next job's, or a fused one's), or `None`."""
    entry = progress.get("checkpoint")
    if entry and entry["job"] == job:
        return entry
    return slot_of(progress, job).get("checkpoint")


def slot_of(progress, job):
    """`job`'s slot of `progress["fused"]` (see `with_slot`), or `{}`."""
    return (progress.get("fused") or {}).get(job) or {}


def with_slot(progress, job, **fields):
    """`progress["fused"]` with `job`'s slot updated by `fields` (`None` removes one); or `None`.

    The slots of `progress["fused"]` hold what jobs trained fused beside
    the next job keep for a resume: `checkpoint` (as `progress["checkpoint"]`)
    and `start` (the file of its start kernels, as `progress["start"]["file"]`).
    """
    fused = {name: dict(slot) for name, slot in (progress.get("fused") or {}).items()}
    slot = fused.get(job, {})
    for key, value in fields.items():
        if value is None:
            slot.pop(key, None)
        else:
            slot[key] = value
    if slot:
        fused[job] = slot
    else:
        fused.pop(job, None)
    return fused or None
