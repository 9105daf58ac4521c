"""tfmot's pruning policies: which layers `prune_low_magnitude` masks.

A policy is `prunable`'s `filters=` callable (`allow_pruning`) and a check
run before any mask is attached (`ensure_model_supports_pruning`).
"""

import abc

import keras

__all__ = ["PruneForLatencyOnXNNPack", "PruningPolicy"]


class PruningPolicy(abc.ABC):
    """Which layers to prune, and a check of the model first (tfmot's).

    `prune_low_magnitude(model, pruning_policy=policy)` calls
    `policy.ensure_model_supports_pruning(model)`, then masks only the
    layers for which `policy.allow_pruning(layer)` is true (it is
    `lth_keras.prunable`'s `filters=`).

    Example:

    ```python
    class DenseOnly(lth_keras.tfmot.PruningPolicy):
        def allow_pruning(self, layer):
            return isinstance(layer, keras.layers.Dense)

        def ensure_model_supports_pruning(self, model):
            pass

    lth_keras.tfmot.prune_low_magnitude(model, pruning_policy=DenseOnly())
    ```
    """

    @abc.abstractmethod
    def allow_pruning(self, layer):
        """Whether `layer` gets masks."""

    @abc.abstractmethod
    def ensure_model_supports_pruning(self, model):
        """Raises `ValueError` if the policy cannot prune `model`."""


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prunes only the 1x1 `Conv2D` layers, where XNNPack's sparse kernels run (tfmot's).

    `allow_pruning` is tfmot's: a `Conv2D` (not depthwise) with kernel size
    1x1. `ensure_model_supports_pruning` checks what tfmot checks first: a
    built Sequential or functional model starting with a `ZeroPadding2D`
    of 1 followed by a 3x3 `Conv2D` over 3 channels with stride 2 and
    `"valid"` padding, and holding a `GlobalAveragePooling2D` with
    `keepdims=True`. It does not walk tfmot's table of the layers XNNPack
    supports between the two; the TFLite converter and XNNPack decide that.

    Example:

    ```python
    lth_keras.tfmot.prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())
    ```
    """

    def allow_pruning(self, layer):
        """True for a `Conv2D` with a 1x1 kernel."""
        conv = isinstance(layer, keras.layers.Conv2D) and not isinstance(
            layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
        )
        return conv and _pair(layer.kernel_size) == (1, 1)

    def ensure_model_supports_pruning(self, model):
        """Raises `ValueError` unless the model has the start and end of XNNPack's sparse path."""
        graph = isinstance(model, keras.Sequential) or (
            isinstance(model, keras.Model) and isinstance(model, keras.Function)
        )
        if not graph or not model.built:
            raise ValueError(
                "PruneForLatencyOnXNNPack checks built Sequential or functional models. "
                f"Received: a {type(model).__name__} (built: {model.built})"
            )
        layers = model.layers
        start = any(
            isinstance(before, keras.layers.ZeroPadding2D)
            and _pair(before.padding) == ((1, 1), (1, 1))
            and isinstance(layer, keras.layers.Conv2D)
            and tuple(layer.kernel.shape[:3]) == (3, 3, 3)
            and _pair(layer.strides) == (2, 2)
            and layer.padding.lower() == "valid"
            for before, layer in zip(layers, layers[1:], strict=False)
        )
        if not start:
            raise ValueError(
                "Could not find a `ZeroPadding2D(1)` followed by a `Conv2D` 3x3 over 3 "
                "channels with stride 2 and 'valid' padding, where XNNPack's sparse "
                f"inference starts. Received: layers {[type(x).__name__ for x in layers]}"
            )
        if not any(
            isinstance(layer, keras.layers.GlobalAveragePooling2D) and layer.keepdims
            for layer in layers
        ):
            raise ValueError(
                "Could not find a `GlobalAveragePooling2D(keepdims=True)`, where XNNPack's "
                f"sparse inference ends. Received: layers {[type(x).__name__ for x in layers]}"
            )
