"""Pruning maths in pure NumPy: masks in, masks out.

Every function here takes weights and boolean masks keyed by a weight name
(for example `"dense/kernel"`), returns new masks and never modifies its
inputs. Nothing here knows about Keras, except the scores that need the
model (`at_init`, computed in `saliency`).

- `counts`: the count rule (`prune_count`: `rate * n` rounded half up, on
  the exact decimal value of the rate), rate checks, fractions remaining;
- `magnitude`: keep the largest values, per weight or pooled, ties broken by
  index;
- `random_masks`: the random controls;
- `rates`: per-layer rates from one rate and overrides;
- `scores` and `structures`: the policies `LotteryPruner` takes (`method=`,
  `structure=`), built on the functions above; `structured`: whole units,
  blocks and N:M groups (`"units"`, `"block:1x4"`, `"2:4"`), which read each
  kernel's `KernelLayout`;
- `at_init`: the scores that need the model (`"snip"`, `"grasp"`,
  `"synflow"`) and `prune_at_init`, one-shot pruning; their gradients come
  from `saliency`, the one module here that runs a model (through
  `keras.ops` and `stateless_call`, reading masks through `lth_keras.masks`);
- `early_bird`: when a round's mask is drawn (`LotteryPruner(early_bird=...)`).
"""

from lth_keras.pruning.at_init import GraSP, Snip, SynFlow, prune_at_init
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
    "SCORES",
    "STRUCTURES",
    "Blocks",
    "EarlyBird",
    "GraSP",
    "KernelLayout",
    "Magnitude",
    "PruneTargets",
    "Random",
    "Score",
    "Snip",
    "Structure",
    "SynFlow",
    "Units",
    "Unstructured",
    "check_rate",
    "check_rates",
    "fraction_remaining",
    "get_score",
    "get_structure",
    "global_magnitude_prune",
    "magnitude_prune",
    "mask_distance",
    "prune_at_init",
    "prune_count",
    "pruned_counts",
    "random_masks_like",
    "random_prune",
    "resolve_rates",
    "shuffle_masks",
]
