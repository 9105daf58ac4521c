"""Sparsity structures: the shape of what one round may remove.

A `Structure` selects which entries of each mask to drop given scores and
targets. `Unstructured` (the paper's, and the default) drops single weights,
the lowest scores first, per kernel or pooled across kernels. The structured
ones (`"units"`, `"block:1xK"`, `"N:M"`) live in
`lth_keras.pruning.structured`; `get_structure` parses their shorthands.
"""

import re

from lth_keras._registry import Policy, Registry
from lth_keras.pruning.magnitude import global_magnitude_prune, magnitude_prune

__all__ = ["STRUCTURES", "Structure", "Unstructured", "get_structure"]


class Structure(Policy):
    """Base class of sparsity structures.

    `random_by_scores` tells `lth_keras.pruning.Random` how to be random:
    `False` moves magnitude's per-kernel counts to random single weights,
    `True` feeds `select` uniform random scores (for structures that remove
    groups of weights). A configured structure sets `shorthand`, a regular
    expression whose int groups are its constructor arguments (`"2:4"` for
    `NM(2, 4)`), and `shorthand_help` for messages.
    """

    random_by_scores = False
    shorthand = None
    shorthand_help = None

    def items(self, key, mask, targets):
        """`(items, alive items)` of a kernel: what a sparsity counts (gradual pruning).

        Single weights here; a structure removing groups whole counts its
        groups (`Blocks`).

        Args:
            key: The kernel's key.
            mask: Its boolean mask.
            targets: A `lth_keras.pruning.PruneTargets` (for the layout).

        Returns:
            Two ints.
        """
        return int(mask.size), int(mask.sum())

    def select(self, scores, masks, targets):
        """New masks removing the lowest-scored entries the targets ask for.

        Args:
            scores: `{key: non-negative array}`, higher survives.
            masks: `{key: bool array}`.
            targets: A `lth_keras.pruning.PruneTargets`.

        Returns:
            A new dict of boolean masks with the keys of `masks`.
        """
        raise NotImplementedError


class _StructureRegistry(Registry):
    """The registry, plus shorthands for configured structures.

    A class with a `shorthand` regular expression (e.g. `r"(\\d+):(\\d+)"`)
    is built from the ints it captures; other classes from their name.
    """

    def parse(self, text):
        """The structure a string names, or `None`."""
        for name, cls in self._classes.items():
            if cls.shorthand is None and text == name:
                return cls()
            match = cls.shorthand and re.fullmatch(cls.shorthand, text)
            if match:
                return cls(*(int(group) for group in match.groups()))
        return None

    def get(self, identifier, argument=None):
        argument = argument or self.kind
        if isinstance(identifier, self.base):
            return identifier
        if isinstance(identifier, dict) and set(identifier) == {"name", "config"}:
            name = identifier["name"]
            parsed = self.parse(name) if isinstance(name, str) else None
            cls = self._classes.get(name) or (parsed and type(parsed))
            if cls is not None:
                return cls.from_config(identifier["config"])
        parsed = self.parse(identifier) if isinstance(identifier, str) else None
        if parsed is None:
            options = ", ".join(
                repr(name) if cls.shorthand is None else cls.shorthand_help
                for name, cls in self._classes.items()
            )
            raise ValueError(
                f"Received an invalid value for `{argument}`, expected one of [{options}] "
                f"or a Structure instance. Received: {argument}={identifier!r}"
            )
        return parsed


STRUCTURES = _StructureRegistry("structure", Structure)
"""The registered structures by name (`"unstructured"`, `"units"`, `"block:1xK"`, `"N:M"`)."""


@STRUCTURES.register("unstructured")
class Unstructured(Structure):
    """Single weights: `prune_count(remaining, rate)` per kernel, or pooled.

    Example:

    ```python
    lth_keras.LotteryPruner(structure="unstructured")
    ```
    """

    def select(self, scores, masks, targets):
        if targets.pooled_rate is not None:
            return global_magnitude_prune(scores, masks, targets.pooled_rate, list(targets.rates))
        return magnitude_prune(scores, masks, targets.rates)


def get_structure(identifier):
    """A `Structure` from a string, an instance or a config.

    Strings: `"unstructured"`, `"units"`, `"block:1xK"` (e.g. `"block:1x4"`,
    `"block:1x16"`: `Blocks(K)`) and `"N:M"` (e.g. `"2:4"`: `NM(2, 4)`).

    Raises:
        ValueError: For an unknown string or type, or invalid sizes.

    Example:

    ```python
    get_structure("2:4")  # NM(n=2, m=4)
    ```
    """
    return STRUCTURES.get(identifier, "structure")
