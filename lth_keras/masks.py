"""Model-level access to masks: read, write and summarise them by name.

Masks of a model are keyed `"<layer name>/<kernel attribute>"`, for example
`"dense/kernel"` or `"sep/depthwise_kernel"`, in model order.
"""

import keras
from keras import ops

from lth_keras import _compat, pruning
from lth_keras.layers import MaskedLayerMixin

__all__ = [
    "apply_masks",
    "get_kernels",
    "get_masks",
    "mask_key",
    "masked_layers",
    "prunable_entries",
    "set_masks",
    "weights_by_key",
    "weights_remaining",
]


def masked_layers(model):
    """The masked layers of a model, nested models included, in model order.

    Args:
        model: A Keras model or layer.

    Returns:
        A list of layers that are `MaskedLayerMixin` instances (each once).

    Raises:
        ValueError: If two masked layers share a name, since masks are keyed
            by layer name.

    Example:

    ```python
    model = lth_keras.prunable(keras.Sequential([keras.Input((4,)),
                                                 keras.layers.Dense(2)]))
    [layer.name for layer in lth_keras.masked_layers(model)]
    ```
    """
    found, seen, names = [], set(), set()
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, MaskedLayerMixin) and id(layer) not in seen:
            if layer.name in names:
                raise ValueError(
                    "Masks are keyed by layer name, but two masked layers are "
                    f"named {layer.name!r}. Give every masked layer a unique "
                    "`name`."
                )
            seen.add(id(layer))
            names.add(layer.name)
            found.append(layer)
    return found


def _model_layers(model):
    """The layers of a model and of the models nested in it, models excluded."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _model_layers(layer)
        else:
            yield layer


def weights_by_key(model):
    """Every weight of a model under a key that is stable across clones and loads.

    The key is the weight's path from the layer of the model that holds it:
    `"fc1/kernel"`, `"fc1/kernel_mask"`, `"mha/query/kernel"` (the query
    projection inside a MultiHeadAttention layer named `mha`). Names of
    models, nested ones included, are left out: Keras puts them in
    `variable.path` for a model built in process but not for the same model
    loaded from a file.

    Args:
        model: A built Keras model.

    Returns:
        A dict from key to variable.

    Raises:
        ValueError: If two weights get the same key (layers of nested models
            with the same name).

    Example:

    ```python
    list(lth_keras.masks.weights_by_key(model))  # ['fc1/kernel', 'fc1/bias', ...]
    ```
    """
    weights = {}
    for layer in _model_layers(model):
        for variable in layer.weights:
            parts = variable.path.split("/")
            scopes = parts[:-1]  # the last part is the variable's own name
            if layer.name in scopes:
                key = "/".join(parts[len(scopes) - 1 - scopes[::-1].index(layer.name) :])
            else:
                key = f"{layer.name}/{variable.name}"
            if key in weights and weights[key] is not variable:
                raise ValueError(
                    f"Two weights of the model are both keyed {key!r}; give every layer a "
                    "unique `name`."
                )
            weights[key] = variable
    return weights


def mask_key(layer, weight):
    """The key of a masked kernel in model-level dicts: `"<layer name>/<attr>"`.

    Args:
        layer: A masked layer.
        weight: One of its `LotteryWeight`s (or an attribute name).

    Returns:
        A string such as `"fc1/kernel"`.

    Example:

    ```python
    mask_key(layer, layer.get_prunable_weights()[0])  # 'fc1/kernel'
    ```
    """
    return f"{layer.name}/{getattr(weight, 'name', weight)}"


def prunable_entries(model):
    """Every masked kernel of a model as `(key, layer, LotteryWeight)`, in model order.

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
    entries = []
    for layer in masked_layers(model):
        if not layer.built:
            raise ValueError(
                f"Layer {layer.name!r} is not built, so it has no masks yet. "
                "Build the model (e.g. with keras.Input) first."
            )
        for weight in layer.get_prunable_weights():
            entries.append((mask_key(layer, weight), layer, weight))
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
