"""When to prune: sparsity schedules, the "when" beside the score and the structure.

Two kinds, both accepted by `LotteryPruner(schedule=...)`:

- `Rounds`: iterative magnitude pruning as the paper does it, a round at a
  time (one per `fit` call, or every `epochs_per_round` epochs), each round
  pruning a fraction of the remaining weights and then resetting the
  survivors (the pruner's `reset`). The default.
- Step schedules, with tfmot's names, arguments and semantics
  (`tensorflow_model_optimization.sparsity.keras`): `ConstantSparsity` and
  `PolynomialDecay` (Zhu & Gupta, 2017, "To prune, or not to prune"). Called
  with a training step they return `(should_prune, sparsity)`; the pruner
  then sets every kernel's mask to that sparsity during `fit`, without
  resetting the weights (gradual pruning). Steps count training batches
  from 1 (tfmot's `pruning_step`: the first batch of training is step 1);
  `LotteryPruner` reads them from the optimizer (`iterations + 1`).

The count rule of a step schedule is tfmot's: a kernel of `n` weights at
sparsity `s` keeps `max(round(n * (1 - s)), 1)` weights, rounding half to
even (`keep_count`), and masks only shrink.
"""

import math
import numbers

from lth_keras._registry import Policy, Registry
from lth_keras.pruning.counts import check_rate

__all__ = [
    "SCHEDULES",
    "ConstantSparsity",
    "PolynomialDecay",
    "Rounds",
    "Schedule",
    "SparsitySchedule",
    "get_schedule",
    "keep_count",
]


def keep_count(size, sparsity):
    """Weights a kernel of `size` keeps at `sparsity`: tfmot's rule.

    `max(round(size * (1 - sparsity)), 1)`, rounding half to even as
    TensorFlow's `tf.math.round` does, computed in float32 as tfmot does.

    Args:
        size: The number of weights, an int >= 1.
        sparsity: A float in [0, 1).

    Returns:
        An int in `[1, size]`.

    Example:

    ```python
    >>> keep_count(10, 0.25), keep_count(10, 0.35), keep_count(3, 0.9)
    (8, 6, 1)

    ```
    """
    import numpy as np

    kept = np.float32(size) * (np.float32(1.0) - np.float32(sparsity))
    return int(max(np.round(kept), 1))


class Schedule(Policy):
    """Base of the schedules `LotteryPruner(schedule=...)` takes."""


SCHEDULES = Registry("schedule", Schedule)
"""The registered schedules by name: `"rounds"`, `"constant"`, `"polynomial"`."""


def _check_int(value, name, low, allow_none=False, allow_minus_one=False):
    if value is None and allow_none:
        return
    if allow_minus_one and value == -1 and not isinstance(value, bool):
        return
    # NumPy ints too: tfmot's guide passes `np.ceil(...).astype(np.int32) * epochs`.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        allowed = f"an int >= {low}" + (" or -1" if allow_minus_one else "")
        raise ValueError(
            f"Received an invalid value for `{name}`, expected {allowed}. "
            f"Received: {name}={value!r}"
        )


@SCHEDULES.register("rounds")
class Rounds(Schedule):
    """Iterative pruning in rounds, each followed by the pruner's reset (the paper's).

    A round ends at the start of each `fit` call after the first (by
    default) or every `epochs_per_round` epochs; its pruning removes a
    fraction of the remaining weights (the targets' rate). Pruning stops
    after `max_rounds` rounds or once at least `target_sparsity` of the
    weights are pruned (the last round may go past it).

    Args:
        epochs_per_round: If set, a new round every this many epochs, inside
            `fit` (which then stops after the last round's epochs). Defaults
            to `None`: one round per `fit` call.
        max_rounds: Stop after this many pruning rounds. Defaults to `None`.
        target_sparsity: Stop once at least this fraction is pruned, in
            (0, 1). Defaults to `None`.

    Example:

    ```python
    lth_keras.LotteryPruner(rate=0.2, schedule=Rounds(epochs_per_round=2, max_rounds=10))
    ```
    """

    def __init__(self, epochs_per_round=None, max_rounds=None, target_sparsity=None):
        _check_int(epochs_per_round, "epochs_per_round", 1, allow_none=True)
        _check_int(max_rounds, "max_rounds", 1, allow_none=True)
        if target_sparsity is not None:
            check_rate(target_sparsity, "target_sparsity")
        self.epochs_per_round = epochs_per_round
        self.max_rounds = max_rounds
        self.target_sparsity = target_sparsity

    def get_config(self):
        return {
            "epochs_per_round": self.epochs_per_round,
            "max_rounds": self.max_rounds,
            "target_sparsity": self.target_sparsity,
        }

    def can_prune(self, rounds_done, remaining):
        """Whether another round may prune, after `rounds_done` rounds at `remaining`.

        Example:

        ```python
        Rounds(max_rounds=3).can_prune(3, 0.5)  # False
        ```
        """
        if self.max_rounds is not None and rounds_done >= self.max_rounds:
            return False
        if self.target_sparsity is not None and 1.0 - remaining >= self.target_sparsity:
            return False
        return True


class SparsitySchedule(Schedule):
    """A step schedule: `schedule(step)` gives `(should_prune, sparsity)` (tfmot's semantics).

    Pruning happens at steps `begin_step <= step <= end_step` (no end when
    `end_step` is -1) with `(step - begin_step) % frequency == 0`.
    Subclasses implement `sparsity(step)`.
    """

    def _check_steps(self, begin_step, end_step, frequency, allow_minus_one):
        _check_int(begin_step, "begin_step", 0)
        _check_int(end_step, "end_step", 0, allow_minus_one=allow_minus_one)
        _check_int(frequency, "frequency", 1)
        if end_step != -1 and end_step < begin_step:
            raise ValueError(
                "Received an invalid value for `end_step`, expected -1 or at least "
                f"begin_step={begin_step}. Received: end_step={end_step}"
            )

    @staticmethod
    def _check_sparsity(value, name):
        check_rate(value, name, allow_zero=True)

    def should_prune(self, step):
        """Whether the masks are updated at `step`."""
        in_range = step >= self.begin_step and (self.end_step < 0 or step <= self.end_step)
        return bool(in_range and (step - self.begin_step) % self.frequency == 0)

    def sparsity(self, step):
        """The sparsity the masks are set to at `step`."""
        raise NotImplementedError

    def __call__(self, step):
        """`(should_prune, sparsity)` at `step`, as tfmot's schedules return them.

        Example:

        ```python
        >>> should_prune, sparsity = PolynomialDecay(0.5, 0.8, 0, 1000)(500)
        >>> should_prune, round(sparsity, 6)
        (True, 0.7625)

        ```
        """
        return self.should_prune(step), self.sparsity(step)

    def last_step(self):
        """The last step at which the schedule may prune (`None` if it never ends)."""
        if self.end_step < 0:
            return None
        return self.end_step - (self.end_step - self.begin_step) % self.frequency


@SCHEDULES.register("constant")
class ConstantSparsity(SparsitySchedule):
    """Constant sparsity from `begin_step`, pruned every `frequency` steps (tfmot's).

    Args:
        target_sparsity: The sparsity, in [0, 1).
        begin_step: The first step that may prune, >= 0.
        end_step: The last, or -1 for no end. Defaults to `-1`.
        frequency: Steps between mask updates, >= 1. Defaults to `100`.

    Example:

    ```python
    lth_keras.LotteryPruner(schedule=ConstantSparsity(0.5, begin_step=0))
    ```
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        self._check_steps(begin_step, end_step, frequency, allow_minus_one=True)
        self._check_sparsity(target_sparsity, "target_sparsity")
        self.target_sparsity = target_sparsity
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    def sparsity(self, step):
        return float(self.target_sparsity)


@SCHEDULES.register("polynomial")
class PolynomialDecay(SparsitySchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` along a polynomial (tfmot's).

    `sparsity(step) = final + (initial - final) * (1 - p) ** power` with
    `p = clip((step - begin_step) / (end_step - begin_step), 0, 1)`, computed
    in float32 as tfmot does (Zhu & Gupta, 2017, use `power=3`).

    Args:
        initial_sparsity: Sparsity at `begin_step`, in [0, 1).
        final_sparsity: Sparsity from `end_step` on, in [0, 1).
        begin_step: The first step that may prune, >= 0.
        end_step: The last step that prunes, >= `begin_step`.
        power: The exponent. Defaults to `3`.
        frequency: Steps between mask updates, >= 1. Defaults to `100`.

    Example:

    ```python
    schedule = PolynomialDecay(0.5, 0.8, begin_step=0, end_step=938)
    lth_keras.LotteryPruner(schedule=schedule)
    ```
    """

    def __init__(
        self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100
    ):
        self._check_steps(begin_step, end_step, frequency, allow_minus_one=False)
        self._check_sparsity(initial_sparsity, "initial_sparsity")
        self._check_sparsity(final_sparsity, "final_sparsity")
        numeric = isinstance(power, (int, float)) and not isinstance(power, bool)
        if not (numeric and math.isfinite(power)):
            raise ValueError(
                "Received an invalid value for `power`, expected a number. "
                f"Received: power={power!r}"
            )
        self.initial_sparsity = initial_sparsity
        self.final_sparsity = final_sparsity
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.power = power
        self.frequency = int(frequency)

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }

    def sparsity(self, step):
        import numpy as np

        f32 = np.float32
        span = self.end_step - self.begin_step
        # tfmot divides by (end - begin) as given: a zero span is 0/0 there too.
        with np.errstate(divide="ignore", invalid="ignore"):
            p = f32(step - self.begin_step) / f32(span)
        p = f32(min(f32(1.0), max(f32(0.0), p))) if not np.isnan(p) else f32(1.0)
        value = (f32(self.initial_sparsity) - f32(self.final_sparsity)) * (f32(1.0) - p) ** f32(
            self.power
        ) + f32(self.final_sparsity)
        return float(f32(value))


def get_schedule(identifier):
    """A `Schedule` from an instance, a config or `None` (`Rounds()`).

    Raises:
        ValueError: For anything else.

    Example:

    ```python
    get_schedule(None)  # Rounds()
    ```
    """
    if identifier is None:
        return Rounds()
    return SCHEDULES.get(identifier, "schedule")
