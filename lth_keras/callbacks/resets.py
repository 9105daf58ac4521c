"""Reset policies: where training resumes after a round prunes.

`LotteryPruner(reset=...)` takes one of these, or its name. A reset acts on
the model's weights and returns the optimizer iteration training resumes at;
the pruner then resets the optimizer's state (always: stale momentum would
move newly pruned weights) and sets its step counter there, so learning-rate
schedules restart or continue accordingly.
"""

import dataclasses

from lth_keras._registry import Policy, Registry
from lth_keras.masks import masked_layers

__all__ = [
    "RESETS",
    "FineTune",
    "LearningRateRewind",
    "Reinitialize",
    "Reset",
    "ResetContext",
    "Rewind",
    "get_reset",
]


@dataclasses.dataclass
class ResetContext:
    """What a reset may use.

    Attributes:
        model: The model, masks already updated.
        snapshot: The rewind point (`lth_keras.rewind.WeightSnapshot`); the
            masked layers' part lives in their initial weights.
        rewind_step: The optimizer iteration of the rewind point.
        step: The optimizer iteration now.
        rng: The pruner's `numpy.random.Generator`.
    """

    model: object
    snapshot: object
    rewind_step: int
    step: int
    rng: object


class Reset(Policy):
    """Base class of resets.

    `rewinds` says whether the reset goes back to the rewind point, so that
    late resetting (`rewind_epoch`, `rewind_iteration`) applies to it.
    """

    rewinds = True

    def apply(self, context):
        """Resets the model's weights; returns the iteration to resume at."""
        raise NotImplementedError


RESETS = Registry("reset", Reset)
"""The registered resets by name (`"rewind"`, `"lr_rewind"`, `"finetune"`, `"reinit"`)."""


@RESETS.register("rewind")
class Rewind(Reset):
    """Every weight back to the rewind point, kernels times their masks (the paper).

    Example:

    ```python
    lth_keras.LotteryPruner(reset=lth_keras.callbacks.Rewind())
    ```
    """

    def apply(self, context):
        context.snapshot.restore(context.model)
        return context.rewind_step


@RESETS.register("lr_rewind")
class LearningRateRewind(Reset):
    """Keep the trained weights; the schedule restarts at the rewind point (Renda et al., 2020).

    Example:

    ```python
    lth_keras.LotteryPruner(reset="lr_rewind")
    ```
    """

    def apply(self, context):
        return context.rewind_step


@RESETS.register("finetune")
class FineTune(Reset):
    """Keep the trained weights and the step count: fine-tuning (Liu et al., 2021).

    Example:

    ```python
    lth_keras.LotteryPruner(reset="finetune")
    ```
    """

    rewinds = False

    def apply(self, context):
        return context.step


@RESETS.register("reinit")
class Reinitialize(Reset):
    """New random kernels and biases for masked layers; other weights rewound.

    The random re-initialisation control, drawn from each layer's
    initializers with seeds from the pruner's generator.

    Example:

    ```python
    lth_keras.LotteryPruner(reset="reinit", seed=0)
    ```
    """

    rewinds = False

    def apply(self, context):
        for layer in masked_layers(context.model):
            layer.reinitialize(int(context.rng.integers(2**31 - 1)))
        context.snapshot.restore(context.model, include_masked=False)
        return context.rewind_step


def get_reset(identifier):
    """A `Reset` from a name, an instance or a config.

    Names: `"rewind"`, `"lr_rewind"`, `"finetune"`, `"reinit"`.

    Raises:
        ValueError: For an unknown name or type.

    Example:

    ```python
    get_reset("rewind")  # Rewind()
    ```
    """
    return RESETS.get(identifier, "reset")
