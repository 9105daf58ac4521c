"""Converting models: `prunable(model)` and `strip_masks(model)`.

Both are built on `keras.models.clone_model(clone_function=...)`, so they work
for Sequential and functional models, nested ones included.
"""

import keras
from keras import ops

from lth_keras.layers import MASKED_TWINS, MaskedLayerMixin
from lth_keras.masks import masked_layers

__all__ = ["prunable", "strip_masks"]

_KERAS_CLASSES = {masked: plain for plain, masked in MASKED_TWINS.items()}


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
        by_name[name].assign(value)


def prunable(model):
    """Returns a copy of `model` with every supported layer replaced by its masked twin.

    Supported layers are those with a twin in `lth_keras.layers` (Dense,
    Conv1D/2D/3D and their transposes, DepthwiseConv1D/2D,
    SeparableConv1D/2D, Embedding), matched by exact type. Every weight is
    copied, masks start as all ones, and the copied kernels and biases are
    recorded as the masked layers' initial weights. The copy is not
    compiled.

    Args:
        model: A Sequential or functional Keras model.

    Returns:
        A new model of the same architecture and weights.

    Raises:
        ValueError: If `model` is subclassed, or has no supported layer.

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
    supported = [layer for layer in model._flatten_layers() if type(layer) in MASKED_TWINS]
    if not supported:
        kinds = sorted(
            {type(layer).__name__ for layer in model._flatten_layers(include_self=False)}
        )
        raise ValueError(
            "prunable() found no layer it can mask. Supported types: "
            f"{sorted(c.__name__ for c in MASKED_TWINS)}. Received layers of types: {kinds}"
        )

    def make_layer(layer):
        if type(layer) in MASKED_TWINS:
            return MASKED_TWINS[type(layer)].from_config(layer.get_config())
        return _copy_unmasked(layer)

    clone, pairs = _clone(model, make_layer)
    for old, new in pairs:
        if not old.built:
            continue
        if isinstance(new, MaskedLayerMixin):
            _copy_by_name(new, {w.name: w for w in old.weights})
            new.save_initial()
        elif new is not old:
            new.set_weights(old.get_weights())
    return clone


def _keras_class(layer):
    return next(_KERAS_CLASSES[c] for c in type(layer).__mro__ if c in _KERAS_CLASSES)


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
            return _keras_class(layer).from_config(layer.get_config())
        return _copy_unmasked(layer)

    clone, pairs = _clone(model, make_layer)
    for old, new in pairs:
        if not old.built:
            continue
        if isinstance(old, MaskedLayerMixin):
            values = {
                attr: ops.multiply(getattr(old, f"_{attr}"), getattr(old, f"{attr}_mask"))
                for attr in old.prunable_weights
            }
            if getattr(old, "bias", None) is not None:
                values["bias"] = old.bias
            _copy_by_name(new, values)
        elif new is not old:
            new.set_weights(old.get_weights())
    return clone
