"""Masked twins of layer classes, and attaching masks to a layer in place.

The *twin* of a layer class `C` is `Masked<C>` (its `__qualname__`; its
`__name__` stays `C`'s, see `twin_class`), a subclass of `MaskedLayerMixin`
and `C` that hooks the attributes holding `C`'s masked weights (see
`lth_keras.layers.base`). `attach(layer, names)` turns a built
layer into its twin in place (its class, its masks and initial copies);
`detach(layer)` turns it back into a plain `C` holding its effective
weights. Twins of Keras' own layers (`MaskedDense`, `MaskedConv2D`,
`MaskedLSTMCell`, ...) are made when this module is imported, so
`keras.saving.load_model` finds them by name; twins of other classes
(KerasHub's, yours) are made on first use and registered as
`"lth_keras>Masked[<the class's registered name>]"`, which
`lth_keras.load_model` recreates before loading.
"""

import contextlib
import threading

import keras

from lth_keras import _compat
from lth_keras.layers import rules
from lth_keras.layers.base import (
    STORE_KEY,
    MaskedLayerMixin,
    MaskedWeight,
    hooked_weight,
    stored_names,
)
from lth_keras.layers.values import kept, unconstrain

__all__ = [
    "MaskedConv1D",
    "MaskedConv1DTranspose",
    "MaskedConv2D",
    "MaskedConv2DTranspose",
    "MaskedConv3D",
    "MaskedConv3DTranspose",
    "MaskedDense",
    "MaskedDepthwiseConv1D",
    "MaskedDepthwiseConv2D",
    "MaskedEinsumDense",
    "MaskedEmbedding",
    "MaskedGRUCell",
    "MaskedLSTMCell",
    "MaskedSeparableConv1D",
    "MaskedSeparableConv2D",
    "MaskedSimpleRNNCell",
    "attach",
    "detach",
    "keras_class_of",
    "masked_twin_of",
    "register_masked_twin",
    "supported_keras_classes",
    "twin_class",
]

_TWINS = {}  # layer class -> its twin
_BASES = {}  # twin -> the layer class it is the twin of
_PREFIX = "Masked["


def register_masked_twin(keras_class, masked_class):
    """Declares `masked_class` the twin `prunable()` uses for `keras_class`.

    Twins are made for you; register one only to give a class masked
    behaviour of your own (for example a layer written with
    `MaskedLayerMixin` and `masked_weight`).

    Args:
        keras_class: A `keras.layers.Layer` subclass.
        masked_class: A subclass of both `MaskedLayerMixin` and `keras_class`,
            whose `from_config` accepts `keras_class`'s config.

    Returns:
        `masked_class`, so this can decorate it.

    Raises:
        TypeError: If `masked_class` is not a `MaskedLayerMixin` subclass of
            `keras_class`.

    Example:

    ```python
    class MyDense(keras.layers.Dense):
        pass

    @keras.saving.register_keras_serializable(package="my_project")
    class MaskedMyDense(lth_keras.layers.MaskedLayerMixin, MyDense):
        kernel = lth_keras.layers.masked_weight("kernel")

    lth_keras.layers.register_masked_twin(MyDense, MaskedMyDense)
    ```
    """
    if not (
        isinstance(masked_class, type)
        and issubclass(masked_class, MaskedLayerMixin)
        and issubclass(masked_class, keras_class)
    ):
        raise TypeError(
            "Received an invalid `masked_class`, expected a subclass of both "
            f"MaskedLayerMixin and {getattr(keras_class, '__name__', keras_class)}. "
            f"Received: masked_class={masked_class!r}"
        )
    _TWINS[keras_class] = masked_class
    _BASES[masked_class] = keras_class
    return masked_class


def masked_twin_of(keras_class):
    """The twin of a layer class, or `None` if none is made or registered yet.

    Example:

    ```python
    lth_keras.layers.masked_twin_of(keras.layers.Dense)  # MaskedDense
    ```
    """
    return _TWINS.get(keras_class)


def keras_class_of(masked_class):
    """The layer class a twin was made for (for `strip_masks`).

    Args:
        masked_class: A twin, or a subclass of one.

    Returns:
        The layer class.

    Raises:
        ValueError: If no twin is among its bases.

    Example:

    ```python
    lth_keras.layers.keras_class_of(MaskedDense)  # keras.layers.Dense
    ```
    """
    for cls in masked_class.__mro__:
        if cls in _BASES:
            return _BASES[cls]
    raise ValueError(
        f"{masked_class.__name__} is not the masked twin of a layer class; "
        "call lth_keras.layers.register_masked_twin(LayerClass, MaskedClass) first."
    )


def supported_keras_classes():
    """The Keras layer classes whose weights lth_keras masks by default, in table order."""
    return [cls for cls in rules.known_classes() if cls.__module__.startswith("keras.")]


def twin_class(layer_class):
    """The twin of `layer_class`, made (and registered for saving) on first use.

    Args:
        layer_class: A `keras.layers.Layer` subclass (a twin is returned as is).

    Returns:
        The twin class.

    Example:

    ```python
    lth_keras.layers.twin_class(keras.layers.Dense)  # MaskedDense
    ```
    """
    if issubclass(layer_class, MaskedLayerMixin):
        return layer_class
    twin = _TWINS.get(layer_class)
    if twin is not None:
        return twin
    keras_own = layer_class.__module__.startswith("keras.")
    name = f"Masked{layer_class.__name__}"
    registered = name if keras_own else f"{_PREFIX}{keras.saving.get_registered_name(layer_class)}]"
    attrs = {"__module__": __name__, "__qualname__": name, "__doc__": _doc(layer_class)}
    # The twin keeps its class's `__name__`: Keras names the layers of a
    # Sequential or functional model in weight files after their classes, so
    # weights saved with or without masks load into the same model either way.
    attrs.update(_lth_layout=_twin_layout, load_own_variables=_twin_load_own_variables)
    twin = type(layer_class.__name__, (MaskedLayerMixin, layer_class), attrs)
    twin.prunable_attrs = tuple(r.attr for r in rules.class_rules(layer_class))
    twin.weight_attrs = {}
    twin.initializer_attrs = {"bias": "bias_initializer"}
    twin.kernel_axes = {}
    for rule in rules.class_rules(layer_class):
        _hook(twin, rule)
    keras.saving.register_keras_serializable(package="lth_keras", name=registered)(twin)
    return register_masked_twin(layer_class, twin)


def _twin_layout(self):
    """A twin's per-instance weight axes, from the rules (see `MaskedLayerMixin._lth_layout`)."""
    return {r.attr: r.axes for r in rules.layer_rules(self) if r.axes != (None, None)}


def _twin_load_own_variables(self, store):
    """A twin's `load_own_variables`: inside `reconciling()`, the file's masks first."""
    if loading_reconciles():
        names = stored_names(store)
        keys = [key for key in store.keys() if key != STORE_KEY]
        if names is not None:
            reconcile(self, names)
        elif len(keys) == len(self._lth_plain_variables()):
            base = reconcile(self, ())  # saved without masks: the plain layer loads it
            base.load_own_variables(self, store)
            return
    MaskedLayerMixin.load_own_variables(self, store)


def resolve_twin(registered_name, custom_objects=None):
    """The twin a saved config names (`"lth_keras>Masked[...]"`), made if needed; else `None`.

    The layer class is looked up with Keras' own registry (and
    `custom_objects`), never imported from a module the file names.
    """
    prefix = f"lth_keras>{_PREFIX}"
    if not (isinstance(registered_name, str) and registered_name.startswith(prefix)):
        return None
    base_name = registered_name[len(prefix) : -1]
    base = keras.saving.get_registered_object(base_name, custom_objects=custom_objects)
    return None if base is None else twin_class(base)


def _hook(twin, rule):
    """Hooks the attribute holding `rule.attr` on `twin`, and records its layout."""
    written = isinstance(getattr(twin, rule.attr, None), MaskedWeight)
    if not (written and rule.storage == f"_{rule.attr}"):  # masked_weight reads it already
        setattr(twin, rule.storage, hooked_weight(rule.storage, rule.attr))
    twin.weight_attrs = {**twin.weight_attrs, rule.attr: rule.storage}
    if rule.initializer is not None:
        twin.initializer_attrs = {**twin.initializer_attrs, rule.attr: rule.initializer}
    if rule.axes != (None, None):
        twin.kernel_axes = {**twin.kernel_axes, rule.attr: rule.axes}


def _doc(layer_class):
    return (
        f"`{layer_class.__module__}.{layer_class.__name__}` with boolean masks on its "
        "weights, attached in place or built from a config.\n\nSame constructor and config "
        f"as `{layer_class.__name__}`. See the `lth_keras.layers` module docstring for "
        "masks and initial weights.\n"
    )


def attach(layer, weight_rules):
    """Masks the weights `weight_rules` name on a built layer, in place.

    The layer keeps its identity, name, variables and values; its class
    becomes its twin, and each weight gets a mask (all True) and an initial
    copy (its current value), as does its bias.

    Args:
        layer: A built `keras.layers.Layer`.
        weight_rules: `lth_keras.layers.rules.WeightRule`s of weights of this
            layer (see `rules.layer_rules`).

    Returns:
        The layer.

    Raises:
        ValueError: If the layer is not built, or is a masked layer written
            by hand that lacks one of the weights.

    Example:

    ```python
    layer = keras.layers.Dense(4)
    layer.build((None, 3))
    lth_keras.layers.attach(layer, lth_keras.layers.rules.layer_rules(layer))
    type(layer).__qualname__  # 'MaskedDense' (its __name__ stays 'Dense')
    ```
    """
    if not layer.built:
        raise ValueError(
            f"Layer {layer.name!r} is not built, so its weights do not exist yet. Build "
            "the model first (call it on data, use keras.Input, or model.build(shape))."
        )
    weight_rules = list(weight_rules)
    twin = twin_class(type(layer))
    if twin is type(layer) and type(layer) not in _BASES:
        missing = [r.attr for r in weight_rules if r.attr not in layer.prunable_attrs]
        if missing:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) is a masked layer written "
                f"for lth_keras; it does not mask {missing}. Received: weights {missing}."
            )
        return layer
    for rule in weight_rules:
        if twin.weight_attrs.get(rule.attr) != rule.storage:
            _hook(twin, rule)
    current = tuple(layer.prunable_attrs) if isinstance(layer, MaskedLayerMixin) else ()
    names = current + tuple(r.attr for r in weight_rules if r.attr not in current)
    layer.__class__ = twin
    object.__setattr__(layer, "prunable_attrs", names)
    with _compat.unlocked(layer):
        layer._lth_add_state(names)
    return layer


def detach(layer, names=None):
    """Removes masks from a layer in place, keeping its effective weights.

    Args:
        layer: A masked layer made by `attach` or built from a twin.
        names: The weight names to unmask. Defaults to `None`: all of them,
            and the layer's class becomes its plain class again.

    Returns:
        The layer.

    Raises:
        ValueError: If the layer is a masked layer written for lth_keras
            (it has no plain class to return to).

    Example:

    ```python
    lth_keras.layers.detach(layer)
    type(layer).__name__  # 'Dense'
    ```
    """
    base = keras_class_of(type(layer))
    names = tuple(layer.prunable_attrs) if names is None else tuple(names)
    keep = tuple(a for a in layer.prunable_attrs if a not in names)
    weights = layer.get_lottery_weights() if layer.built else []
    with _compat.unlocked(layer):
        for weight in weights:
            if weight.name in names:
                weight.variable.assign(kept(weight.mask, weight.variable))
                unconstrain(weight.variable)
                _compat.untrack(layer, f"{weight.name}_mask")
                _compat.untrack(layer, f"{weight.name}_initial")
            elif weight.mask is None and not keep:
                _compat.untrack(layer, f"{weight.name}_initial")
    if keep:
        object.__setattr__(layer, "prunable_attrs", keep)
    else:
        vars(layer).pop("prunable_attrs", None)
        layer.__class__ = base
    return layer


_loading = threading.local()


@contextlib.contextmanager
def reconciling():
    """Inside, loading a layer's variables makes its masks those the file recorded.

    `lth_keras.load_model` attaches masks to every weight a model could
    mask, then loads: each layer keeps exactly the masks the file holds
    (none for a layer saved without masks). Elsewhere, loading a file keeps
    the model's masks.
    """
    previous = getattr(_loading, "active", False)
    _loading.active = True
    try:
        yield
    finally:
        _loading.active = previous


def loading_reconciles():
    """Whether loading runs inside `reconciling()`."""
    return getattr(_loading, "active", False)


def reconcile(layer, names):
    """Makes `names` exactly the masked weights of `layer` (for loading); returns its class."""
    current = tuple(layer.prunable_attrs) if isinstance(layer, MaskedLayerMixin) else ()
    extra = [a for a in current if a not in names]
    if extra:
        detach(layer, extra)
    missing = [a for a in names if a not in current]
    if missing:
        by_attr = {r.attr: r for r in rules.layer_rules(layer, unknown=True)}
        attach(layer, [by_attr[a] for a in missing])
    return type(layer)


def _static(layer_class):
    twin = twin_class(layer_class)
    globals()[twin.__qualname__] = twin
    return twin


# Twins of Keras' own layers, made at import so that `.keras` files naming
# them load with plain `keras.saving.load_model`.
for _cls in rules.known_classes():
    _static(_cls)

MaskedDense = _TWINS[keras.layers.Dense]
"""`keras.layers.Dense` with masks: the class `prunable()` gives its layers in place."""

MaskedEinsumDense = _TWINS[keras.layers.EinsumDense]
"""`keras.layers.EinsumDense` with masks: the class `prunable()` gives its layers in place."""

MaskedConv1D = _TWINS[keras.layers.Conv1D]
"""`keras.layers.Conv1D` with masks: the class `prunable()` gives its layers in place."""

MaskedConv2D = _TWINS[keras.layers.Conv2D]
"""`keras.layers.Conv2D` with masks: the class `prunable()` gives its layers in place."""

MaskedConv3D = _TWINS[keras.layers.Conv3D]
"""`keras.layers.Conv3D` with masks: the class `prunable()` gives its layers in place."""

MaskedConv1DTranspose = _TWINS[keras.layers.Conv1DTranspose]
"""`keras.layers.Conv1DTranspose` with masks: the class `prunable()` gives its layers in place."""

MaskedConv2DTranspose = _TWINS[keras.layers.Conv2DTranspose]
"""`keras.layers.Conv2DTranspose` with masks: the class `prunable()` gives its layers in place."""

MaskedConv3DTranspose = _TWINS[keras.layers.Conv3DTranspose]
"""`keras.layers.Conv3DTranspose` with masks: the class `prunable()` gives its layers in place."""

MaskedDepthwiseConv1D = _TWINS[keras.layers.DepthwiseConv1D]
"""`keras.layers.DepthwiseConv1D` with masks: the class `prunable()` gives its layers in place."""

MaskedDepthwiseConv2D = _TWINS[keras.layers.DepthwiseConv2D]
"""`keras.layers.DepthwiseConv2D` with masks: the class `prunable()` gives its layers in place."""

MaskedSeparableConv1D = _TWINS[keras.layers.SeparableConv1D]
"""`keras.layers.SeparableConv1D` with masks: the class `prunable()` gives its layers in place."""

MaskedSeparableConv2D = _TWINS[keras.layers.SeparableConv2D]
"""`keras.layers.SeparableConv2D` with masks: the class `prunable()` gives its layers in place."""

MaskedEmbedding = _TWINS[keras.layers.Embedding]
"""`keras.layers.Embedding` with masks: the class `prunable()` gives its layers in place."""

MaskedLSTMCell = _TWINS[keras.layers.LSTMCell]
"""`keras.layers.LSTMCell` with masks: the class `prunable()` gives its layers in place."""

MaskedGRUCell = _TWINS[keras.layers.GRUCell]
"""`keras.layers.GRUCell` with masks: the class `prunable()` gives its layers in place."""

MaskedSimpleRNNCell = _TWINS[keras.layers.SimpleRNNCell]
"""`keras.layers.SimpleRNNCell` with masks: the class `prunable()` gives its layers in place."""
