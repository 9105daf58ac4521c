"""Per-kernel pruning rates from one rate and overrides."""

from lth_keras.pruning.counts import check_rates

__all__ = ["resolve_rates"]


def _items(layers):
    """`(names, type_names, is_output)` triples from `layers` (see `resolve_rates`)."""
    items = []
    for i, layer in enumerate(layers):
        names, type_names = layer[0], tuple(layer[1])
        names = (names,) if isinstance(names, str) else tuple(names)
        is_output = layer[2] if len(layer) > 2 else i == len(layers) - 1
        items.append((names, type_names, bool(is_output)))
    return items


def resolve_rates(layers, rate, output_rate=None, layer_rates=None, exclude=()):
    """Pruning rate of every kernel (or layer), from one rate plus overrides.

    Precedence, highest first: `exclude`, a `layer_rates` key equal to one
    of the item's names (the most specific name first), `output_rate` for
    the output items, a `layer_rates` key equal to one of the item's type
    names (the first of its `type_names` found wins), then `rate`. The paper
    prunes the output layer at half the rate of the others, hence the
    default.

    Args:
        layers: Sequence in model order of `(names, type_names)` pairs, or
            `(names, type_names, is_output)` triples. `names` is a name or a
            tuple of names the item answers to, most specific first (for a
            kernel: its key `"block/fc/kernel"`, its layer's path
            `"block/fc"`, its layer's name `"fc"`); `type_names` the class
            names (`("MaskedConv2D", "Conv2D")`). With pairs, the last item
            is the output.
        rate: Fraction of remaining weights pruned per round, in (0, 1).
        output_rate: Rate of the output items. Defaults to `None`, meaning
            `rate / 2`.
        layer_rates: Mapping from a name or type name to a rate in [0, 1).
            Defaults to `None`.
        exclude: Names or type names never pruned. Defaults to `()`.

    Returns:
        A dict from each item's first name to its rate; excluded items are
        absent.

    Raises:
        ValueError: If a rate is outside its interval, or a key in
            `layer_rates` or `exclude` matches no item.

    Example:

    ```python
    >>> layers = [("fc1", ("Dense",)), ("fc2", ("Dense",)),
    ...           ("out", ("Dense",))]
    >>> resolve_rates(layers, 0.2, layer_rates={"fc2": 0.1})
    {'fc1': 0.2, 'fc2': 0.1, 'out': 0.1}

    ```
    """
    check_rates(rate, output_rate, layer_rates)
    output_rate = rate / 2 if output_rate is None else output_rate
    layer_rates = dict(layer_rates or {})
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    items = _items(layers)
    for arg, keys in (("layer_rates", layer_rates), ("exclude", exclude)):
        for key in keys:
            if not any(key in names or key in types for names, types, _ in items):
                known = sorted({n for names, _, _ in items for n in names[-1:]})
                raise ValueError(
                    f"Received a key in `{arg}` that matches no masked layer "
                    f"name, path or type. Received: {key!r}; layers: {known}"
                )
    rates = {}
    for names, types, is_output in items:
        if any(key in names or key in types for key in exclude):
            continue
        named = [layer_rates[n] for n in names if n in layer_rates]
        typed = [layer_rates[t] for t in types if t in layer_rates]
        if named:
            rates[names[0]] = named[0]
        elif is_output:
            rates[names[0]] = output_rate
        elif typed:
            rates[names[0]] = typed[0]
        else:
            rates[names[0]] = rate
    return rates
