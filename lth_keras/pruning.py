"""Pruning maths in pure NumPy: masks in, masks out.

Every function here takes weights and boolean masks keyed by a weight name
(for example `"dense/kernel"`), returns new masks and never modifies its
inputs. Nothing here knows about Keras.

The count rule used throughout: pruning a fraction `rate` of `n` remaining
weights removes `prune_count(n, rate)` of them, that is `rate * n` rounded
half up, computed exactly on the decimal value of `rate` (so `0.2` of 10 is
2, `0.25` of 10 is 3 and `0.05` of 10 is 1). Only weights whose mask is
`True` can be pruned, so masks only shrink. Among equal magnitudes the
weight with the lower flat index (in global pruning: the earlier weight name
in the order given, then the lower index) is pruned first.
"""

import fractions
import math

import numpy as np


def check_rate(rate, name="rate", allow_zero=False):
    """Raises unless `rate` is a float in (0, 1), or [0, 1) with `allow_zero`.

    Args:
        rate: The value to check.
        name: The argument's name, for the message. Defaults to `"rate"`.
        allow_zero: Whether 0 is allowed. Defaults to `False`.

    Raises:
        TypeError: If `rate` is not a number (bools are refused).
        ValueError: If `rate` is outside the allowed interval.

    Example:

    ```python
    check_rate(0.2)                      # passes
    check_rate(1.0)                      # ValueError: ... Received: rate=1.0
    check_rate(0.0, "output_rate", allow_zero=True)  # passes
    ```
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)):
        raise TypeError(
            f"Received an invalid type for `{name}`, expected a float. "
            f"Received: {name}={rate!r} of type {type(rate).__name__}"
        )
    low_ok = rate >= 0.0 if allow_zero else rate > 0.0
    if not (low_ok and rate < 1.0):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a float in "
            f"{interval}. Received: {name}={rate}"
        )


def prune_count(remaining, rate):
    """Number of weights to prune from `remaining` at `rate`.

    The count is `rate * remaining` rounded half up, computed exactly on the
    decimal value of `rate` (`repr(rate)`), so binary floating point never
    moves a count across a rounding boundary.

    Args:
        remaining: Number of weights still unpruned, a non-negative int.
        rate: Fraction of `remaining` to prune, a float in [0, 1).

    Returns:
        An int in `[0, remaining]`.

    Raises:
        ValueError: If `remaining` is negative or `rate` is outside [0, 1).

    Example:

    ```python
    >>> prune_count(10, 0.2), prune_count(10, 0.25), prune_count(1, 0.5)
    (2, 3, 1)
    ```
    """
    check_rate(rate, allow_zero=True)
    if remaining < 0:
        raise ValueError(
            "Received an invalid value for `remaining`, expected a "
            f"non-negative int. Received: remaining={remaining}"
        )
    exact = fractions.Fraction(repr(float(rate))) * int(remaining)
    return min(int(remaining), math.floor(exact + fractions.Fraction(1, 2)))


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


def pruned_counts(old_masks, new_masks):
    """Number of entries each weight lost between two sets of masks.

    Args:
        old_masks: Mapping from name to a boolean array.
        new_masks: Mapping with the same names; each mask must be a subset
            of the old one.

    Returns:
        A dict from name to the int number of entries pruned.

    Raises:
        ValueError: If a new mask keeps an entry the old one had pruned.

    Example:

    ```python
    >>> pruned_counts({"a": np.array([True, True])},
    ...               {"a": np.array([True, False])})
    {'a': 1}
    ```
    """
    counts = {}
    for name, old in old_masks.items():
        new = new_masks[name]
        if np.any(new & ~old):
            raise ValueError(
                f"Masks can only shrink, but the new mask for {name!r} keeps "
                f"{int(np.sum(new & ~old))} entries the old mask had pruned."
            )
        counts[name] = int(old.sum()) - int(new.sum())
    return counts


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


def fraction_remaining(masks):
    """Fraction of entries still unpruned, overall and per weight.

    Args:
        masks: Mapping from name to a boolean array.

    Returns:
        A tuple `(total, per_weight)`: `total` is the sum of unpruned entries
        over the sum of sizes (1.0 for no weights), `per_weight` a dict from
        name to that weight's own fraction.

    Example:

    ```python
    >>> fraction_remaining({"a": np.array([True, False]),
    ...                     "b": np.array([True, True])})
    (0.75, {'a': 0.5, 'b': 1.0})
    ```
    """
    kept = {name: int(mask.sum()) for name, mask in masks.items()}
    sizes = {name: int(mask.size) for name, mask in masks.items()}
    total_size = sum(sizes.values())
    total = sum(kept.values()) / total_size if total_size else 1.0
    return total, {n: kept[n] / sizes[n] if sizes[n] else 1.0 for n in masks}


def check_rates(rate, output_rate=None, layer_rates=None):
    """Raises unless `rate` is in (0, 1) and the other rates are in [0, 1).

    Args:
        rate: The default rate.
        output_rate: Rate of the output layer, or `None`. Defaults to `None`.
        layer_rates: Mapping (or pairs) from layer name or type to rate.
            Defaults to `None`.

    Raises:
        ValueError: If a rate is out of range; TypeError if not a number.

    Example:

    ```python
    check_rates(0.2, output_rate=0.1, layer_rates={"Conv2D": 0.15})
    ```
    """
    check_rate(rate)
    if output_rate is not None:
        check_rate(output_rate, "output_rate", allow_zero=True)
    pairs = layer_rates.items() if isinstance(layer_rates, dict) else (layer_rates or ())
    for key, value in pairs:
        check_rate(value, f"layer_rates[{key!r}]", allow_zero=True)


def _matches(key, name, type_names):
    return key == name or key in type_names


def resolve_rates(layers, rate, output_rate=None, layer_rates=None, exclude=()):
    """Pruning rate of every layer, from one rate plus overrides.

    Precedence, highest first: `exclude`, a `layer_rates` key equal to the
    layer's name, `output_rate` for the last layer, a `layer_rates` key
    equal to one of the layer's type names (the first of its `type_names`
    found wins), then `rate`. The paper prunes the output layer at half the
    rate of the others, hence the default.

    Args:
        layers: Sequence of `(name, type_names)` pairs in model order, where
            `type_names` holds the class names the layer answers to (for
            example `("MaskedConv2D", "Conv2D")`).
        rate: Fraction of remaining weights pruned per round, in (0, 1).
        output_rate: Rate of the last layer. Defaults to `None`, meaning
            `rate / 2`.
        layer_rates: Mapping from a layer name or type name to a rate in
            [0, 1). Defaults to `None`.
        exclude: Layer names or type names never pruned. Defaults to `()`.

    Returns:
        A dict from layer name to rate; excluded layers are absent.

    Raises:
        ValueError: If a rate is outside its interval, or a key in
            `layer_rates` or `exclude` matches no layer.

    Example:

    ```python
    >>> layers = [("fc1", ("Dense",)), ("fc2", ("Dense",)),
    ...           ("out", ("Dense",))]
    >>> resolve_rates(layers, 0.2, layer_rates={"fc2": 0.1})
    {'fc1': 0.2, 'fc2': 0.1, 'out': 0.1}
    ```
    """
    check_rates(rate, output_rate, layer_rates)
    output_rate = rate / 2 if output_rate is None else output_rate
    layer_rates = dict(layer_rates or {})
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    known = [name for name, _ in layers]
    for arg, keys in (("layer_rates", layer_rates), ("exclude", exclude)):
        for key in keys:
            if not any(_matches(key, n, t) for n, t in layers):
                raise ValueError(
                    f"Received a key in `{arg}` that matches no masked layer "
                    f"name or type. Received: {key!r}; layers: {known}"
                )
    rates = {}
    for i, (name, type_names) in enumerate(layers):
        if any(_matches(key, name, type_names) for key in exclude):
            continue
        typed = [layer_rates[t] for t in type_names if t in layer_rates]
        if name in layer_rates:
            rates[name] = layer_rates[name]
        elif i == len(layers) - 1:
            rates[name] = output_rate
        elif typed:
            rates[name] = typed[0]
        else:
            rates[name] = rate
    return rates
