"""Sparsity structures: the shape of what one round may remove.

A `Structure` selects which entries of each mask to drop given scores and
targets. `Unstructured` (the paper's, and the default) drops single weights,
the lowest scores first, per kernel or pooled across kernels.
"""

from lth_keras._registry import Policy, Registry
from lth_keras.pruning.magnitude import global_magnitude_prune, magnitude_prune

__all__ = ["STRUCTURES", "Structure", "Unstructured", "get_structure"]


class Structure(Policy):
    """Base class of sparsity structures."""

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


STRUCTURES = Registry("structure", Structure)


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
    """A `Structure` from a name (`"unstructured"`), an instance or a config.

    Raises:
        ValueError: For an unknown name or type.

    Example:

    ```python
    get_structure("unstructured")  # Unstructured()
    ```
    """
    return STRUCTURES.get(identifier, "structure")
