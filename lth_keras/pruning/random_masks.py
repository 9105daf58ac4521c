"""Random pruning: the random-pruning, random-mask and shuffled-mask controls."""

import numpy as np

from lth_keras.pruning.magnitude import _keys

__all__ = ["random_masks_like", "random_prune", "shuffle_masks"]


def random_prune(masks, counts, rng):
    """Prunes `counts[name]` unpruned entries of each mask, chosen at random.

    This is the random-pruning control: with `counts` taken from a magnitude
    step (see `pruned_counts`), every weight loses exactly as many entries
    as magnitude pruning would have removed, chosen uniformly among its
    unpruned entries.

    Args:
        masks: Mapping from name to a boolean array.
        counts: Mapping from name to the number of entries to prune; each at
            most that mask's number of `True` entries. Names missing here are
            unchanged.
        rng: A `numpy.random.Generator`.

    Returns:
        A new dict of boolean masks with the same keys as `masks`.

    Raises:
        KeyError: If a name in `counts` has no mask.
        ValueError: If a count is negative or exceeds the unpruned entries.

    Example:

    ```python
    >>> m = {"fc": np.ones(10, dtype=bool)}
    >>> int(random_prune(m, {"fc": 3}, np.random.default_rng(0))["fc"].sum())
    7

    ```
    """
    _keys(masks, counts)
    new = {name: mask.copy() for name, mask in masks.items()}
    for name, count in counts.items():
        alive = np.flatnonzero(masks[name])
        if not 0 <= count <= alive.size:
            raise ValueError(
                f"Received an invalid count for {name!r}, expected an int in "
                f"[0, {alive.size}]. Received: count={count}"
            )
        flat = new[name].reshape(-1)
        flat[rng.choice(alive, size=int(count), replace=False)] = False
        new[name] = flat.reshape(masks[name].shape)
    return new


def random_masks_like(masks, rng):
    """Random masks with the same number of unpruned entries per weight.

    The paper's random-sparsity control: every returned mask keeps exactly as
    many entries as the given one, placed uniformly at random.

    Args:
        masks: Mapping from name to a boolean array.
        rng: A `numpy.random.Generator`.

    Returns:
        A new dict of boolean masks, `new[k].sum() == masks[k].sum()`.

    Example:

    ```python
    >>> m = {"fc": np.array([True, False, False, True])}
    >>> int(random_masks_like(m, np.random.default_rng(0))["fc"].sum())
    2

    ```
    """
    full = {name: np.ones(mask.shape, dtype=bool) for name, mask in masks.items()}
    counts = {name: mask.size - int(mask.sum()) for name, mask in masks.items()}
    return random_prune(full, counts, rng)


def shuffle_masks(masks, rng):
    """Masks with each one's entries permuted at random: same count, new positions.

    The shuffle sanity check of Frankle et al. (ICLR 2021) and Su et al.
    (NeurIPS 2020): a mask keeps only its per-kernel sparsity. Every mask is
    permuted independently over all its entries (one `rng.permutation` per
    mask, in key order), so `new[k].sum() == masks[k].sum()`. For an
    unstructured mask the result has the same distribution as
    `random_masks_like`; a structured mask (units, blocks, N:M) loses its
    structure.

    Args:
        masks: Mapping from name to a boolean array.
        rng: A `numpy.random.Generator`.

    Returns:
        A new dict of boolean masks with the same keys and shapes.

    Example:

    ```python
    >>> m = {"fc": np.array([True, True, False, False, False, False])}
    >>> new = shuffle_masks(m, np.random.default_rng(0))
    >>> int(new["fc"].sum()), new["fc"].shape
    (2, (6,))

    ```
    """
    return {
        name: rng.permutation(np.asarray(mask, dtype=bool).reshape(-1)).reshape(np.shape(mask))
        for name, mask in masks.items()
    }
