"""tfmot's `prune_low_magnitude`, `strip_pruning`, `prune_scope` and `PrunableLayer`.

`prune_low_magnitude` attaches masks with `lth_keras.prunable` (in place, on
any built model, or as a layer's masked twin) and records on each masked
layer *when* and *in what structure* it is pruned: a `PruningParams` that
`UpdatePruningStep` turns into `lth_keras.LotteryPruner`s (one per distinct
schedule and structure) during `fit`.
"""

import dataclasses

import keras

from lth_keras import _compat, convert
from lth_keras.layers import MaskedLayerMixin, masked, rules
from lth_keras.masks import masked_layers, model_layers
from lth_keras.pruning import NM, Blocks, ConstantSparsity, SparsitySchedule, Unstructured

__all__ = [
    "PARAMS_ATTR",
    "PrunableLayer",
    "PruningParams",
    "prune_low_magnitude",
    "prune_scope",
    "strip_pruning",
]

#: The attribute of a masked layer holding its `PruningParams`.
PARAMS_ATTR = "_lth_tfmot_params"


@dataclasses.dataclass(frozen=True, eq=False)
class PruningParams:
    """When and in what structure a layer is pruned: what a tfmot wrapper held.

    `prune_low_magnitude` records one on each layer it masks;
    `UpdatePruningStep` reads them.

    Attributes:
        schedule: A `lth_keras.pruning.SparsitySchedule`.
        structure: A `lth_keras.pruning.Structure`.

    Example:

    ```python
    model = lth_keras.tfmot.prune_low_magnitude(model, block_size=(4, 1))
    layer = lth_keras.masked_layers(model)[0]
    getattr(layer, lth_keras.tfmot.prune.PARAMS_ATTR).structure  # Blocks(size=4, pooling='avg')
    ```
    """

    schedule: SparsitySchedule
    structure: object


class PrunableLayer:
    """A layer of your own names the weights to prune (tfmot's `PrunableLayer`).

    Derive your layer from it (beside `keras.layers.Layer`) and return the
    variables to prune from `get_prunable_weights()`; lth_keras masks those
    and only those (`lth_keras.layers.rules` honours the method on any
    layer class, derived from this one or not).

    Example:

    ```python
    class MyDense(keras.layers.Layer, lth_keras.tfmot.PrunableLayer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 8), name="kernel")

        def call(self, x):
            return x @ self.kernel

        def get_prunable_weights(self):
            return [self.kernel]
    ```
    """

    def get_prunable_weights(self):
        """The variables of this layer to prune; implement it in your layer."""
        raise NotImplementedError(
            f"{type(self).__name__} derives from lth_keras.tfmot.PrunableLayer, so it must "
            "implement get_prunable_weights() returning the variables to prune, "
            "e.g. [self.kernel]."
        )


def _ints(value, name, allowed):
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(
            f"Received an invalid value for `{name}`, expected {allowed}. "
            f"Received: {name}={value!r}"
        )
    return pair


def _structure(block_size, block_pooling_type, sparsity_m_by_n):
    """The `lth_keras.pruning.Structure` tfmot's three structure arguments ask for."""
    if block_pooling_type not in ("AVG", "MAX"):
        raise ValueError(
            "Received an invalid value for `block_pooling_type`, expected 'AVG' or 'MAX'. "
            f"Received: block_pooling_type={block_pooling_type!r}"
        )
    height, width = _ints(block_size, "block_size", "a pair of ints >= 1")
    if sparsity_m_by_n is not None:
        zeros, group = _ints(sparsity_m_by_n, "sparsity_m_by_n", "(m, n) with 0 < m < n")
        if not 0 < zeros < group:
            raise ValueError(
                "Received an invalid value for `sparsity_m_by_n`, expected (m, n) with "
                f"0 < m < n (m zeros in every n). Received: sparsity_m_by_n={sparsity_m_by_n!r}"
            )
        if (height, width) != (1, 1):
            raise ValueError(
                "Pass either `block_size` or `sparsity_m_by_n`, not both (tfmot ignores the "
                f"block then). Received: block_size={block_size!r}, "
                f"sparsity_m_by_n={sparsity_m_by_n!r}"
            )
        return NM(group - zeros, group)
    if (height, width) == (1, 1):
        return Unstructured()
    if width != 1 or height < 2:
        raise ValueError(
            "Received an invalid value for `block_size`: lth_keras prunes blocks of K "
            "consecutive inputs of one unit, tfmot's block_size=(K, 1) on a Dense kernel "
            "(TFLite's 1xK, lth_keras.pruning.Blocks(K)), or (1, 1) for no blocks. "
            f"Received: block_size={block_size!r}"
        )
    return Blocks(height, pooling=block_pooling_type.lower())


def _params(pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n):
    structure = _structure(block_size, block_pooling_type, sparsity_m_by_n)
    if sparsity_m_by_n is not None:
        # tfmot sets an m-by-n mask once, at step 1, whatever the schedule says; a sparsity
        # above m/n asks the structure for every excess entry, so the mask is exactly N:M.
        zeros, group = sparsity_m_by_n
        pruning_schedule = ConstantSparsity((zeros + 0.5) / group, 1, end_step=1, frequency=1)
    if not isinstance(pruning_schedule, SparsitySchedule):
        raise ValueError(
            "Received an invalid value for `pruning_schedule`, expected a step schedule: "
            "lth_keras.tfmot.ConstantSparsity, PolynomialDecay or a PruningSchedule subclass "
            "(for rounds with resets, use lth_keras.LotteryPruner(schedule=...)). "
            f"Received: pruning_schedule={pruning_schedule!r}"
        )
    return PruningParams(pruning_schedule, structure)


def _prune_layer(layer, params, kwargs):
    """A layer with masks and `params`: the layer itself, or the masked twin of an unbuilt one."""
    if isinstance(layer, keras.layers.InputLayer):
        return layer
    cls = type(layer)
    shape = _compat.input_shape_arg(layer)  # Dense(..., input_shape=...): built here, in place
    if not layer.built and shape is not None and not kwargs:
        layer.build((None, *shape))
    if not layer.built:
        if rules.declared_weights_method(cls) is not None:
            raise ValueError(
                f"prune_low_magnitude() needs the layer {layer.name!r} built: its class "
                f"{cls.__name__} names its prunable weights, which exist once it is built. "
                "Give it input_shape=..., or call prune_low_magnitude on the built model. "
                f"Received: an unbuilt {cls.__name__}"
            )
        if rules.class_rules(cls):
            config = {**layer.get_config(), **({"input_shape": shape} if shape else {}), **kwargs}
            layer = masked.twin_class(cls).from_config(config)
    elif any(d.rule is not None for d in rules.plan(model_layers(layer))):
        convert.prunable(layer)
    if not hasattr(layer, PARAMS_ATTR) and isinstance(layer, MaskedLayerMixin):
        setattr(layer, PARAMS_ATTR, params)
    return layer


def prune_low_magnitude(
    to_prune,
    pruning_schedule=ConstantSparsity(0.5, 0),  # noqa: B008 (tfmot's default, immutable)
    block_size=(1, 1),
    block_pooling_type="AVG",
    pruning_policy=None,
    sparsity_m_by_n=None,
    **kwargs,
):
    """Marks a model or layer to be pruned by magnitude during `fit` (tfmot's).

    A model (Sequential, functional, subclassed, nested) gets masks in place
    (`lth_keras.prunable`) and is returned: tfmot returned a clone sharing
    the layers, so the original's weights were trained and zeroed too. A
    built layer (as `keras.models.clone_model(..., clone_function=...)`
    passes it) gets masks in place, and so does an unbuilt layer given
    `input_shape=` (built here); another unbuilt layer is replaced by its
    masked twin (`lth_keras.MaskedDense` for `Dense`), built from its config
    and `kwargs`. A layer with nothing to mask (`Flatten`) is returned as is.
    Every layer masked here records `pruning_schedule` and the structure,
    and `lth_keras.tfmot.UpdatePruningStep` prunes it during `fit`: at each
    step the schedule names, its kernels keep the `keep_count(n, sparsity)`
    largest weights (tfmot's rule), pruned weights exactly zero. A layer
    masked before keeps what it recorded.

    Args:
        to_prune: A Keras model, a layer or a list of layers.
        pruning_schedule: `ConstantSparsity`, `PolynomialDecay` or a
            `PruningSchedule`. Defaults to `ConstantSparsity(0.5, 0)`.
        block_size: `(1, 1)`, or `(K, 1)`: blocks of K consecutive inputs of
            one unit (`lth_keras.pruning.Blocks(K)`). Defaults to `(1, 1)`.
        block_pooling_type: `"AVG"` or `"MAX"`: how a block's magnitude is
            pooled. Defaults to `"AVG"`.
        pruning_policy: A `PruningPolicy`: checks the model, then picks the
            layers to mask (`allow_pruning`). Defaults to `None`: all.
        sparsity_m_by_n: `(m, n)`: m zeros in every n consecutive inputs
            (`lth_keras.pruning.NM(n - m, n)`), set once at step 1; the
            schedule is ignored, as in tfmot. Defaults to `None`.
        **kwargs: For an unbuilt layer, arguments of its constructor
            (`input_shape=...`). Defaults to none.

    Returns:
        The model, the layer (or its masked twin), or a list of them.

    Raises:
        ValueError: For an argument outside its allowed values, a value that
            is neither a model nor a layer, a model that is not built, or an
            unbuilt layer without `input_shape` whose class names its
            prunable weights (`PrunableLayer`).

    Example:

    ```python
    schedule = lth_keras.tfmot.PolynomialDecay(0.5, 0.8, begin_step=0, end_step=1000)
    model = lth_keras.tfmot.prune_low_magnitude(model, pruning_schedule=schedule)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, callbacks=[lth_keras.tfmot.UpdatePruningStep()])
    ```
    """
    params = _params(pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n)
    if isinstance(to_prune, list):
        return [_prune_layer(layer, params, {}) for layer in to_prune]
    if isinstance(to_prune, keras.Model):
        if pruning_policy is not None:
            pruning_policy.ensure_model_supports_pruning(to_prune)
        filters = None if pruning_policy is None else pruning_policy.allow_pruning
        before = {id(layer) for layer in masked_layers(to_prune)}
        convert.prunable(to_prune, filters=filters)
        for layer in masked_layers(to_prune):
            if id(layer) not in before:
                setattr(layer, PARAMS_ATTR, params)
        return to_prune
    if isinstance(to_prune, keras.layers.Layer):
        return _prune_layer(to_prune, params, kwargs)
    raise ValueError(
        "prune_low_magnitude() prunes a Keras model, a layer or a list of layers. "
        f"Received: a value of type {type(to_prune).__name__}"
    )


def strip_pruning(model):
    """The model without masks, pruned weights zero, ready to save or convert (tfmot's).

    `lth_keras.strip_masks(model)`: a copy in the model's own layer
    classes holding `kernel * mask`; `model` keeps its masks. A model
    without masks is returned as it is.

    Args:
        model: A Keras model.

    Returns:
        The plain model.

    Raises:
        ValueError: If `model` is not a Keras model, or cannot be copied from
            its config (then use `lth_keras.strip_masks(model, in_place=True)`).

    Example:

    ```python
    final = lth_keras.tfmot.strip_pruning(model)
    final.save("pruned.keras")
    ```
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "strip_pruning() takes a Keras model (for a layer, use "
            f"lth_keras.strip_masks(layer, in_place=True)). Received: {type(model).__name__}"
        )
    if not masked_layers(model):
        return model
    return convert.strip_masks(model)


def prune_scope():
    """A scope in which models saved with masks load with `keras.saving.load_model` (tfmot's).

    Sequential and functional models of Keras layers with masks load without
    it too; a subclassed model, or one of your own layers, loads with
    `lth_keras.load_model`. Masks and weights load; the schedules do not
    (call `prune_low_magnitude` on the loaded model to go on pruning).

    Returns:
        A `keras.saving.CustomObjectScope` naming lth_keras' masked layers.

    Example:

    ```python
    model.save("pruned.keras")
    with lth_keras.tfmot.prune_scope():
        model = keras.saving.load_model("pruned.keras")
    ```
    """
    twins = [masked.twin_class(cls) for cls in masked.supported_keras_classes()]
    return keras.saving.custom_object_scope(
        {keras.saving.get_registered_name(twin): twin for twin in twins}
    )
