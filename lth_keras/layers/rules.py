"""What gets masked: the weights of each layer that `prunable()` masks, and why others are not.

By default lth_keras masks the kernels of `Dense` and `EinsumDense`
(attention projections, feed-forward layers), of every convolution
(`Conv1D/2D/3D`, their transposes, depthwise and separable ones), the
matrix of `Embedding` and its subclasses (KerasHub's `ReversibleEmbedding`
included: a tied output projection is the same variable, masked once; an
untied one, `reverse_embeddings`, is masked too), and the `kernel` and
`recurrent_kernel` of `LSTM`, `GRU`, `SimpleRNN` and `ConvLSTM` cells.
Matching is by `isinstance`, so subclasses of these layers are masked too.

Not masked: biases, normalisation parameters and scales (rank-1 weights),
positional tables (KerasHub's `PositionEmbedding`, and any `Embedding`
whose name contains "position"; `positional=True` masks them), and
non-trainable weights. A trainable weight of rank 2 or more of a layer
this table does not know (a class token, a custom projection) is reported
as unknown: `prunable()` warns and names it, and `unknown=True` masks it.
`lth_keras.summary(model)` lists every weight with what was decided and why.

A layer class may name its prunable weights itself, as tfmot's
`PrunableLayer` protocol does: a `get_prunable_weights()` method returning
the variables to mask (held as attributes of the layer). Those, and only
those, are masked; the protocol method of lth_keras' own masked layers
(`MaskedLayerMixin.get_prunable_weights`) is not such a declaration.
"""

import dataclasses
import re

import keras

from lth_keras import _compat
from lth_keras.layers.base import MaskedLayerMixin

__all__ = [
    "WeightRule",
    "class_rules",
    "declared_weights_method",
    "known_classes",
    "layer_rules",
    "plan",
]


@dataclasses.dataclass(frozen=True)
class WeightRule:
    """One weight of a layer to mask.

    Attributes:
        attr: The weight's name in the layer (`"kernel"`).
        storage: The layer attribute holding its variable (`"_kernel"` for
            `Dense`, `"kernel"` for an `LSTMCell`).
        initializer: The layer attribute holding its initializer, for
            re-initialisation, or `None`.
        axes: `(input axis, output axis)` of the weight, for structured
            sparsity; `None` where it has none.
    """

    attr: str
    storage: str
    initializer: str | None = None
    axes: tuple = (None, None)


def _einsum_axes(layer):
    """(input axis, output axis) of an EinsumDense kernel, from its equation."""
    equation = getattr(layer, "equation", "")
    match = re.fullmatch(r"\s*([\w.]*)\s*,\s*([\w.]*)\s*->\s*([\w.]*)\s*", equation)
    if not match:
        return (None, None)
    inputs, kernel, output = (part.replace(".", "") for part in match.groups())
    contracted = [i for i, c in enumerate(kernel) if c in inputs and c not in output]
    produced = [i for i, c in enumerate(kernel) if c in output and c not in inputs]
    n = len(kernel)
    # The innermost contracted axis groups blocks and N:M (head_dim for an
    # attention output); units need a single output axis.
    return (
        contracted[-1] - n if contracted else None,
        produced[0] - n if len(produced) == 1 else None,
    )


_L = keras.layers
_RNN_CELLS = (_L.LSTMCell, _L.GRUCell, _L.SimpleRNNCell)
_CONV_LSTM_CELL = _compat.conv_lstm_cell_class()

# (class, weights): most specific first. Each weight is (name, storage
# attribute, initializer attribute, axes); axes of EinsumDense come from its
# equation.
_TABLE = [
    (
        _L.SeparableConv1D,
        [
            ("depthwise_kernel", "depthwise_kernel", "depthwise_initializer", (None, None)),
            ("pointwise_kernel", "pointwise_kernel", "pointwise_initializer", (-2, -1)),
        ],
    ),
    (
        _L.SeparableConv2D,
        [
            ("depthwise_kernel", "depthwise_kernel", "depthwise_initializer", (None, None)),
            ("pointwise_kernel", "pointwise_kernel", "pointwise_initializer", (-2, -1)),
        ],
    ),
    (_L.DepthwiseConv1D, [("kernel", "kernel", "depthwise_initializer", (None, None))]),
    (_L.DepthwiseConv2D, [("kernel", "kernel", "depthwise_initializer", (None, None))]),
    (_L.Conv1DTranspose, [("kernel", "kernel", "kernel_initializer", (-1, -2))]),
    (_L.Conv2DTranspose, [("kernel", "kernel", "kernel_initializer", (-1, -2))]),
    (_L.Conv3DTranspose, [("kernel", "kernel", "kernel_initializer", (-1, -2))]),
    (_L.Conv1D, [("kernel", "_kernel", "kernel_initializer", (-2, -1))]),
    (_L.Conv2D, [("kernel", "_kernel", "kernel_initializer", (-2, -1))]),
    (_L.Conv3D, [("kernel", "_kernel", "kernel_initializer", (-2, -1))]),
    (_L.Dense, [("kernel", "_kernel", "kernel_initializer", (-2, -1))]),
    (_L.EinsumDense, [("kernel", "_kernel", "kernel_initializer", "einsum")]),
    (_L.Embedding, [("embeddings", "_embeddings", "embeddings_initializer", (None, -1))]),
    *[
        (
            cell,
            [
                ("kernel", "kernel", "kernel_initializer", (-2, None)),
                ("recurrent_kernel", "recurrent_kernel", "recurrent_initializer", (-2, None)),
            ],
        )
        for cell in (*_RNN_CELLS, _CONV_LSTM_CELL)
    ],
]
# An untied output projection of an Embedding subclass (KerasHub's
# ReversibleEmbedding with tie_weights=False).
_REVERSE = ("reverse_embeddings", "reverse_embeddings", "embeddings_initializer", (-2, -1))


def known_classes():
    """The layer classes of the table, in order."""
    return [cls for cls, _ in _TABLE]


def class_rules(layer_class):
    """The `WeightRule`s the table gives a layer class (empty if it knows none).

    Example:

    ```python
    [r.attr for r in class_rules(keras.layers.LSTMCell)]  # ['kernel', 'recurrent_kernel']
    ```
    """
    for cls, weights in _TABLE:
        if issubclass(layer_class, cls):
            return [WeightRule(*w) if w[3] != "einsum" else WeightRule(*w[:3]) for w in weights]
    return []


def _variables_by_attr(layer):
    """`{attribute: variable}` for the variables the layer holds in attributes."""
    return {k: v for k, v in vars(layer).items() if isinstance(v, keras.Variable)}


def _storage(held, attr):
    for name in (f"_{attr}", attr):
        if name in held:
            return name
    return None


def lth_variable_ids(layer):
    """The ids of the masks and initial copies lth_keras added to `layer`."""
    if not isinstance(layer, MaskedLayerMixin) or not layer.built:
        return set()
    return {
        id(v) for w in layer.get_lottery_weights() for v in (w.mask, w.initial) if v is not None
    }


def declared_weights_method(layer_class):
    """The user's `get_prunable_weights` of a layer class (tfmot's protocol), or `None`.

    The first definition in the class's MRO outside `MaskedLayerMixin` and
    its subclasses (lth_keras' masked twins and layers written for it, whose
    method of that name returns `LotteryWeight`s).

    Example:

    ```python
    class MyDense(keras.layers.Dense):
        def get_prunable_weights(self):
            return [self.kernel, self.bias]

    declared_weights_method(MyDense)  # MyDense.get_prunable_weights
    ```
    """
    for cls in layer_class.__mro__:
        if issubclass(cls, MaskedLayerMixin):
            continue
        method = vars(cls).get("get_prunable_weights")
        if method is not None:
            return method
    return None


def _declared_rules(layer, method, held):
    """`WeightRule`s of the variables `method(layer)` returns, table entries where known."""
    storages = {id(variable): storage for storage, variable in held.items()}
    table = {r.attr: r for r in class_rules(type(layer))}
    found = []
    for variable in method(layer):
        storage = storages.get(id(variable))
        if storage is None:
            raise ValueError(
                f"{type(layer).__name__}.get_prunable_weights() returned a weight that "
                f"layer {layer.name!r} does not hold in an attribute: "
                f"{getattr(variable, 'path', variable)!r}. lth_keras masks weights held "
                "as attributes of the layer (`self.kernel = self.add_weight(...)`); "
                "return those."
            )
        attr = storage.lstrip("_") or storage
        if attr in table:
            rule = dataclasses.replace(table[attr], storage=storage)
        else:
            initializer = f"{attr}_initializer"
            rule = WeightRule(attr, storage, initializer if hasattr(layer, initializer) else None)
        if rule.attr not in {r.attr for r in found}:
            found.append(rule)
    return found


def _table_rules(layer, held):
    """The table's `WeightRule`s for `layer`, with the attributes that hold its variables."""
    found = []
    for rule in class_rules(type(layer)):
        storage = _storage(held, rule.attr)
        if storage is not None:
            axes = _einsum_axes(layer) if isinstance(layer, _L.EinsumDense) else rule.axes
            found.append(dataclasses.replace(rule, storage=storage, axes=axes))
    if isinstance(layer, _L.Embedding) and "reverse_embeddings" in held:
        found.append(WeightRule(*_REVERSE))
    return found


def layer_rules(layer, unknown=False):
    """The weights of `layer` to mask, as `WeightRule`s (see the module docstring).

    Known layers give their table entries, with the attribute that holds
    each variable found on the layer itself; a layer whose class defines
    `get_prunable_weights()` (tfmot's `PrunableLayer` protocol) gives the
    weights it returns instead; with `unknown`, every other
    trainable weight of rank 2 or more the layer holds in an attribute is
    added (no initializer, no axes).

    Args:
        layer: A built layer.
        unknown: Whether to add the layer's unknown weights. Defaults to
            `False`.

    Returns:
        A list of `WeightRule`.

    Raises:
        ValueError: If the layer's `get_prunable_weights()` returns a weight
            the layer does not hold in an attribute.

    Example:

    ```python
    [r.attr for r in layer_rules(lstm_layer.cell)]  # ['kernel', 'recurrent_kernel']
    ```
    """
    held = _variables_by_attr(layer)
    declared = declared_weights_method(type(layer))
    if declared is not None:
        found = _declared_rules(layer, declared, held)
    else:
        found = _table_rules(layer, held)
    if isinstance(layer, MaskedLayerMixin):
        for attr in layer.prunable_attrs:
            if attr not in {r.attr for r in found}:
                storage = layer.weight_attrs.get(attr, f"_{attr}")
                axes = layer.kernel_axes.get(attr, (None, None))
                found.append(WeightRule(attr, storage, layer.initializer_attrs.get(attr), axes))
    if unknown:
        taken = {r.storage for r in found}
        ours = lth_variable_ids(layer)
        for storage, variable in held.items():
            if (
                storage not in taken
                and id(variable) not in ours
                and variable.trainable
                and len(variable.shape) >= 2
            ):
                found.append(WeightRule(storage.lstrip("_") or storage, storage))
    return found


def is_positional(layer):
    """Whether a layer is a positional table (not masked by default)."""
    if type(layer).__name__ == "PositionEmbedding":
        return True
    return isinstance(layer, _L.Embedding) and "position" in layer.name


@dataclasses.dataclass
class Decision:
    """What `plan` decided for one weight of a model.

    Attributes:
        path: The path of the layer holding the weight.
        layer: That layer.
        variable: The weight's variable.
        rule: Its `WeightRule` if it is masked (or is to be), else `None`.
        reason: Why, in a few words.
        unknown: Whether it is a weight of a layer lth_keras does not know,
            left unmasked.
    """

    path: str
    layer: object
    variable: object
    rule: WeightRule | None
    reason: str
    unknown: bool = False


def _matches(filters, layer, path):
    if filters is None:
        return True
    if isinstance(filters, str):
        return re.search(filters, path) is not None
    if isinstance(filters, (list, tuple)):
        return any(re.search(f, path) is not None for f in filters)
    return bool(filters(layer))


def check_filters(filters):
    """Raises `ValueError` unless `filters` is None, a regex, a list of regexes or a callable."""
    valid = filters is None or callable(filters) or isinstance(filters, str)
    if isinstance(filters, (list, tuple)):
        valid = all(isinstance(f, str) for f in filters)
    if not valid:
        raise ValueError(
            "Received an invalid value for `filters`, expected a regex string, a list of "
            f"regex strings or a callable taking a layer. Received: filters={filters!r}"
        )
    patterns = [filters] if isinstance(filters, str) else filters
    for pattern in patterns if isinstance(patterns, (list, tuple)) else []:
        if isinstance(pattern, str):
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"Received an invalid regex in `filters` ({error}). Received: {pattern!r}"
                ) from None


def plan(layers, filters=None, unknown=False, positional=False, current=False):
    """Decides, for every weight of `layers`, whether it is masked and why.

    Args:
        layers: `(path, layer)` pairs, each layer once (see
            `lth_keras.masks.model_layers`).
        filters: A regex searched in each layer's path, a list of them, or a
            callable on the layer: only matching layers are masked. Defaults
            to `None` (every layer).
        unknown: Whether trainable rank>=2 weights of unknown layers are
            masked. Defaults to `False` (they are reported).
        positional: Whether positional tables are masked. Defaults to
            `False`.
        current: Whether to describe the masks the model has now (a weight
            is masked if and only if it holds a mask) instead of those the
            other arguments would choose. Defaults to `False`.

    Returns:
        A list of `Decision`, one per weight (masks and initial copies left
        out), in layer order.

    Example:

    ```python
    decisions = plan(lth_keras.masks.model_layers(model))
    [d.path for d in decisions if d.unknown]
    ```
    """
    decisions, seen = [], set()
    for path, layer in layers:
        ours = lth_variable_ids(layer)
        rules = {r.storage: r for r in layer_rules(layer, unknown=True)}
        known = {r.storage for r in layer_rules(layer)}
        masked = set(layer.prunable_attrs) if isinstance(layer, MaskedLayerMixin) else set()
        chosen = _matches(filters, layer, path)
        for storage, variable in _variables_by_attr(layer).items():
            if id(variable) in seen or id(variable) in ours:
                continue
            seen.add(id(variable))
            rule = rules.get(storage)
            reason, unknown_weight = _reason(
                layer, variable, rule, storage in known, masked, chosen, unknown, positional
            )
            if current and rule is not None and rule.attr not in masked:
                if reason.startswith("masked"):
                    reason = "not masked (left out when masks were attached)"
            elif current and reason.startswith("masked") and rule is None:
                reason = "not masked"
            decisions.append(
                Decision(
                    path,
                    layer,
                    variable,
                    rule if reason.startswith("masked") else None,
                    reason,
                    unknown_weight,
                )
            )
    return decisions


def _reason(layer, variable, rule, known, masked, chosen, unknown, positional):
    """`(reason, is an unmasked unknown weight)` for one weight (see `plan`)."""
    if rule is not None and rule.attr in masked:
        return "masked", False
    if not variable.trainable and not known:
        return "not trainable", False
    if len(variable.shape) < 2 and not known:
        return "bias, scale or norm (rank < 2)", False
    if not known and declared_weights_method(type(layer)) is not None:
        return "not returned by its get_prunable_weights()", False
    if not known and class_rules(type(layer)):
        return f"bias of {type(layer).__name__}", False
    if not chosen:
        return "not selected by filters", False
    if is_positional(layer) and not positional:
        return "positional table (positional=True masks it)", False
    if known:
        return "masked", False
    if rule is not None and is_positional(layer):
        return "masked (positional=True)", False
    if rule is not None and unknown:
        return "masked (unknown layer type, unknown=True)", False
    return f"unknown layer type {type(layer).__name__} (unknown=True masks it)", True
