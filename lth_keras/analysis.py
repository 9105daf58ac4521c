"""Overlap ratio R_p: how much two weight sets agree on which weights are large.

Liu et al., "Lottery Ticket Preserves Weight Correlation: Is It Desirable or
Not?" (ICML 2021, arXiv 2102.11068), Eq. 1:
`R_p(a, b) = sum_l |T_p(a_l) & T_p(b_l)| / sum_l |T_p(a_l)|`, where `T_p(w)`
holds the flat indices of the top `count(p, n)` entries of kernel `w` by
absolute value. The exact rule: `count(p, n)` is `p * n` rounded half up on
the decimal value of `p` (as `lth_keras.pruning.prune_count`), all `n` for
`p = 1`; among equal magnitudes the lower flat index ranks higher; given
masks, only the `n` surviving entries are ranked, so pruned ones never count.
The paper's denominator `p * sum_l N_l` is the sum of the counts up to
rounding. Pure NumPy: nothing here needs a particular Keras backend.
"""

from collections.abc import Mapping

import numpy as np

from lth_keras.pruning import prune_count


def _check_p(p):
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(
            "Received an invalid type for `p`, expected a float. "
            f"Received: p={p!r} of type {type(p).__name__}"
        )
    if not 0.0 < p <= 1.0:
        raise ValueError(
            f"Received an invalid value for `p`, expected a float in (0, 1]. Received: p={p}"
        )


def _kernels(x, arg):
    """The kernels of `x`: itself if a mapping, else those of a Keras model."""
    if isinstance(x, Mapping):
        return {name: np.asarray(value) for name, value in x.items()}
    import keras

    from lth_keras.masks import get_kernels

    if not isinstance(x, keras.Model):
        raise TypeError(
            f"Received an invalid type for `{arg}`, expected a dict of arrays or a Keras "
            f"model. Received: {arg} of type {type(x).__name__}"
        )
    kernels = get_kernels(x)
    if not kernels:
        raise ValueError(
            f"Received a model with no masked layers as `{arg}`. Call "
            "lth_keras.prunable(model) first, or pass a dict of kernels."
        )
    return kernels


def _checked(a, b, masks):
    """Kernels of `a` and `b` and their boolean masks (or `None`), checked."""
    kernels_a, kernels_b = _kernels(a, "a"), _kernels(b, "b")
    if set(kernels_a) != set(kernels_b):
        missing = [n for n in kernels_a if n not in kernels_b]
        extra = [n for n in kernels_b if n not in kernels_a]
        raise ValueError(
            "The kernels of `a` and `b` have different names. "
            f"Missing from `b`: {missing}; extra in `b`: {extra}"
        )
    if masks is None and not isinstance(a, Mapping):
        from lth_keras.masks import get_masks

        masks = get_masks(a)
    missing = [n for n in kernels_a if masks is not None and n not in masks]
    if missing:
        raise ValueError(f"Received `masks` with no mask for kernels: {missing}")
    checked = None if masks is None else {}
    for name, kernel in kernels_a.items():
        if kernel.shape != kernels_b[name].shape:
            raise ValueError(
                f"Kernel shapes differ for {name!r}. Received: "
                f"a.shape={kernel.shape}, b.shape={kernels_b[name].shape}"
            )
        if masks is None:
            continue
        mask = np.asarray(masks[name])
        if mask.dtype != np.bool_:
            raise TypeError(
                f"Masks must be boolean arrays. Received: mask for {name!r} with dtype={mask.dtype}"
            )
        if mask.shape != kernel.shape:
            raise ValueError(
                f"Kernel and mask shapes differ for {name!r}. Received: "
                f"kernel.shape={kernel.shape}, mask.shape={mask.shape}"
            )
        checked[name] = mask
    return kernels_a, kernels_b, checked


def _ranked(weight, mask):
    """Flat indices of the surviving entries of `weight`, largest |w| first.

    A stable sort on -|w|: among equal magnitudes the lower flat index first.
    """
    alive = np.arange(weight.size) if mask is None else np.flatnonzero(mask)
    magnitude = np.abs(weight.reshape(-1)[alive])
    return alive[np.argsort(-magnitude, kind="stable")]


def _shared(order_a, order_b, p, size):
    """`(|top_a & top_b|, count)` for the top `count(p, n)` of two rankings."""
    alive = order_a.size
    count = alive if p == 1 else prune_count(alive, p)
    top = np.zeros(size, dtype=bool)
    top[order_a[:count]] = True
    return int(np.count_nonzero(top[order_b[:count]])), count


def _overlaps(a, b, ps, masks):
    """`{p: (per-kernel ratios, network ratio)}`, each kernel ranked once for all `ps`."""
    sums = {p: [{}, 0, 0] for p in ps}
    for name in a:
        mask = None if masks is None else masks[name]
        order_a, order_b = _ranked(a[name], mask), _ranked(b[name], mask)
        for p in ps:
            overlap, count = _shared(order_a, order_b, p, a[name].size)
            ratios, shared, total = sums[p]
            ratios[name] = overlap / count if count else 1.0
            sums[p][1:] = [shared + overlap, total + count]
    return {
        p: (ratios, shared / total if total else 1.0) for p, (ratios, shared, total) in sums.items()
    }


def overlap_ratio(a, b, p, masks=None, per_layer=False):
    """Overlap ratio R_p of Liu et al. (ICML 2021, Eq. 1) between two weight sets.

    For each kernel, takes the top `count(p, n)` entries by absolute value
    (`p * n` rounded half up as in `lth_keras.pruning.prune_count`, all `n`
    for `p = 1`; ties go to the lower flat index) in `a` and in `b`, and
    returns the summed sizes of the intersections over the summed counts.
    With `masks`, only surviving entries are ranked and `n` is their number.
    A kernel whose count is 0 (a fully pruned kernel, or `p * n < 0.5`)
    adds nothing to either sum and gets 1.0 in the per-layer result (two
    empty sets agree); if every count is 0 the total is 1.0 too.

    Args:
        a: Dict from kernel name (as `lth_keras.get_masks` keys them, e.g.
            `"fc1/kernel"`) to array, or a Keras model with masked layers.
        b: The same kind of argument with the same names and shapes.
        p: Fraction of each kernel's (surviving) entries compared, in (0, 1].
        masks: Dict from kernel name to boolean mask; must hold every name.
            Defaults to `None`: the masks of `a` if `a` is a model, else
            every entry survives.
        per_layer: Whether to return one ratio per kernel. Defaults to
            `False`.

    Returns:
        A float in [0, 1], or with `per_layer` a dict from kernel name to
        float. Independent random weights give about `p`.

    Raises:
        TypeError: If `p` is not a number (bools are refused), a mask is not
            boolean, or `a`/`b` is neither a dict nor a Keras model.
        ValueError: If `p` is outside (0, 1], the kernel names of `a` and `b`
            differ, shapes differ, a mask is missing or has another shape,
            or a model has no masked layers.

    Example:

    ```python
    theta_0 = lth_keras.masks.get_kernels(model)  # at initialisation
    model.fit(x, y, epochs=10)
    theta_t = lth_keras.masks.get_kernels(model)
    masks = lth_keras.get_masks(model)
    overlap_ratio(theta_0, theta_t, 0.2, masks=masks)  # about 0.2: uncorrelated
    ```
    """
    return overlap_ratios(a, b, (p,), masks=masks, per_layer=per_layer)[p]


def overlap_ratios(a, b, ps, masks=None, per_layer=False):
    """`overlap_ratio` for several `p` at once, ranking each kernel only once.

    Args:
        a: As for `overlap_ratio`.
        b: As for `overlap_ratio`.
        ps: A sequence of fractions, each in (0, 1].
        masks: As for `overlap_ratio`. Defaults to `None`.
        per_layer: As for `overlap_ratio`. Defaults to `False`.

    Returns:
        A dict from each `p` to what `overlap_ratio(a, b, p, ...)` returns.

    Raises:
        TypeError: As `overlap_ratio`, for any `p`.
        ValueError: As `overlap_ratio`, for any `p`.

    Example:

    ```python
    overlap_ratios(theta_0, theta_t, (0.1, 0.2, 0.5), masks=masks)  # {0.1: ..., ...}
    ```
    """
    for p in ps:
        _check_p(p)
    a, b, masks = _checked(a, b, masks)
    results = _overlaps(a, b, tuple(ps), masks)
    return {p: ratios if per_layer else total for p, (ratios, total) in results.items()}
