"""Count rules and fractions: how many weights a rate prunes, how many remain.

The count rule used throughout lth_keras: pruning a fraction `rate` of `n`
remaining weights removes `prune_count(n, rate)` of them, that is
`rate * n` rounded half up, computed exactly on the decimal value of `rate`
(so `0.2` of 10 is 2, `0.25` of 10 is 3 and `0.05` of 10 is 1).
"""

import fractions
import math

import numpy as np

__all__ = ["check_rate", "check_rates", "fraction_remaining", "prune_count", "pruned_counts"]


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
