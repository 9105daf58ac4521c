"""Pruning maths in pure NumPy: masks in, masks out.

Every function here takes weights and boolean masks keyed by a weight name
(for example `"dense/kernel"`), returns new masks and never modifies its
inputs. Nothing here knows about Keras or runs a model: the scores that do
(SNIP, GraSP, SynFlow, `prune_at_init`) are in `lth_keras.saliency`, and
which kernels of a model to prune at which rate is `lth_keras.Targets`.

- `counts`: the count rule (`prune_count`: `rate * n` rounded half up, on
  the exact decimal value of the rate), rate checks, fractions remaining;
- `magnitude`: keep the largest values, per weight or pooled, ties broken by
  index;
- `random_masks`: the random controls;
- `rates`: per-kernel rates from one rate and overrides;
- `scores` and `structures`: the policies `LotteryPruner` takes (`method=`,
  `structure=`), built on the functions above; `structured`: whole units,
  blocks and N:M groups (`"units"`, `"block:1x4"`, `"2:4"`), which read each
  kernel's `KernelLayout`;
- `early_bird`: when a round's mask is drawn (`LotteryPruner(early_bird=...)`);
- `schedules`: when to prune (`LotteryPruner(schedule=...)`): `Rounds` (the
  paper's iterative pruning) or tfmot's step schedules `ConstantSparsity`
  and `PolynomialDecay` (gradual pruning), with tfmot's count rule
  `keep_count`.
"""

from lth_keras.pruning.counts import (
    check_rate,
    check_rates,
    fraction_remaining,
    prune_count,
    pruned_counts,
)
from lth_keras.pruning.early_bird import EarlyBird, mask_distance
from lth_keras.pruning.magnitude import global_magnitude_prune, magnitude_prune
from lth_keras.pruning.random_masks import random_masks_like, random_prune, shuffle_masks
from lth_keras.pruning.rates import resolve_rates
from lth_keras.pruning.schedules import (
    SCHEDULES,
    ConstantSparsity,
    PolynomialDecay,
    Rounds,
    Schedule,
    SparsitySchedule,
    get_schedule,
    keep_count,
)
from lth_keras.pruning.scores import (
    SCORES,
    KernelLayout,
    Magnitude,
    PruneTargets,
    Random,
    Score,
    get_score,
)
from lth_keras.pruning.structured import NM, Blocks, Units
from lth_keras.pruning.structures import STRUCTURES, Structure, Unstructured, get_structure

__all__ = [
    "NM",
    "SCHEDULES",
    "SCORES",
    "STRUCTURES",
    "Blocks",
    "ConstantSparsity",
    "EarlyBird",
    "KernelLayout",
    "Magnitude",
    "PolynomialDecay",
    "PruneTargets",
    "Random",
    "Rounds",
    "Schedule",
    "Score",
    "SparsitySchedule",
    "Structure",
    "Units",
    "Unstructured",
    "check_rate",
    "check_rates",
    "fraction_remaining",
    "get_schedule",
    "get_score",
    "get_structure",
    "global_magnitude_prune",
    "keep_count",
    "magnitude_prune",
    "mask_distance",
    "prune_count",
    "pruned_counts",
    "random_masks_like",
    "random_prune",
    "resolve_rates",
    "shuffle_masks",
]
