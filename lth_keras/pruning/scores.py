"""Pruning scores: which weights a round removes.

A `Score` turns kernels and masks into new masks, given the pruning targets
(rates per kernel, or one pooled rate) and a `Structure` that selects the
lowest scores. `Magnitude` (the paper's) keeps the largest `abs(weight)`;
`Random` removes as many weights per kernel as magnitude pruning would, at
random positions (the random-pruning control). New scores (e.g. ones that
need data or gradients) subclass `Score` and register a name, which becomes
a valid `LotteryPruner(method=...)`; `Snip`, `GraSP` and `SynFlow`
(`lth_keras.saliency`) are such scores, reading the model `bind` gives.
"""

import dataclasses

import numpy as np

from lth_keras._registry import Policy, Registry
from lth_keras.pruning.counts import pruned_counts
from lth_keras.pruning.random_masks import random_prune

__all__ = [
    "SCORES",
    "KernelLayout",
    "Magnitude",
    "PruneTargets",
    "Random",
    "Score",
    "get_score",
]


@dataclasses.dataclass(frozen=True)
class KernelLayout:
    """Which axes of a kernel are its inputs and its outputs.

    Structured sparsity needs them: `"units"` prunes slices along the output
    axis, `"block:1xK"` and `"N:M"` group entries along the input axis.
    `LotteryPruner` fills them from the masked layers' `kernel_axes`.

    Attributes:
        input_axis: The axis indexing the layer's input features (negative
            counts from the end), or `None` where there is none (depthwise
            kernels, embeddings).
        output_axis: The axis indexing the layer's output units or
            channels, or `None` (depthwise kernels).
        is_output: Whether the kernel belongs to the model's last masked
            layer, whose units are the model's outputs. Defaults to `False`.
        layer_type: The layer's class name, for messages. Defaults to `""`.

    Example:

    ```python
    KernelLayout(input_axis=-2, output_axis=-1)  # Dense, Conv1D/2D/3D
    ```
    """

    input_axis: int | None
    output_axis: int | None
    is_output: bool = False
    layer_type: str = ""


@dataclasses.dataclass(frozen=True)
class PruneTargets:
    """How much a round prunes.

    Attributes:
        rates: `{kernel key: rate}` for layerwise pruning; kernels missing
            here are not pruned.
        pooled_rate: For global pruning, the rate of the pooled kernels
            (the keys of `rates`, in order); `None` for layerwise pruning.
        layouts: `{kernel key: KernelLayout}`, needed by structured
            sparsity only. Defaults to `{}`.

    Example:

    ```python
    PruneTargets({"fc1/kernel": 0.2, "out/kernel": 0.1})
    ```
    """

    rates: dict
    pooled_rate: float | None = None
    layouts: dict = dataclasses.field(default_factory=dict)


class Score(Policy):
    """Base class of pruning scores: higher scores survive.

    Subclasses implement `scores`, or override `prune` for a rule that is
    not "remove the lowest scores". A score that needs the model (gradients
    or a forward pass: SNIP, GraSP, SynFlow) reads it from `self.model`,
    which `bind` sets: `LotteryPruner` binds its method to the model it is
    attached to, `lth_keras.saliency.prune_at_init` to the model it prunes.
    A score is bound to one model at a time.
    """

    model = None

    def bind(self, model):
        """Gives the score the model whose kernels it scores.

        Args:
            model: A built Keras model with masked layers.

        Example:

        ```python
        score = lth_keras.saliency.Snip(data=(x, y))
        score.bind(model)
        ```
        """
        self.model = model

    def bound_model(self):
        """The model `bind` gave; raises if there is none.

        Raises:
            ValueError: If the score is not bound to a model.
        """
        if self.model is None:
            raise ValueError(
                f"The {type(self).__name__} score needs the model: call "
                "score.bind(model) first, or use it through "
                "lth_keras.LotteryPruner(method=...) or "
                "lth_keras.saliency.prune_at_init(model, ...), which bind it."
            )
        return self.model

    def scores(self, kernels, masks):
        """Non-negative scores per kernel, arrays shaped like the kernels."""
        raise NotImplementedError

    def prune(self, kernels, masks, targets, structure, rng):
        """New masks after one round.

        Args:
            kernels: `{key: array}`, the kernels as stored.
            masks: `{key: bool array}`, the current masks.
            targets: A `PruneTargets`.
            structure: A `Structure` that selects the lowest scores.
            rng: A `numpy.random.Generator` for random choices.

        Returns:
            A new dict of boolean masks; each a subset of the old one.
        """
        return structure.select(self.scores(kernels, masks), masks, targets)


SCORES = Registry("method", Score)
"""The registered scores by name: `"magnitude"`, `"random"` (and, from `lth_keras.saliency`,
`"snip"`, `"grasp"`, `"synflow"`)."""


@SCORES.register("magnitude")
class Magnitude(Score):
    """Keeps the weights of largest magnitude (Frankle & Carbin, 2019).

    Example:

    ```python
    lth_keras.LotteryPruner(method=lth_keras.pruning.Magnitude())
    ```
    """

    def scores(self, kernels, masks):
        return {key: np.abs(np.asarray(value)) for key, value in kernels.items()}


@SCORES.register("random")
class Random(Score):
    """Prunes as many weights per kernel as magnitude pruning, at random.

    The random-pruning control: the per-kernel counts are those of
    `Magnitude` under the same targets and structure; the positions are
    drawn uniformly among each kernel's unpruned entries. With a structure
    that removes groups (`units`, blocks, `N:M`), every weight instead gets
    an independent uniform random score and the structure selects: the
    layerwise counts are those of `Magnitude`, the groups random (with
    `scope="global"` the pooled count is matched, its split across kernels
    is random). (The experiment
    runner's `"random"` arm is another control: a random mask with the
    ticket's per-layer sparsity, drawn once, not round by round.)

    Example:

    ```python
    lth_keras.LotteryPruner(method="random", seed=0)
    ```
    """

    def prune(self, kernels, masks, targets, structure, rng):
        if structure.random_by_scores:
            scores = {key: rng.random(np.shape(value)) for key, value in kernels.items()}
            return structure.select(scores, masks, targets)
        magnitude = Magnitude().prune(kernels, masks, targets, structure, rng)
        return random_prune(masks, pruned_counts(masks, magnitude), rng)


def get_score(identifier):
    """A `Score` from a name (`"magnitude"`, `"random"`), an instance or a config.

    Raises:
        ValueError: For an unknown name or type.

    Example:

    ```python
    get_score("magnitude")  # Magnitude()
    ```
    """
    return SCORES.get(identifier, "method")
