"""`Targets`: what to prune. Which weights, how much of each, by what score, in what structure.

One object answers "what" for everything that prunes: `LotteryPruner` (each
round), `lth_keras.saliency.prune_at_init` (once) and the experiment arms.
When to prune and how to reset live elsewhere (the pruner's schedule, the
`lth_keras.callbacks.Reset` policies).
"""

import numpy as np

from lth_keras import masks as masks_lib
from lth_keras import pruning
from lth_keras.options import SCOPES, check_choice

__all__ = ["Targets"]


def _type_names(layer):
    """The class names a layer answers to: `"Dense"`, and its twin's `"MaskedDense"`."""
    names = []
    for cls in type(layer).__mro__:
        for name in (cls.__qualname__, cls.__name__):
            if name not in names:
                names.append(name)
    return tuple(names)


class Targets:
    """What to prune: the rates per kernel, the score and the structure.

    Weights are the masked kernels of a model, keyed as `lth_keras.get_masks`
    (`"fc1/kernel"`, `"transformer_layer_0/self_attention_layer/query/kernel"`).
    `layer_rates` and `exclude` name kernels by key, by their layer's path
    (`"transformer_layer_0/self_attention_layer/query"`) or name
    (`"query"`: every layer of that name), or by type (`"EinsumDense"`,
    `"Conv2D"`); the *output layer* is the model's last masked layer.

    Pruning removes `prune_count(remaining, rate)` weights per kernel
    (`scope="layerwise"`, the paper's choice for LeNet and Conv-2/4/6) or
    from all kernels pooled (`scope="global"`, its choice for VGG-19 and
    ResNet-20), lowest scores first, ties by index; see `lth_keras.pruning`
    for the count rule.

    Args:
        rate: Fraction of the remaining weights pruned per round, in (0, 1).
            Defaults to `0.2`.
        output_rate: Rate of the output layer's kernels (layerwise only).
            Defaults to `None`, meaning `rate / 2` as in the paper.
        layer_rates: Dict from a kernel key, layer path, layer name or type
            name to its rate in [0, 1) (layerwise only). A key, path or name
            beats `output_rate`, which beats a type. Defaults to `None`.
        exclude: Keys, paths, names or type names never pruned. Defaults to
            `()`.
        scope: `"layerwise"` or `"global"`. Defaults to `"layerwise"`.
        method: The score: `"magnitude"`, `"random"`, `"snip"`, `"grasp"`,
            `"synflow"` or a `lth_keras.pruning.Score` instance (the scores
            on data need one with `data=`). Defaults to `"magnitude"`.
        structure: `"unstructured"`, `"units"`, `"block:1x4"`,
            `"block:1x16"`, `"N:M"` such as `"2:4"`, or a
            `lth_keras.pruning.Structure`. Defaults to `"unstructured"`.

    Raises:
        ValueError: For a value outside its allowed values, or
            `output_rate`/`layer_rates` with `scope="global"`.

    Example:

    ```python
    targets = lth_keras.Targets(rate=0.2, exclude=["token_embedding"], structure="2:4")
    pruner = lth_keras.LotteryPruner(targets=targets)
    ```
    """

    def __init__(
        self,
        rate=0.2,
        *,
        output_rate=None,
        layer_rates=None,
        exclude=(),
        scope="layerwise",
        method="magnitude",
        structure="unstructured",
    ):
        check_choice(scope, "scope", SCOPES)
        pruning.check_rates(rate, output_rate, layer_rates)
        if scope == "global" and (output_rate is not None or layer_rates):
            raise ValueError(
                "`output_rate` and `layer_rates` apply to layerwise pruning; with "
                "scope='global' one rate prunes the pooled weights. Use `exclude` to "
                f"keep layers out of the pool. Received: output_rate={output_rate}, "
                f"layer_rates={layer_rates}"
            )
        self.rate = rate
        self.output_rate = output_rate
        self.layer_rates = dict(layer_rates or {})
        self.exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
        self.scope = scope
        self.method = pruning.get_score(method)
        self.structure = pruning.get_structure(structure)

    def get_config(self):
        """The arguments, JSON-ready (scores with data keep only their config)."""
        return {
            "rate": self.rate,
            "output_rate": self.output_rate,
            "layer_rates": dict(self.layer_rates),
            "exclude": list(self.exclude),
            "scope": self.scope,
            "method": {"name": self.method.name, "config": self.method.get_config()},
            "structure": {"name": self.structure.name, "config": self.structure.get_config()},
        }

    @classmethod
    def from_config(cls, config):
        """The inverse of `get_config`."""
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(repr(self))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"Targets({args})"

    # Resolving against a model ---------------------------------------------

    def resolve(self, model):
        """The rate of every masked kernel of `model`, and the kernels' layouts.

        Args:
            model: A built model with masks.

        Returns:
            A `lth_keras.pruning.PruneTargets`.

        Raises:
            ValueError: If the model has no masks, or a key of `layer_rates`
                or `exclude` matches no masked kernel.

        Example:

        ```python
        lth_keras.Targets(rate=0.2).resolve(model).rates  # {'fc1/kernel': 0.2, ...}
        ```
        """
        entries = masks_lib.prunable_entries(model)
        if not entries:
            raise ValueError(
                "The model has no masked weights. Call lth_keras.prunable(model) first."
            )
        last = entries[-1][1]
        items = []
        for key, layer, weight in entries:
            path = key[: -len(weight.name) - 1]
            items.append(((key, path, layer.name), _type_names(layer), layer is last))
        layerwise = self.scope == "layerwise"
        rates = pruning.resolve_rates(
            items,
            self.rate,
            self.output_rate if layerwise else self.rate,
            self.layer_rates if layerwise else None,
            self.exclude,
        )
        layouts = {}
        for key, layer, weight in entries:
            axes = getattr(layer, "kernel_axes", {}).get(weight.name, (None, None))
            layouts[key] = pruning.KernelLayout(
                *axes, is_output=layer is last, layer_type=type(layer).__name__
            )
        return pruning.PruneTargets(rates, None if layerwise else self.rate, layouts)

    def prune(self, model, rng, kernels=None, masks=None, bind=True, sparsity=None):
        """The masks one round of pruning gives; nothing is written.

        Args:
            model: A built model with masks.
            rng: A `numpy.random.Generator` (random scores, ties).
            kernels: `{key: array}` to score. Defaults to `None`: the model's.
            masks: `{key: bool array}`, the current masks. Defaults to
                `None`: the model's.
            bind: Whether to bind a score that needs the model to `model`.
                Defaults to `True`.
            sparsity: Instead of the rates, a sparsity to reach (a step
                schedule's): each kernel (or, with `scope="global"`, the
                pooled kernels) keeps `keep_count(n, sparsity)` of its `n`
                weights (blocks, with `lth_keras.pruning.Blocks`), tfmot's
                rule, or what it keeps now if that is less.
                Defaults to `None`.

        Returns:
            `{key: bool array}`, each a subset of the current mask.

        Example:

        ```python
        new = targets.prune(model, np.random.default_rng(0))
        lth_keras.set_masks(model, new)
        ```
        """
        if bind and hasattr(self.method, "bind"):
            self.method.bind(model)
        masks = masks_lib.get_masks(model) if masks is None else masks
        kernels = masks_lib.get_kernels(model) if kernels is None else kernels
        resolved = self.resolve(model)
        if sparsity is not None:
            resolved = self._to_sparsity(resolved, masks, sparsity)
        return self.method.prune(kernels, masks, resolved, self.structure, rng)

    def _to_sparsity(self, resolved, masks, sparsity):
        """`resolved` with the rates that reach `sparsity` (tfmot's count rule)."""

        def rate(size, alive):
            keep = min(alive, pruning.keep_count(size, sparsity))
            return (alive - keep) / alive if alive else 0.0

        keys = list(resolved.rates)
        # Counted in what the structure removes: weights, or whole blocks.
        items = {k: self.structure.items(k, masks[k], resolved) for k in keys}
        if self.scope == "global":
            pooled = rate(*(sum(pair) for pair in zip(*items.values(), strict=True)))
            return pruning.PruneTargets(dict.fromkeys(keys, pooled), pooled, resolved.layouts)
        rates = {k: rate(*items[k]) for k in keys}
        return pruning.PruneTargets(rates, None, resolved.layouts)

    def check(self, model):
        """Refuses, before training, targets that cannot prune `model`.

        Keys of `layer_rates` and `exclude` must match a masked kernel, and a
        structure must find the axes it needs in every kernel it prunes.

        Raises:
            ValueError: Naming the key or kernel.

        Example:

        ```python
        lth_keras.Targets(structure="units").check(model)
        ```
        """
        resolved = self.resolve(model)
        if isinstance(self.structure, pruning.Unstructured):
            return
        masks = masks_lib.get_masks(model)
        scores = {key: np.abs(value) for key, value in masks_lib.get_kernels(model).items()}
        self.structure.select(scores, masks, resolved)
