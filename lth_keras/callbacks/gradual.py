"""Gradual pruning: `LotteryPruner` with a step schedule (tfmot's `PolynomialDecay` ...).

The pruner delegates to `Gradual` when its schedule is a
`lth_keras.pruning.SparsitySchedule`: at the training steps the schedule
names, the masks are set to its sparsity (`Targets.prune(sparsity=...)`,
tfmot's count rule), inside `fit`, without resetting the weights; the
optimizer state of newly pruned entries is reset (`OptimizerReset.reset_pruned`)
so nothing moves them. Masks are variables written between steps, so the
train step is traced once.

Steps count training batches from 1, across `fit` calls: step `s` is the
batch after `s - 1` optimizer updates (tfmot's `pruning_step`). With
`steps_per_execution=k` masks can only change between compiled calls: an
update due inside a call happens at its start, at the sparsity of the
first step due in it.
"""

from lth_keras import masks as masks_lib
from lth_keras import pruning

__all__ = ["Gradual"]


class Gradual:
    """The per-step part of `LotteryPruner` in gradual mode; see the module docstring.

    Args:
        pruner: The `LotteryPruner`.
        schedule: Its `SparsitySchedule`.
    """

    def __init__(self, pruner, schedule):
        self.pruner = pruner
        self.schedule = schedule
        self.base = 0  # optimizer updates before the current epoch
        self.updates = []  # one dict per mask update

    def epoch_begin(self):
        """Records the step count the epoch starts from (one read of the optimizer)."""
        self.base = self.pruner._optimizer_reset.iterations()

    def batch_begin(self, batch):
        """Updates the masks if a step due in this compiled call asks for it."""
        model = self.pruner._model  # not `.model`: on JAX that syncs the whole state
        first = self.base + batch + 1
        count = max(int(getattr(model, "steps_per_execution", 1) or 1), 1)
        due = next((s for s in range(first, first + count) if self.schedule.should_prune(s)), None)
        if due is not None:
            self.prune(due)

    def prune(self, step):
        """Sets the masks to the schedule's sparsity at `step`; returns the update's record."""
        pruner = self.pruner
        model = pruner.model  # syncs the training state on JAX before it is written
        sparsity = self.schedule.sparsity(step)
        old = masks_lib.get_masks(model)
        new = pruner.targets.prune(model, pruner._rng, masks=old, bind=False, sparsity=sparsity)
        changed = {key for key in new if not (new[key] == old[key]).all()}
        if changed:
            masks_lib.set_masks(model, {key: new[key] for key in changed})
            entries = {key: weight for key, _, weight in masks_lib.prunable_entries(model)}
            pruner._optimizer_reset.reset_pruned(
                {id(entries[key].variable): new[key] for key in changed}
            )
        total, per_kernel = pruning.fraction_remaining(new)
        pruner._remaining = total
        record = {"step": step, "sparsity": sparsity, "weights_remaining": total}
        self.updates.append({**record, "layers": per_kernel})
        entry = pruner.history[-1]
        entry["weights_remaining"], entry["layers"] = total, per_kernel
        entry.setdefault("updates", []).append(record)
        pruner._say(f"step {step}: sparsity {sparsity:.4f}, {total:.2%} of weights remain.")
        return record

    def get_state(self):
        return {"updates": list(self.updates)}

    def set_state(self, state):
        self.updates = list((state or {}).get("updates", []))
