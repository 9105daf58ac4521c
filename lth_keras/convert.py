"""Converting models: `prunable(model)` and `strip_masks(model)`.

Both are built on `keras.models.clone_model(clone_function=...)`, so they work
for Sequential and functional models, nested ones included.
"""

import keras
from keras import ops

from lth_keras import _compat
from lth_keras.layers import (
    MaskedLayerMixin,
    keras_class_of,
    masked_twin_of,
    supported_keras_classes,
)
from lth_keras.layers.base import kept
from lth_keras.masks import masked_layers

__all__ = ["prunable", "strip_masks"]


def _check_graph_model(model, function):
    if isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and isinstance(model, keras.Function)
    ):
        return
    raise ValueError(
        f"{function}() supports Sequential and functional Keras models. Received: "
        f"a model of type {type(model).__name__}. For a subclassed model, build it "
        "from the masked layers in lth_keras.layers (e.g. MaskedDense instead of "
        "Dense) and pass it to LotteryPruner directly."
    )


def _copy_unmasked(layer):
    """A copy of a layer that is not masked, from its config.

    A `Lambda` layer holds no weights and its config holds Python code,
    which Keras' safe mode refuses to rebuild; the copy shares it instead.
    """
    if isinstance(layer, keras.layers.Lambda):
        return layer
    return type(layer).from_config(layer.get_config())


def _clone(model, make_layer):
    """Clones `model` with `make_layer(layer)`; returns it and (old, new) pairs."""
    pairs = []

    def clone_function(layer):
        new = make_layer(layer)
        pairs.append((layer, new))
        return new

    clone = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    return clone, pairs


def _copy_by_name(new, values):
    """Assigns `values[name]` to the weight of `new` with that name."""
    by_name = {w.name: w for w in new.weights}
    for name, value in values.items():
        # A copy: on JAX a variable assigned from another would share its
        # buffer, and training either model would delete the other's weight.
        by_name[name].assign(ops.copy(value))


def _unregistered_subclass(layer):
    """The registered Keras class `layer` subclasses without a twin of its own."""
    if isinstance(layer, MaskedLayerMixin) or masked_twin_of(type(layer)) is not None:
        return None
    return next((c for c in supported_keras_classes() if isinstance(layer, c)), None)


def prunable(model):
    """Returns a copy of `model` with every supported layer replaced by its masked twin.

    Supported layers are those with a registered twin (see
    `lth_keras.layers.register_masked_twin`): Dense, Conv1D/2D/3D and their
    transposes, DepthwiseConv1D/2D, SeparableConv1D/2D and Embedding, plus
    any a user registered, matched by exact type. A subclass of a supported
    layer with no twin of its own is refused rather than silently left
    dense; layers that are already masked are kept. Every weight is copied,
    masks start as all ones, and the copied kernels and biases are recorded
    as the masked layers' initial weights. The copy is not compiled.

    Args:
        model: A Sequential or functional Keras model.

    Returns:
        A new model of the same architecture and weights.

    Raises:
        ValueError: If `model` is subclassed, has no supported layer, or has
            a layer that subclasses a supported Keras layer without a
            registered twin.

    Example:

    ```python
    model = keras.Sequential([keras.Input((784,)),
                              keras.layers.Dense(300, activation="relu"),
                              keras.layers.Dense(10)])
    masked = lth_keras.prunable(model)
    type(masked.layers[0]).__name__  # 'MaskedDense'
    ```
    """
    _check_graph_model(model, "prunable")
    layers = _compat.flatten_layers(model, include_self=False)
    for layer in layers:
        base = _unregistered_subclass(layer)
        if base is not None:
            raise ValueError(
                f"prunable() cannot mask layer {layer.name!r} of type {type(layer).__name__}, "
                f"a subclass of keras.layers.{base.__name__} with no masked twin; it would stay "
                "dense. Register one with lth_keras.layers.register_masked_twin("
                f"{type(layer).__name__}, Masked{type(layer).__name__}) (see its docstring), "
                f"or use keras.layers.{base.__name__} itself."
            )
    supported = [
        layer
        for layer in layers
        if masked_twin_of(type(layer)) is not None or isinstance(layer, MaskedLayerMixin)
    ]
    if not supported:
        kinds = sorted({type(layer).__name__ for layer in layers})
        raise ValueError(
            "prunable() found no layer it can mask. Supported types: "
            f"{sorted(c.__name__ for c in supported_keras_classes())}. Received layers of "
            f"types: {kinds}"
        )

    def make_layer(layer):
        twin = masked_twin_of(type(layer))
        if twin is not None:
            return twin.from_config(layer.get_config())
        return _copy_unmasked(layer)

    clone, pairs = _clone(model, make_layer)
    for old, new in pairs:
        if not old.built:
            continue
        if isinstance(new, MaskedLayerMixin) and not isinstance(old, MaskedLayerMixin):
            _copy_by_name(new, {w.name: w for w in old.weights})
            new.save_initial()
        elif new is not old:
            new.set_weights(old.get_weights())
    return clone


def strip_masks(model):
    """Returns a plain Keras copy of `model` whose kernels are `kernel * mask`.

    Every masked layer becomes its Keras parent class (same config), holding
    the effective (pruned) kernels and the biases; masks and initial weights
    are dropped. The result contains no lth_keras classes, so it can be saved,
    exported or quantized like any Keras model. The copy is not compiled.

    Args:
        model: A Sequential or functional model with masked layers.

    Returns:
        A new model with the same predictions.

    Raises:
        ValueError: If `model` is subclassed or has no masked layers.

    Example:

    ```python
    plain = lth_keras.strip_masks(model)
    plain.save("ticket_plain.keras")
    ```
    """
    _check_graph_model(model, "strip_masks")
    if not masked_layers(model):
        raise ValueError(
            "strip_masks() found no masked layers in the model; it is already a "
            "plain Keras model. Received: a model with no lth_keras layers."
        )

    def make_layer(layer):
        if isinstance(layer, MaskedLayerMixin):
            return keras_class_of(type(layer)).from_config(layer.get_config())
        return _copy_unmasked(layer)

    clone, pairs = _clone(model, make_layer)
    for old, new in pairs:
        if not old.built:
            continue
        if isinstance(old, MaskedLayerMixin):
            _copy_by_name(
                new,
                {
                    w.name: w.variable if w.mask is None else kept(w.mask, w.variable)
                    for w in old.get_lottery_weights()
                },
            )
        elif new is not old:
            new.set_weights(old.get_weights())
    return clone
