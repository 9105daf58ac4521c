"""Early-bird rounds in the runner: when a round stops, and what its row records.

With `ExperimentConfig(early_bird=True)` the runner gives its
`LotteryPruner` an `lth_keras.pruning.EarlyBird` rule in every round but the
last: at every evaluation period the pruner compares the mask pruning would
give now with those of the previous `early_bird_window - 1` periods, and
once they differ by at most `early_bird_threshold` the round's mask is drawn
and its training stops there; the next round prunes and resets at once.
The last round (the ticket that is evaluated) trains in full. A round of
`eval_rounds` saves its round-end state at the draw, so the next round's
mask is the same as without it, and then trains on to `iterations` for
evaluation with the pruner detached.

This module holds the runner's small decisions about it, as functions of
the config, the pruner's history and the evaluation records:

- `row_fields`: `early_bird_iteration` (the round's iteration at which the
  next mask was drawn, `None` if it never was), `early_bird_distance` (the
  largest distance at the last comparison) and `early_bird_distances` (that
  largest distance at every evaluation, in order);
- the runner adds `early_bird_seconds`, the training time to the draw;
- `annotate`: each evaluation record gains `early_bird_distance`, so the
  TensorBoard curves show it beside the accuracies;
- `mask_iterations`: training steps spent before a round's mask was drawn.
"""

from lth_keras import pruning

__all__ = ["annotate", "drawn", "mask_iterations", "row_fields", "rule", "trains_on"]


def rule(config):
    """The config's `EarlyBird` rule, or `None` without `early_bird`.

    Example:

    ```python
    rule(preset("lenet", early_bird=True))  # EarlyBird(window=5, threshold=0.1)
    ```
    """
    if not config.early_bird:
        return None
    return pruning.EarlyBird(config.early_bird_window, config.early_bird_threshold)


def _entry(pruner, round_):
    """The early-bird record of `round_` in the pruner's history, or `None`."""
    history = pruner.history
    if not history or history[-1]["round"] != round_:
        return None
    return history[-1].get("early_bird")


def drawn(pruner, round_):
    """Whether the pruner has drawn the mask that ends `round_` early.

    True once a round is resumed from a checkpoint taken at its draw: it
    must not train another period.
    """
    entry = _entry(pruner, round_)
    return entry is not None and entry["epoch"] is not None


def _largest(distances):
    return [max(d) if d else None for d in distances]


def annotate(records, pruner, round_):
    """Adds `early_bird_distance` to the records of periods where masks were compared.

    `records[i]` is the `i`-th period the round trained, as is the pruner's
    `i`-th list of distances; the first period of a round has no previous
    mask, so no distance.
    """
    entry = _entry(pruner, round_)
    if entry is None:
        return records
    for record, largest in zip(records, _largest(entry["distances"]), strict=False):
        if largest is not None:
            record["early_bird_distance"] = largest
    return records


def row_fields(config, pruner, round_, records):
    """The early-bird fields of a ticket row (none without `early_bird` or in the last round).

    Returns:
        `{}` or a dict with `early_bird_iteration` (the iteration of the
        round, counted as the records count it, at which the next mask was
        drawn; `None` if it was not), `early_bird_distance` (the largest
        distance at the last comparison, `None` if none) and
        `early_bird_distances` (the largest distance at every period).
    """
    entry = _entry(pruner, round_)
    if not config.early_bird or round_ >= config.rounds or entry is None:
        return {}
    largest = _largest(entry["distances"])
    iteration = None
    if entry["epoch"] is not None:
        first = records[0]["iteration"] - config.eval_every  # the round's start
        iteration = first + entry["epoch"] * config.eval_every
    return {
        "early_bird_iteration": iteration,
        "early_bird_distance": largest[-1] if largest else None,
        "early_bird_distances": largest,
    }


def trains_on(config, round_, records):
    """Whether `round_` goes on training after its draw: an evaluation round stopped early."""
    return (
        config.early_bird
        and round_ in config.eval_rounds
        and round_ < config.rounds
        and records[-1]["iteration"] < config.iterations
    )


def mask_iterations(previous, first):
    """Steps spent to draw the mask that follows the ticket row `previous`.

    Args:
        previous: The ticket row of the round before.
        first: The iteration that round started at (the rewind iteration
            after round 0, with late resetting).

    Returns:
        `previous["mask_iterations"]` plus the steps that round trained up
        to its draw (all of them, without a draw); `None` for a row of a
        run that did not record `mask_iterations`.

    Example:

    ```python
    mask_iterations({"mask_iterations": 0, "iterations": 5000}, 0)  # 5000
    mask_iterations(
        {"mask_iterations": 5000, "iterations": 1500, "early_bird_iteration": 1500}, 0
    )  # 6500
    ```
    """
    spent = previous.get("mask_iterations")
    if spent is None:
        return None
    at = previous.get("early_bird_iteration")
    return spent + (at - first if at is not None else previous["iterations"])
