"""tfmot's schedule names: `ConstantSparsity`, `PolynomialDecay` and the `PruningSchedule` base.

`ConstantSparsity` and `PolynomialDecay` are `lth_keras.pruning`'s own
(tfmot's arguments, formula, float32 arithmetic and count rule), re-exported
here. `PruningSchedule` is the base a schedule of your own derives from, as
in tfmot: implement `__call__(step)` returning `(should_prune, sparsity)`
and `get_config`; the pruner asks it at every training step.
"""

import numpy as np

from lth_keras.pruning.schedules import ConstantSparsity, PolynomialDecay, SparsitySchedule

__all__ = ["ConstantSparsity", "PolynomialDecay", "PruningSchedule"]


def _python(value, name):
    """A Python scalar from what a schedule returned (a TensorFlow tensor, a NumPy value, ...)."""
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(
            f"A PruningSchedule's `__call__` must return two scalars (should_prune, "
            f"sparsity). Received: {name}={value!r}"
        )
    return array.reshape(()).item()


class PruningSchedule(SparsitySchedule):
    """The base of a pruning schedule of your own, as tfmot's `PruningSchedule`.

    Implement `__call__(self, step)` returning `(should_prune, sparsity)`
    (Python values, NumPy values or TensorFlow scalars: the step is a
    Python int, the first training batch being step 1) and `get_config`.
    `lth_keras.tfmot.UpdatePruningStep` asks the schedule at every step and,
    where `should_prune` is true, sets the masks to `sparsity`.

    Example:

    ```python
    class EveryTenSteps(lth_keras.tfmot.PruningSchedule):
        def __call__(self, step):
            return step % 10 == 0, min(0.1 * step / 10, 0.9)

        def get_config(self):
            return {}

    lth_keras.tfmot.prune_low_magnitude(model, pruning_schedule=EveryTenSteps())
    ```
    """

    def __call__(self, step):
        raise NotImplementedError(
            f"{type(self).__name__} derives from lth_keras.tfmot.PruningSchedule but does not "
            "implement `__call__(self, step)`, which must return (should_prune, sparsity). "
            f"Received: step={step!r}"
        )

    def get_config(self):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `get_config()` (its constructor's arguments)."
        )

    def should_prune(self, step):
        """Whether the masks are updated at `step`: the first value `__call__` returns."""
        return bool(_python(self(step)[0], "should_prune"))

    def sparsity(self, step):
        """The sparsity at `step`: the second value `__call__` returns."""
        sparsity = float(_python(self(step)[1], "sparsity"))
        self._check_sparsity(sparsity, "sparsity")
        return sparsity
