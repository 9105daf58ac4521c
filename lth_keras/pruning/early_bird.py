"""Early-bird tickets (You et al., ICLR 2020): when a round's mask is drawn.

Masks drawn during training stop changing early. At every epoch end
`LotteryPruner(early_bird=EarlyBird(...))` computes the mask pruning would
give now, without applying it, and its distance to the masks of the
previous `window - 1` epochs of the round; once every distance is at most
`threshold` the round's mask is drawn and the round ends. This module holds
the rule in NumPy: `mask_distance`, `EarlyBird`, and a compact text form of
the recent masks for the pruner's resumable state.
"""

import base64
import zlib

import numpy as np

from lth_keras._registry import Policy

__all__ = ["EarlyBird", "mask_distance"]


def _flat(masks, keys):
    if isinstance(masks, dict):
        return np.concatenate([np.asarray(masks[k], bool).reshape(-1) for k in keys])
    return np.asarray(masks, bool).reshape(-1)


def mask_distance(a, b, where=None):
    """Normalised Hamming distance: the fraction of entries where two masks differ.

    `1 - mean(a == b)` over the entries where `where` is `True` (all entries
    by default), pooled over every kernel when given dicts (the keys of
    `a`, in order).

    Args:
        a: A boolean array, or a dict of them.
        b: The same shape(s) as `a`.
        where: Entries that count, shaped as `a`. Defaults to `None`: all.

    Returns:
        A float in [0, 1]; `0.0` when no entry counts.

    Raises:
        ValueError: If the masks differ in size.

    Example:

    ```python
    >>> a = np.array([True, True, False, False])
    >>> mask_distance(a, np.array([True, False, True, False]))
    0.5
    >>> mask_distance(a, np.array([True, False, True, False]), where=a)
    0.5
    >>> mask_distance({"x": a}, {"x": ~a})
    1.0

    ```
    """
    keys = list(a) if isinstance(a, dict) else None
    a, b = _flat(a, keys), _flat(b, keys)
    if a.shape != b.shape:
        raise ValueError(f"Masks of different sizes cannot be compared: {a.size} and {b.size}.")
    if where is not None:
        where = _flat(where, keys)
        a, b = a[where], b[where]
    return float(np.mean(a != b)) if a.size else 0.0


class EarlyBird(Policy):
    """The early-bird rule: the mask is drawn once it stops changing.

    At each epoch end the candidate mask (what pruning would give now) is
    compared with the candidates of the previous `window - 1` epochs of the
    same round, by `mask_distance` over the entries unpruned when the round
    began (all entries in round 0, as in the paper; later rounds compare
    only what they can change). The mask is drawn at the first epoch where
    all `window - 1` distances are at most `threshold`, so at the earliest
    at epoch `window` of a round. The reference code's values are
    `window=5, threshold=0.1`; its masks are channel masks from BatchNorm
    scales, the rule applies to any mask.

    Args:
        window: Masks compared, the newest included; an int >= 2.
            Defaults to `5`.
        threshold: The largest distance still counted as unchanged, in
            [0, 1]. Defaults to `0.1`.

    Raises:
        ValueError: For a window below 2 or a threshold outside [0, 1].

    Example:

    ```python
    lth_keras.LotteryPruner(early_bird=EarlyBird(window=5, threshold=0.1))
    ```
    """

    def __init__(self, window=5, threshold=0.1):
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(
                "Received an invalid value for `window`, expected an int >= 2. "
                f"Received: window={window!r}"
            )
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ValueError(
                "Received an invalid value for `threshold`, expected a float in [0, 1]. "
                f"Received: threshold={threshold!r}"
            )
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(
                "Received an invalid value for `threshold`, expected a float in [0, 1]. "
                f"Received: threshold={threshold!r}"
            )
        self.window = window
        self.threshold = threshold

    def get_config(self):
        return {"window": self.window, "threshold": self.threshold}

    def observe(self, recent, candidate, masks):
        """Compares a new candidate mask with the recent ones.

        Args:
            recent: The candidates of the previous epochs of the round, as
                returned by earlier calls (oldest first); `[]` at the start
                of a round.
            candidate: `{key: bool array}`, the mask pruning would give now.
            masks: `{key: bool array}`, the masks of the round.

        Returns:
            `(recent, distances, drawn)`: the updated list to pass next time
            (at most `window - 1` entries), the distances from the candidate
            to each previous one (oldest first), and whether the mask is
            drawn.

        Example:

        ```python
        >>> rule = EarlyBird(window=2, threshold=0.0)
        >>> m = {"k": np.ones(4, bool)}
        >>> c = {"k": np.array([True, True, False, False])}
        >>> recent, d, drawn = rule.observe([], c, m)
        >>> d, drawn
        ([], False)
        >>> rule.observe(recent, c, m)[1:]
        ([0.0], True)

        ```
        """
        keys = list(masks)
        vector = _flat(candidate, keys)[_flat(masks, keys)]
        distances = [mask_distance(vector, old) for old in recent]
        drawn = len(distances) == self.window - 1 and max(distances) <= self.threshold
        return [*recent, vector][-(self.window - 1) :], distances, drawn


def pack_recent(recent):
    """The recent candidates of `EarlyBird.observe` as JSON-ready text."""
    return [
        {"size": int(v.size), "bits": base64.b64encode(zlib.compress(np.packbits(v))).decode()}
        for v in recent
    ]


def unpack_recent(packed):
    """The inverse of `pack_recent`."""
    return [
        np.unpackbits(
            np.frombuffer(zlib.decompress(base64.b64decode(p["bits"])), np.uint8), count=p["size"]
        ).astype(bool)
        for p in packed
    ]
