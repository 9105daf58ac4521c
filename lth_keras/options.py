"""Option lists and validation rules, in one place.

`LotteryPruner`, `ExperimentConfig` and the command-line flags all check
their options here, so a rule or a list of choices is written once.
"""

import numpy as np

from lth_keras import pruning

__all__ = ["SCOPES", "STRATEGIES", "check_choice", "check_int", "check_pruning_options"]

SCOPES = ("layerwise", "global")
"""Layerwise pruning (a rate per kernel) or global (one rate, pooled)."""
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
"""The tf.distribute strategies `lth_keras.tensorflow.distribute.get_strategy` makes."""


def check_int(value, name, minimum, allow_none=False):
    """Raises unless `value` is an int (not a bool) >= `minimum` (or None if allowed).

    Raises:
        ValueError: With the name, the value and what is allowed.

    Example:

    ```python
    check_int(3, "max_rounds", 1)
    ```
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        expected = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(
            f"Received an invalid value for `{name}`, expected {expected}. "
            f"Received: {name}={value!r}"
        )


def check_choice(value, name, choices):
    """Raises unless `value` is one of `choices`.

    Raises:
        ValueError: With the name, the value and the choices.

    Example:

    ```python
    check_choice("global", "scope", SCOPES)
    ```
    """
    if value not in choices:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected one of {list(choices)}. "
            f"Received: {name}={value!r}"
        )


def check_pruning_options(
    *,
    rate,
    output_rate=None,
    layer_rates=None,
    scope="layerwise",
    rewinds=True,
    reset_name="rewind",
    rewind_epoch=0,
    rewind_iteration=0,
    epochs_per_round=None,
):
    """The rules that tie pruning options together.

    Args:
        rate, output_rate, layer_rates, scope: As `LotteryPruner`'s.
        rewinds: Whether the reset policy goes back to a rewind point
            that late resetting can move (`Reset.rewinds`).
        reset_name: The reset's name, for messages.
        rewind_epoch, rewind_iteration, epochs_per_round: As
            `LotteryPruner`'s.

    Raises:
        ValueError: For a rate out of range or conflicting options.

    Example:

    ```python
    check_pruning_options(rate=0.2, scope="global")
    ```
    """
    check_choice(scope, "scope", SCOPES)
    check_int(rewind_epoch, "rewind_epoch", 0)
    check_int(rewind_iteration, "rewind_iteration", 0)
    check_int(epochs_per_round, "epochs_per_round", 1, allow_none=True)
    pruning.check_rates(rate, output_rate, layer_rates)
    if scope == "global" and (output_rate is not None or layer_rates):
        raise ValueError(
            "`output_rate` and `layer_rates` apply to layerwise pruning; with "
            "scope='global' one rate prunes the pooled weights. Use `exclude` to "
            f"keep layers out of the pool. Received: output_rate={output_rate}, "
            f"layer_rates={layer_rates}"
        )
    if rewind_epoch and rewind_iteration:
        raise ValueError(
            "Set at most one of `rewind_epoch` and `rewind_iteration`. Received: "
            f"rewind_epoch={rewind_epoch}, rewind_iteration={rewind_iteration}"
        )
    if (rewind_epoch or rewind_iteration) and not rewinds:
        raise ValueError(
            f"reset={reset_name!r} does not use a rewind point, so late resetting "
            f"does not apply. Received: rewind_epoch={rewind_epoch}, "
            f"rewind_iteration={rewind_iteration}"
        )
    if epochs_per_round is not None and rewind_epoch >= epochs_per_round:
        raise ValueError(
            "`rewind_epoch` must fall inside round 0, expected it below "
            f"epochs_per_round={epochs_per_round}. Received: rewind_epoch={rewind_epoch}"
        )
