"""Masks on any Keras model, in place: `prunable(model)` and `strip_masks(model)`.

`prunable` walks every layer of a built model (Sequential, functional,
subclassed, nested models, layers holding layers such as KerasHub's
transformer blocks and `MultiHeadAttention`) and attaches masks to the
weights `lth_keras.layers.rules` selects, as `Model.quantize` changes
layers in place. `strip_masks` gives the model back without masks, in the
model's own classes.
"""

import collections
import contextlib
import warnings

import keras

from lth_keras import _compat
from lth_keras.layers import attach, detach, keras_class_of, rules
from lth_keras.layers.base import CONFIG_KEY, MaskedLayerMixin, kept
from lth_keras.masks import masked_layers, model_layers, weights_by_key

__all__ = ["attach_by_keys", "prunable", "strip_masks"]


def _check_model(model, function):
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            f"{function}() takes a Keras model. Received: a value of type {type(model).__name__}."
        )
    layers = model_layers(model)
    unbuilt = [path for path, layer in layers if not layer.built]
    if not model.built or len(unbuilt) == len(layers) > 0:
        raise ValueError(
            f"{function}() needs a built model: its weights must exist. Received: a model "
            f"with unbuilt layers {unbuilt[:5] or [model.name]}. Build it first (call it on "
            "a batch, start it from keras.Input, or call model.build(input_shape))."
        )
    return unbuilt


def prunable(model, filters=None, *, unknown=False, positional=False):
    """Attaches masks to the weights of a built model, in place, and returns it.

    Every layer is visited, nested ones included. The weights masked by
    default are the kernels of Dense, EinsumDense and every convolution,
    Embedding matrices (ReversibleEmbedding included; a tied output
    embedding is the same variable, masked once) and the kernels and
    recurrent kernels of LSTM, GRU, SimpleRNN and ConvLSTM cells; see
    `lth_keras.layers.rules`. Each masked layer keeps its identity, name,
    variables and values; its class becomes its masked twin (a subclass),
    and each masked weight gets a boolean mask (all True) and a copy of its
    current value as its initial weight, as does the layer's bias. Reads of
    a masked weight inside the layer give `where(mask, weight, 0)`, so
    pruned weights are exactly zero in every forward pass and get zero
    gradient, whatever trains the model.

    A trainable weight of rank 2 or more of a layer lth_keras does not know
    is never silently left dense: `prunable` warns, naming each, unless
    `unknown=True` masks them. `lth_keras.summary(model)` lists every
    weight with the decision and its reason. Layers already masked are
    kept as they are. Compiled train, test and predict functions are
    dropped, so the next `fit` traces the masked model.

    Args:
        model: A built Keras model (or layer).
        filters: Which layers to mask, as in `Model.quantize`: a regex
            searched in each layer's path (`"fc1"`,
            `"transformer_layer_0/self_attention_layer/query"`), a list of
            regexes (any may match), or a callable taking a layer and
            returning a bool. Defaults to `None`: every layer.
        unknown: Whether to mask the trainable rank>=2 weights of layers
            lth_keras does not know. Defaults to `False` (warned about).
        positional: Whether to mask positional tables. Defaults to `False`.

    Returns:
        `model`, now holding masks.

    Raises:
        ValueError: If the model is not built, `filters` is invalid, or
            nothing can be masked. Nothing is changed then.

    Example:

    ```python
    model = keras.Sequential([keras.Input((784,)),
                              keras.layers.Dense(300, activation="relu"),
                              keras.layers.Dense(10)])
    lth_keras.prunable(model)
    type(model.layers[0]).__qualname__  # 'MaskedDense': the same layer, with masks
    ```
    """
    rules.check_filters(filters)
    unbuilt = _check_model(model, "prunable")
    if unbuilt:
        # A built model whose calls never used these layers (KerasHub's
        # EfficientNet keeps squeeze-and-excite layers of ratio 0): no weights.
        warnings.warn(
            f"prunable() found {len(unbuilt)} layer(s) the model's calls never built, so "
            f"they have no weights and get no masks: {unbuilt[:10]}. If a later call builds "
            "them, call prunable(model) again.",
            stacklevel=2,
        )
    layers = model_layers(model)
    decisions = rules.plan(layers, filters, unknown, positional)
    chosen = collections.defaultdict(list)
    for decision in decisions:
        if decision.rule is not None:
            chosen[id(decision.layer)].append(decision)
    if not chosen:
        kinds = sorted({type(layer).__name__ for _, layer in layers})
        raise ValueError(
            "prunable() found no weight to mask. It masks Dense, EinsumDense, convolution, "
            "Embedding and recurrent-cell kernels (and, with unknown=True, any trainable "
            f"weight of rank >= 2); filters={filters!r}. Received layers of types: {kinds}"
        )
    strategy = getattr(model, "_distribute_strategy", None)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        for group in chosen.values():
            attach(group[0].layer, [d.rule for d in group])
    _compat.reset_compiled_functions(model)
    unknown_weights = [d for d in decisions if d.unknown]
    if unknown_weights:
        names = ", ".join(
            f"{d.path}/{d.variable.name} {tuple(d.variable.shape)} of {type(d.layer).__name__}"
            for d in unknown_weights
        )
        warnings.warn(
            f"prunable() left {len(unknown_weights)} trainable weight(s) of layers it does not "
            f"know unmasked: {names}. Pass unknown=True to mask them too; "
            "lth_keras.summary(model) lists every weight.",
            stacklevel=2,
        )
    return model


def attach_by_keys(model, keys):
    """Attaches masks to exactly the weights `keys` name, in place (for loading).

    A model rebuilt from its config (a ticket's, a `.keras` file's) has
    masked twins where the config named them, but layers its constructor or
    its layers' `build()` create are plain; this masks the weights a record
    lists, whatever the default rules say.

    Args:
        model: A built model.
        keys: Weight keys (`"transformer_layer_0/self_attention_layer/query/kernel"`).

    Raises:
        ValueError: If a key names no weight the model can mask.
    """
    keys = set(keys)
    decisions = rules.plan(model_layers(model), unknown=True, positional=True)
    by_key = {f"{d.path}/{d.rule.attr}": d for d in decisions if d.rule is not None}
    unknown = sorted(keys - set(by_key))
    if unknown:
        raise ValueError(
            f"The record names weights this model does not have: {unknown[:5]}. Received: "
            "a file of another architecture."
        )
    chosen = collections.defaultdict(list)
    for key in keys:
        if by_key[key].reason != "masked" or not isinstance(by_key[key].layer, MaskedLayerMixin):
            chosen[id(by_key[key].layer)].append(by_key[key])
    for group in chosen.values():
        attach(group[0].layer, [d.rule for d in group])
    if chosen:
        _compat.reset_compiled_functions(model)


def strip_masks(model, in_place=False):
    """The model without masks, in its own layer classes, holding its effective weights.

    Masked weights become `where(mask, weight, 0)`; masks and initial
    weights are dropped and every masked layer is of its plain class again,
    so the result can be saved, exported, quantized or given LoRA like any
    Keras model.

    Args:
        model: A model with masked layers.
        in_place: Whether to strip `model` itself. Defaults to `False`: a
            copy is returned (built from the model's config, as
            `keras.models.clone_model` does) and `model` keeps its masks.

    Returns:
        The plain model.

    Raises:
        ValueError: If the model has no masked layers, or (with
            `in_place=False`) cannot be copied from its config; then use
            `in_place=True`.

    Example:

    ```python
    plain = lth_keras.strip_masks(model)
    plain.save("ticket_plain.keras")
    ```
    """
    if not masked_layers(model):
        raise ValueError(
            "strip_masks() found no masked layers in the model; it is already a "
            "plain Keras model. Received: a model with no lth_keras layers."
        )
    if in_place:
        for layer in masked_layers(model):
            detach(layer)
        _compat.reset_compiled_functions(model)
        return model
    try:
        copy = _copy_model(model)
    except Exception as error:  # a config Keras cannot rebuild the model from
        cause = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ValueError(
            f"strip_masks() could not copy the model from its config ({type(error).__name__}: "
            f"{cause}). Use strip_masks(model, in_place=True) to strip the model itself."
        ) from error
    for layer in masked_layers(copy):
        detach(layer)
    source = _effective_weights(model)
    target = weights_by_key(copy)
    if set(source) == set(target):
        pairs = [(variable, source[key]) for key, variable in target.items()]
    else:
        # A model rebuilt from its config names unnamed layers anew (dense_3
        # for dense): both walks visit the layers in the same order.
        pairs = list(zip(target.values(), source.values(), strict=False))
        if len(source) != len(target) or any(
            tuple(v.shape) != tuple(value.shape) for v, value in pairs
        ):
            raise ValueError(
                "strip_masks() could not match the weights of the model and of its copy. "
                f"Missing in the copy: {sorted(set(source) - set(target))[:5]}; extra: "
                f"{sorted(set(target) - set(source))[:5]}. Use strip_masks(model, "
                "in_place=True)."
            )
    for variable, value in pairs:
        variable.assign(keras.ops.copy(value))
    return copy


def _copy_model(model):
    """A copy of `model` built from its config, in its plain classes, weights not copied.

    Sequential and functional models are cloned layer by layer (masked twins
    as their plain class; a `Lambda` layer, whose config holds Python code
    that Keras' safe mode refuses to rebuild, is shared, as it holds no
    weights); other models (subclassed, KerasHub's) are rebuilt from their
    own config, as `keras.models.clone_model` does.
    """

    def clone_function(layer):
        if isinstance(layer, keras.layers.Lambda):
            return layer
        if isinstance(layer, MaskedLayerMixin):
            config = layer.get_config()
            config.pop(CONFIG_KEY, None)
            return keras_class_of(type(layer)).from_config(config)
        return type(layer).from_config(layer.get_config())

    graph = isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model)
        and isinstance(model, keras.Function)
        and _compat.has_default_config(model)
    )
    if graph:
        return keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    return keras.models.clone_model(model)


def _effective_weights(model):
    """Every weight of `model` except masks and initial copies, masked weights times masks."""
    masks, lth = {}, set()
    for layer in masked_layers(model):
        lth |= rules.lth_variable_ids(layer)
        for weight in layer.get_prunable_weights():
            masks[id(weight.variable)] = weight.mask
    return {
        key: variable if id(variable) not in masks else kept(masks[id(variable)], variable)
        for key, variable in weights_by_key(model).items()
        if id(variable) not in lth
    }
