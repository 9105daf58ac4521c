"""Selecting the weights to prune: the lowest scores, per weight or pooled.

The functions are named for their classic use, magnitude pruning: they keep
the entries with the largest `abs(value)`, so any non-negative score works
in place of the weights. Only entries whose mask is `True` can be pruned, so
masks only shrink. Among equal values the entry with the lower flat index (in
global pruning: the earlier weight name in the order given, then the lower
index) is pruned first.
"""

import numpy as np

from lth_keras.pruning.counts import check_rate, prune_count

__all__ = ["global_magnitude_prune", "magnitude_prune"]


def _check_pair(name, weight, mask):
    if mask.dtype != np.bool_:
        raise TypeError(
            f"Masks must be boolean arrays. Received: mask for {name!r} with dtype={mask.dtype}"
        )
    if weight.shape != mask.shape:
        raise ValueError(
            f"Weight and mask shapes differ for {name!r}. Received: "
            f"weight.shape={weight.shape}, mask.shape={mask.shape}"
        )


def _keys(masks, names):
    names = list(masks) if names is None else list(names)
    unknown = [n for n in names if n not in masks]
    if unknown:
        raise KeyError(f"Received weight names with no mask: {unknown}. Known names: {list(masks)}")
    return names


def _prune_smallest(weight, mask, count):
    """Returns `mask` with the `count` smallest unpruned entries removed."""
    alive = np.flatnonzero(mask)
    if count <= 0:
        return mask.copy()
    magnitude = np.abs(weight.reshape(-1)[alive])
    # Stable sort: among equal magnitudes the lower flat index comes first.
    order = np.argsort(magnitude, kind="stable")
    new = mask.copy().reshape(-1)
    new[alive[order[:count]]] = False
    return new.reshape(mask.shape)


def magnitude_prune(weights, masks, rates):
    """Prunes each weight's smallest-magnitude unpruned entries (layerwise).

    For every name in `rates`, removes `prune_count(mask.sum(), rate)` of the
    entries still in the mask, smallest `abs(weight)` first, ties broken by
    lower flat index. A weight already fully pruned stays fully pruned.

    Args:
        weights: Mapping from name to a float array.
        masks: Mapping from name to a boolean array of the same shape; must
            hold every name in `rates`.
        rates: Mapping from name to the fraction of that weight's remaining
            entries to prune, in [0, 1). Names missing here are unchanged.

    Returns:
        A new dict of boolean masks with the same keys as `masks`.

    Raises:
        KeyError: If a name in `rates` has no mask.
        TypeError: If a mask is not boolean.
        ValueError: If shapes differ or a rate is outside [0, 1).

    Example:

    ```python
    >>> w = {"fc": np.array([0.5, -0.1, 0.3, 0.2])}
    >>> m = {"fc": np.ones(4, dtype=bool)}
    >>> magnitude_prune(w, m, {"fc": 0.5})["fc"]
    array([ True, False,  True, False])

    ```
    """
    _keys(masks, rates)
    new = {name: mask.copy() for name, mask in masks.items()}
    for name, rate in rates.items():
        weight = np.asarray(weights[name])
        _check_pair(name, weight, masks[name])
        count = prune_count(int(masks[name].sum()), rate)
        new[name] = _prune_smallest(weight, masks[name], count)
    return new


def global_magnitude_prune(weights, masks, rate, names=None):
    """Prunes the smallest unpruned entries across several weights at once.

    Pools the unpruned entries of every weight in `names` and removes
    `prune_count(total_remaining, rate)` of them, smallest `abs(weight)`
    first; ties go to the weight listed first in `names`, then to the lower
    flat index. Weights not in `names` are unchanged.

    Args:
        weights: Mapping from name to a float array.
        masks: Mapping from name to a boolean array of the same shape.
        rate: Fraction of the pooled remaining entries to prune, in [0, 1).
        names: The weights that share the pool, in tie-breaking order.
            Defaults to `None`, meaning every name in `masks`.

    Returns:
        A new dict of boolean masks with the same keys as `masks`.

    Raises:
        KeyError: If a name in `names` has no mask.
        TypeError: If a mask is not boolean.
        ValueError: If shapes differ or `rate` is outside [0, 1).

    Example:

    ```python
    >>> w = {"a": np.array([0.9, 0.1]), "b": np.array([0.2, 0.8])}
    >>> m = {k: np.ones(2, dtype=bool) for k in w}
    >>> new = global_magnitude_prune(w, m, 0.5)
    >>> new["a"], new["b"]
    (array([ True, False]), array([False,  True]))

    ```
    """
    names = _keys(masks, names)
    check_rate(rate, allow_zero=True)
    new = {name: mask.copy() for name, mask in masks.items()}
    if not names:
        return new
    magnitudes, positions = [], []
    for name in names:
        weight = np.asarray(weights[name])
        _check_pair(name, weight, masks[name])
        alive = np.flatnonzero(masks[name])
        magnitudes.append(np.abs(weight.reshape(-1)[alive]))
        positions.append(alive)
    pooled = np.concatenate(magnitudes)
    count = prune_count(pooled.size, rate)
    # Stable sort over the concatenation: earlier names, then lower index.
    chosen = np.argsort(pooled, kind="stable")[:count]
    offsets = np.cumsum([0] + [p.size for p in positions])
    for i, name in enumerate(names):
        local = chosen[(chosen >= offsets[i]) & (chosen < offsets[i + 1])]
        flat = new[name].reshape(-1)
        flat[positions[i][local - offsets[i]]] = False
        new[name] = flat.reshape(masks[name].shape)
    return new
