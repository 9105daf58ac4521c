"""Per-layer pruning rates from one rate and overrides."""

from lth_keras.pruning.counts import check_rates

__all__ = ["resolve_rates"]


def _matches(key, name, type_names):
    return key == name or key in type_names


def resolve_rates(layers, rate, output_rate=None, layer_rates=None, exclude=()):
    """Pruning rate of every layer, from one rate plus overrides.

    Precedence, highest first: `exclude`, a `layer_rates` key equal to the
    layer's name, `output_rate` for the last layer, a `layer_rates` key
    equal to one of the layer's type names (the first of its `type_names`
    found wins), then `rate`. The paper prunes the output layer at half the
    rate of the others, hence the default.

    Args:
        layers: Sequence of `(name, type_names)` pairs in model order, where
            `type_names` holds the class names the layer answers to (for
            example `("MaskedConv2D", "Conv2D")`).
        rate: Fraction of remaining weights pruned per round, in (0, 1).
        output_rate: Rate of the last layer. Defaults to `None`, meaning
            `rate / 2`.
        layer_rates: Mapping from a layer name or type name to a rate in
            [0, 1). Defaults to `None`.
        exclude: Layer names or type names never pruned. Defaults to `()`.

    Returns:
        A dict from layer name to rate; excluded layers are absent.

    Raises:
        ValueError: If a rate is outside its interval, or a key in
            `layer_rates` or `exclude` matches no layer.

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
    known = [name for name, _ in layers]
    for arg, keys in (("layer_rates", layer_rates), ("exclude", exclude)):
        for key in keys:
            if not any(_matches(key, n, t) for n, t in layers):
                raise ValueError(
                    f"Received a key in `{arg}` that matches no masked layer "
                    f"name or type. Received: {key!r}; layers: {known}"
                )
    rates = {}
    for i, (name, type_names) in enumerate(layers):
        if any(_matches(key, name, type_names) for key in exclude):
            continue
        typed = [layer_rates[t] for t in type_names if t in layer_rates]
        if name in layer_rates:
            rates[name] = layer_rates[name]
        elif i == len(layers) - 1:
            rates[name] = output_rate
        elif typed:
            rates[name] = typed[0]
        else:
            rates[name] = rate
    return rates
