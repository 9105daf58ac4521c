"""Pruning maths in pure NumPy: masks in, masks out.

Every function here takes weights and boolean masks keyed by a weight name
(for example `"dense/kernel"`), returns new masks and never modifies its
inputs. Nothing here knows about Keras.

- `counts`: the count rule (`prune_count`: `rate * n` rounded half up, on
  the exact decimal value of the rate), rate checks, fractions remaining;
- `magnitude`: keep the largest values, per weight or pooled, ties broken by
  index;
- `random_masks`: the random controls;
- `rates`: per-layer rates from one rate and overrides;
- `scores` and `structures`: the policies `LotteryPruner` takes (`method=`,
  `structure=`), built on the functions above.
"""

from lth_keras.pruning.counts import (
    check_rate,
    check_rates,
    fraction_remaining,
    prune_count,
    pruned_counts,
)
from lth_keras.pruning.magnitude import global_magnitude_prune, magnitude_prune
from lth_keras.pruning.random_masks import random_masks_like, random_prune
from lth_keras.pruning.rates import resolve_rates
from lth_keras.pruning.scores import (
    SCORES,
    Magnitude,
    PruneTargets,
    Random,
    Score,
    get_score,
)
from lth_keras.pruning.structures import STRUCTURES, Structure, Unstructured, get_structure

__all__ = [
    "SCORES",
    "STRUCTURES",
    "Magnitude",
    "PruneTargets",
    "Random",
    "Score",
    "Structure",
    "Unstructured",
    "check_rate",
    "check_rates",
    "fraction_remaining",
    "get_score",
    "get_structure",
    "global_magnitude_prune",
    "magnitude_prune",
    "prune_count",
    "pruned_counts",
    "random_masks_like",
    "random_prune",
    "resolve_rates",
]
