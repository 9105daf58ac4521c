"""Model-level access to masks: read, write and summarise them by key.

Every layer of a model has a *path*: the names of the layers leading to it
from the model, nested layers included and names of models left out
(`"fc1"`, `"transformer_layer_0/self_attention_layer/query"`,
`"lstm/lstm_cell"`). A weight's key is its layer's path and its name
(`"fc1/kernel"`, `"lstm/lstm_cell/recurrent_kernel"`); masks are keyed by
the key of the weight they mask, in model order.
"""

import keras
from keras import ops

from lth_keras import _compat, pruning
from lth_keras.layers import MaskedLayerMixin

__all__ = [
    "apply_masks",
    "apply_masks_stateless",
    "get_kernels",
    "get_masks",
    "masked_layers",
    "model_layers",
    "prunable_entries",
    "set_masks",
    "weights_by_key",
    "weights_remaining",
]


def model_layers(model):
    """Every layer of a model with its path, nested layers and models included, each once.

    Models (the model itself and those nested in it) are walked through but
    not listed, and their names are not part of paths: Keras gives a model
    built in process and the same model loaded from a file different names.
    Only where two layers in different nested models would get the same path
    (KerasHub's CLIP: an `embedding` in each encoder) do the names of the
    models they sit in prefix their paths (`"vision_encoder/embedding"`).

    Args:
        model: A Keras model or layer.

    Returns:
        A list of `(path, layer)` in model order (depth first).

    Raises:
        ValueError: If two layers get the same path even with the names of
            the models they sit in (give them unique names).

    Example:

    ```python
    [path for path, _ in lth_keras.masks.model_layers(model)]  # ['fc1', 'fc2', 'out']
    ```
    """
    found, seen = [], set()  # (path without model names, with them, layer, parent index)

    def walk(layer, prefix, full, parent):
        for child in _compat.flatten_layers(layer, include_self=False, recursive=False):
            if id(child) in seen:
                continue
            seen.add(id(child))
            if isinstance(child, keras.Model):
                walk(child, prefix, f"{full}{child.name}/", parent)
                continue
            found.append((f"{prefix}{child.name}", f"{full}{child.name}", child, parent))
            walk(child, f"{prefix}{child.name}/", f"{full}{child.name}/", len(found) - 1)

    if isinstance(model, keras.Model):
        walk(model, "", "", None)
    else:
        found.append((model.name, model.name, model, None))
        seen.add(id(model))
        walk(model, f"{model.name}/", f"{model.name}/", 0)
    counts = {}
    for path, *_ in found:
        counts[path] = counts.get(path, 0) + 1
    # A layer whose path is taken twice, and every layer inside it, is named with its models.
    with_models = []
    for path, _, _, parent in found:
        with_models.append(counts[path] > 1 or (parent is not None and with_models[parent]))
    paths, result = {}, []
    for (path, full, layer, _), use_full in zip(found, with_models, strict=True):
        path = full if use_full else path
        if path in paths:
            raise ValueError(
                f"Two layers of the model have the path {path!r} (a "
                f"{type(paths[path]).__name__} and a {type(layer).__name__}); masks and "
                "weights are keyed by path. Give every layer a unique `name`."
            )
        paths[path] = layer
        result.append((path, layer))
    return result


def masked_layers(model):
    """The masked layers of a model, nested ones included, in model order.

    Args:
        model: A Keras model or layer.

    Returns:
        A list of layers that are `MaskedLayerMixin` instances (each once).

    Raises:
        ValueError: If two layers get the same path (see `model_layers`).

    Example:

    ```python
    model = lth_keras.prunable(keras.Sequential([keras.Input((4,)),
                                                 keras.layers.Dense(2)]))
    [layer.name for layer in lth_keras.masked_layers(model)]
    ```
    """
    return [layer for _, layer in model_layers(model) if isinstance(layer, MaskedLayerMixin)]


def weights_by_key(model):
    """Every weight of a model under its key (its layer's path and its name).

    Keys are stable across clones, loads and processes: `"fc1/kernel"`,
    `"fc1/kernel_mask"`, `"mha/query/kernel"` (the query projection inside a
    MultiHeadAttention layer named `mha`).

    Args:
        model: A built Keras model.

    Returns:
        A dict from key to variable, in model order.

    Raises:
        ValueError: If two weights get the same key.

    Example:

    ```python
    list(lth_keras.masks.weights_by_key(model))  # ['fc1/kernel', 'fc1/bias', ...]
    ```
    """
    weights, owned = {}, set()
    for path, layer in model_layers(model):
        for variable in _compat.own_variables(layer):
            if id(variable) in owned:
                continue
            owned.add(id(variable))
            key = f"{path}/{variable.name}"
            if key in weights:
                raise ValueError(
                    f"Two weights of the model are both keyed {key!r}; give every weight of "
                    "a layer a unique name."
                )
            weights[key] = variable
    return weights


def prunable_entries(model):
    """Every masked weight of a model as `(key, layer, LotteryWeight)`, in model order.

    Args:
        model: A built Keras model containing masked layers.

    Returns:
        A list of triples, keyed as `get_masks`.

    Raises:
        ValueError: If a masked layer is not built.

    Example:

    ```python
    for key, layer, weight in lth_keras.masks.prunable_entries(model):
        print(key, weight.variable.shape)
    ```
    """
    entries, seen = [], set()
    for path, layer in model_layers(model):
        if not isinstance(layer, MaskedLayerMixin):
            continue
        if not layer.built:
            raise ValueError(
                f"Layer {path!r} is not built, so it has no masks yet. "
                "Build the model (e.g. with keras.Input) first."
            )
        for weight in layer.get_prunable_weights():
            if id(weight.variable) not in seen:  # a tied weight counts once
                seen.add(id(weight.variable))
                entries.append((f"{path}/{weight.name}", layer, weight))
    return entries


def get_masks(model):
    """Returns every mask of a model as a boolean NumPy array.

    Args:
        model: A built Keras model containing masked layers.

    Returns:
        A dict from `"<layer>/<kernel attribute>"` to a boolean array.

    Raises:
        ValueError: If a masked layer is not built.

    Example:

    ```python
    masks = lth_keras.get_masks(model)
    {key: float(m.mean()) for key, m in masks.items()}
    ```
    """
    return {
        key: ops.convert_to_numpy(weight.mask) != 0 for key, _, weight in prunable_entries(model)
    }


def get_kernels(model):
    """Returns the stored prunable kernels of a model as NumPy arrays.

    Args:
        model: A built Keras model containing masked layers.

    Returns:
        A dict keyed like `get_masks`.

    Example:

    ```python
    kernels = lth_keras.masks.get_kernels(model)
    ```
    """
    return {
        key: ops.convert_to_numpy(weight.variable) for key, _, weight in prunable_entries(model)
    }


def apply_masks(model):
    """Zeroes the stored kernels of every masked layer where its mask is 0.

    For weights written behind the masks' back (`assign`, an optimizer's
    EMA, a kernel constraint); `set_masks`, `set_weights` and loading do it
    by themselves.

    Args:
        model: A Keras model containing masked layers.

    Example:

    ```python
    for variable, value in zip(model.trainable_variables, averaged_values):
        variable.assign(value)  # e.g. weights averaged over checkpoints
    lth_keras.apply_masks(model)
    ```
    """
    for layer in masked_layers(model):
        layer.apply_masks()


def apply_masks_stateless(model, trainable_values, non_trainable_values):
    """`apply_masks` for a training loop that holds the model's state as values (JAX).

    In a stateless loop (`model.stateless_call`, `optimizer.stateless_apply`)
    the variables are not written, so `apply_masks` cannot run; this returns
    the trainable values with every masked weight zeroed where its mask, read
    from the non-trainable values, is False. Call it after the optimizer's
    update, inside the same compiled step: pruned weights are then exactly
    zero whatever the optimizer does (optimizers whose update of a weight
    depends only on that weight's gradient keep them zero anyway).

    Args:
        model: The model whose `trainable_variables` and
            `non_trainable_variables` the values stand for, in that order.
        trainable_values: Values of `model.trainable_variables`.
        non_trainable_values: Values of `model.non_trainable_variables`.

    Returns:
        A list of values for `model.trainable_variables`.

    Example:

    ```python
    trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
    trainable = lth_keras.masks.apply_masks_stateless(model, trainable, non_trainable)
    ```
    """
    from lth_keras.layers import kept

    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    mask_position = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    values = list(trainable_values)
    for _, _, weight in prunable_entries(model):
        i, j = position.get(id(weight.variable)), mask_position.get(id(weight.mask))
        if i is not None and j is not None:
            values[i] = kept(non_trainable_values[j], values[i])
    return values


def set_masks(model, masks):
    """Sets masks by key and zeroes the stored kernels where masks are 0.

    Every key and shape is checked before anything is written, so a bad
    argument leaves the model unchanged.

    Outside `LotteryPruner` (which resets the optimizer whenever masks
    change), reset the optimizer's state too before training on (e.g. with
    `lth_keras.rewind.OptimizerReset`): momentum or Adam moments kept from
    before would still move newly pruned weights, which the layers' forward
    pass reads as they are stored.

    Args:
        model: A built Keras model containing masked layers.
        masks: Dict from `"<layer>/<kernel attribute>"` (see `get_masks`) to
            an array of 0/1 or booleans. Keys not given keep their mask.

    Raises:
        KeyError: If a key names no masked kernel of the model.
        ValueError: If a shape differs or a value is not 0 or 1.

    Example:

    ```python
    masks = lth_keras.get_masks(model)
    masks["dense/kernel"][0, 0] = False
    lth_keras.set_masks(model, masks)
    ```
    """
    entries = {key: (layer, weight.name) for key, layer, weight in prunable_entries(model)}
    unknown = [key for key in masks if key not in entries]
    if unknown:
        raise KeyError(
            f"Received mask keys that name no masked kernel: {unknown}. Known keys: {list(entries)}"
        )
    per_layer = {}
    for key, value in masks.items():
        layer, attr = entries[key]
        per_layer.setdefault(id(layer), (layer, {}))[1][attr] = value
    checked = [(layer, layer.check_masks(m)) for layer, m in per_layer.values()]
    for layer, layer_masks in checked:
        layer.assign_checked_masks(layer_masks)


def weights_remaining(model):
    """Fraction of prunable weights still unpruned, overall and per kernel.

    Only the kernels of masked layers count (biases are never pruned); a
    layer excluded from pruning counts as fully remaining.

    Args:
        model: A built Keras model containing masked layers.

    Returns:
        A tuple `(total, per_kernel)` as in
        `lth_keras.pruning.fraction_remaining`.

    Example:

    ```python
    total, per_kernel = lth_keras.weights_remaining(model)
    ```
    """
    return pruning.fraction_remaining(get_masks(model))
