"""`compact(model)`: a smaller dense model without the dead units and channels.

Structured pruning (`LotteryPruner(structure="units")`), and unstructured
pruning that happens to empty a unit, leave units whose weights are all
pruned. Removing them physically gives a smaller dense Keras model, faster on
every runtime. A unit (a Dense unit, a convolution filter) is *dead* when:

- all its outgoing weights (its rows of the next Dense or Conv kernel) are
  pruned: it is removed;
- all its incoming weights are pruned: it outputs the constant
  `activation(bias)`, which the layers in between (BatchNormalization,
  activations, pooling, dropout, Flatten) map to another constant; that
  constant times its outgoing weights is added to the next layer's bias, and
  the unit is removed. A convolution with `padding="same"` (or `"causal"`)
  sees zero padding at the borders instead, so there a unit is folded only
  when its constant is exactly 0; otherwise it is kept.

"Pruned" means zero in the effective kernel (`kernel * mask`). Removing a
unit can make units of the layer before or after dead in turn; `compact`
repeats until none is left. The model's inputs and the last Dense or Conv
layer's units (the outputs) are never removed, and every layer keeps at
least one unit.
"""

import keras
import numpy as np
from keras import ops

from lth_keras.layers import MaskedLayerMixin, keras_class_of

__all__ = ["compact"]

_L = keras.layers
_WEIGHTED = (_L.Dense, _L.Conv1D, _L.Conv2D, _L.Conv3D)
_POOLING = (
    _L.MaxPooling1D,
    _L.MaxPooling2D,
    _L.MaxPooling3D,
    _L.AveragePooling1D,
    _L.AveragePooling2D,
    _L.AveragePooling3D,
    _L.GlobalMaxPooling1D,
    _L.GlobalMaxPooling2D,
    _L.GlobalMaxPooling3D,
    _L.GlobalAveragePooling1D,
    _L.GlobalAveragePooling2D,
    _L.GlobalAveragePooling3D,
)
_ELEMENTWISE = (_L.Activation, _L.ReLU, _L.LeakyReLU)
_SUPPORTED = (
    "Dense, Conv1D/2D/3D, Flatten, MaxPooling, AveragePooling, GlobalMaxPooling, "
    "GlobalAveragePooling, BatchNormalization, Activation, ReLU, LeakyReLU and Dropout"
)
_NOT_ELEMENTWISE = ("softmax", "log_softmax")


def _refuse(layer, why):
    raise ValueError(
        f"compact() does not support layer {layer.name!r} of type {type(layer).__name__}: {why}. "
        f"It supports Sequential or functional chains (no branches or merges such as Add or "
        f"Concatenate, no nested models) of {_SUPPORTED}, channels_last."
    )


def _check_layer(layer):
    supported = (*_WEIGHTED, *_POOLING, *_ELEMENTWISE, _L.Dropout, _L.Flatten)
    if not isinstance(layer, (*supported, _L.BatchNormalization)):
        _refuse(layer, "unsupported layer type")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        _refuse(layer, f"data_format={layer.data_format!r}")
    if getattr(layer, "groups", 1) != 1:
        _refuse(layer, f"grouped convolution (groups={layer.groups})")
    if isinstance(layer, _L.BatchNormalization):
        if layer.axis not in (-1, len(layer.input.shape) - 1):
            _refuse(layer, f"normalizes axis {layer.axis}, not the last (channels) axis")


def _chain(model):
    """The model's layers, checked to form one chain from input to output."""
    functional = isinstance(model, keras.Model) and isinstance(model, keras.Function)
    if not (isinstance(model, keras.Sequential) or functional):
        raise ValueError(
            "compact() supports Sequential and functional Keras models. Received: a model of "
            f"type {type(model).__name__}."
        )
    if not model.built or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "compact() needs a built model with one input and one output. Build it with "
            "keras.Input first."
        )
    layers = [layer for layer in model.layers if not isinstance(layer, _L.InputLayer)]
    for layer in layers:
        _check_layer(layer)
    previous = model.inputs[0]
    for layer in layers:
        try:
            source = layer.input
        except (AttributeError, ValueError):  # a layer called more than once
            source = None
        if source is not previous:
            _refuse(layer, "its input is not the previous layer's output")
        previous = layer.output
    if model.outputs[0] is not previous:
        raise ValueError("compact() supports chains: the last layer must be the model's output.")
    return layers


def _numpy(value):
    return None if value is None else np.array(ops.convert_to_numpy(value))


def _state(layer):
    """The arrays `compact` edits: effective kernel and bias, or BN statistics."""
    if isinstance(layer, _WEIGHTED):
        if isinstance(layer, MaskedLayerMixin):
            weight = layer.get_prunable_weights()[0]
            kernel = _numpy(weight.variable) * (_numpy(weight.mask) != 0)
        else:
            kernel = _numpy(layer.kernel)
        return {"kernel": kernel, "bias": _numpy(layer.bias)}
    if isinstance(layer, _L.BatchNormalization):
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        return {name: _numpy(getattr(layer, name)) for name in names}
    return {}


def _activation_name(layer):
    return getattr(getattr(layer, "activation", None), "__name__", "")


def _constants(layers, states, a, between, positions):
    """What each unit of `layers[a]` with zero incoming weights feeds the next layer.

    Returns `None` where a layer mixes units (a softmax), else a 1-D array
    over the features the next Dense or Conv layer reads.
    """
    state = states[a]
    if any(_activation_name(layers[i]) in _NOT_ELEMENTWISE for i in (a, *between)):
        return None
    bias = state["bias"] if state["bias"] is not None else np.zeros(state["kernel"].shape[-1])
    values = _numpy(layers[a].activation(ops.convert_to_tensor(bias[None].astype("float32"))))[0]
    for i in between:
        layer, bn = layers[i], states[i]
        if isinstance(layer, _ELEMENTWISE):
            values = _numpy(layer(values[None]))[0]
        elif isinstance(layer, _L.BatchNormalization):
            scale = 1.0 / np.sqrt(bn["moving_variance"] + layer.epsilon)
            values = (values - bn["moving_mean"]) * scale
            values = values * (bn["gamma"] if bn["gamma"] is not None else 1.0)
            values = values + (bn["beta"] if bn["beta"] is not None else 0.0)
        elif isinstance(layer, _L.Flatten):
            values = np.tile(values, positions)
    return values


def _removable(layers, states, a, b, between):
    """Bool per unit of `layers[a]`: dead and removable without changing outputs."""
    kernel_a, kernel_b = states[a]["kernel"], states[b]["kernel"]
    units = kernel_a.shape[-1]
    positions = kernel_b.shape[-2] // units  # > 1 after a Flatten
    channel = np.arange(kernel_b.shape[-2]) % units  # channels_last flattening
    rows = np.abs(kernel_b).reshape(-1, *kernel_b.shape[-2:]).sum(axis=0).sum(axis=-1)
    outgoing_dead = np.bincount(channel, weights=rows, minlength=units) == 0
    incoming_dead = ~kernel_a.reshape(-1, units).any(axis=0)
    values = _constants(layers, states, a, between, positions)
    if values is None:
        return outgoing_dead
    valid = getattr(layers[b], "padding", "valid") == "valid"
    if states[b]["bias"] is None or not valid:
        nonzero = np.bincount(channel, weights=values != 0, minlength=units) > 0
        incoming_dead &= ~nonzero
    return outgoing_dead | incoming_dead


def _remove(layers, states, a, b, between, remove):
    """Removes the units `remove` of `layers[a]`, folding their constants into `layers[b]`."""
    keep = ~remove
    kernel_b = states[b]["kernel"]
    positions = kernel_b.shape[-2] // keep.size
    features = np.tile(keep, positions)
    values = _constants(layers, states, a, between, positions)
    if states[b]["bias"] is not None and values is not None:
        summed = kernel_b.reshape(-1, *kernel_b.shape[-2:]).sum(axis=0)
        gone = ~features & (values != 0)
        states[b]["bias"] = states[b]["bias"] + values[gone] @ summed[gone]
    states[a]["kernel"] = states[a]["kernel"][..., keep]
    if states[a]["bias"] is not None:
        states[a]["bias"] = states[a]["bias"][keep]
    for i in between:
        for name, value in states[i].items():
            if isinstance(value, np.ndarray):
                states[i][name] = value[keep if value.size == keep.size else features]
    states[b]["kernel"] = kernel_b[..., features, :]


def _shrink(layers, states):
    """Removes dead units until none is left, editing `states`."""
    weighted = [i for i, layer in enumerate(layers) if isinstance(layer, _WEIGHTED)]
    pairs = [(a, b, range(a + 1, b)) for a, b in zip(weighted, weighted[1:], strict=False)]
    changed = True
    while changed:
        changed = False
        for a, b, between in pairs:
            remove = _removable(layers, states, a, b, between)
            if remove.all():
                remove[0] = False  # a layer keeps at least one unit
            if remove.any():
                _remove(layers, states, a, b, between, remove)
                changed = True


def _rebuild(model, layers, states):
    """A plain Keras model of the chain, with the shrunk widths and weights."""
    fresh = []
    for layer, state in zip(layers, states, strict=True):
        cls = keras_class_of(type(layer)) if isinstance(layer, MaskedLayerMixin) else type(layer)
        config = layer.get_config()
        if isinstance(layer, _WEIGHTED):
            width = "units" if isinstance(layer, _L.Dense) else "filters"
            config[width] = state["kernel"].shape[-1]
        fresh.append(cls.from_config(config))
    source = model.inputs[0]
    inputs = keras.Input(batch_shape=source.shape, dtype=source.dtype)
    if isinstance(model, keras.Sequential):
        result = keras.Sequential([inputs, *fresh], name=model.name)
    else:
        outputs = inputs
        for layer in fresh:
            outputs = layer(outputs)
        result = keras.Model(inputs, outputs, name=model.name)
    for layer, state in zip(fresh, states, strict=True):
        values = [value for value in state.values() if value is not None]
        if values:
            layer.set_weights(values)
    return result


def compact(model):
    """Returns a smaller plain Keras model without the dead units and channels.

    See the module docstring for which units are dead and how the constant
    output of a unit with no incoming weights is folded into the next
    layer's bias. Predictions equal the input model's up to float rounding;
    the result holds no lth_keras classes (masked layers become their Keras
    parents, with the effective kernels) and is not compiled.

    Args:
        model: A built Sequential or functional chain of Dense, Conv1D/2D/3D
            (masked or plain), Flatten, pooling, BatchNormalization,
            Activation, ReLU, LeakyReLU and Dropout layers, channels_last.

    Returns:
        A new Keras model of the same type (Sequential or functional).

    Raises:
        ValueError: For a subclassed or unbuilt model, a branch or merge,
            an unsupported layer type, a grouped convolution or
            channels_first data.

    Example:

    ```python
    pruner = lth_keras.LotteryPruner(rate=0.2, structure="units")
    ...  # rounds of model.fit(..., callbacks=[pruner])
    small = lth_keras.compact(model)
    small.layers[0].units  # fewer than model.layers[0].units
    ```
    """
    layers = _chain(model)
    states = [_state(layer) for layer in layers]
    _shrink(layers, states)
    return _rebuild(model, layers, states)
