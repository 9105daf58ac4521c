"""`summary(model)`: every weight of a model, masked or not, why, and its sparsity now."""

from keras import ops

from lth_keras.layers import rules
from lth_keras.masks import model_layers

__all__ = ["summary"]


def summary(model, print_fn=None):
    """Prints every weight of a model: masked or not, why, and how much of it remains.

    One line per weight (masks and initial copies left out; non-trainable
    weights only where masked), like `model.summary()`: its key, shape,
    number of entries, and for a masked weight the fraction that remains;
    for another weight why it is not masked (a bias or norm, a positional
    table, a weight of a layer lth_keras does not know, ...). The last lines
    total the masked and unmasked trainable entries.

    Args:
        model: A built Keras model.
        print_fn: Called with each line. Defaults to `None`: `print`.

    Returns:
        A list of dicts, one per line printed: `key`, `shape`, `size`,
        `masked` (bool), `remaining` (fraction, or `None`) and `reason`.

    Example:

    ```python
    lth_keras.prunable(model)
    rows = lth_keras.summary(model)
    ```
    """
    print_fn = print if print_fn is None else print_fn
    rows = []
    for decision in rules.plan(model_layers(model), current=True):
        variable, layer = decision.variable, decision.layer
        masked = decision.rule is not None and decision.reason == "masked"
        if not (variable.trainable or masked):
            continue
        name = decision.rule.attr if decision.rule is not None else variable.name
        remaining = None
        if masked:
            mask = ops.convert_to_numpy(vars(layer)[f"{name}_mask"])
            remaining = float(mask.mean())
        size = 1
        for dim in variable.shape:
            size *= int(dim)
        rows.append(
            {
                "key": f"{decision.path}/{name}",
                "shape": tuple(int(d) for d in variable.shape),
                "size": size,
                "masked": masked,
                "remaining": remaining,
                "reason": decision.reason,
            }
        )
    width = max([len(r["key"]) for r in rows] + [6])
    line = "-" * (width + 62)
    print_fn(line)
    print_fn(f"{'Weight':<{width}}  {'Shape':<18} {'Entries':>11}  {'Remaining':>9}  Note")
    print_fn(line)
    for r in rows:
        remaining = f"{r['remaining']:9.2%}" if r["masked"] else f"{'-':>9}"
        note = "" if r["masked"] else r["reason"]
        shape = str(r["shape"])
        print_fn(f"{r['key']:<{width}}  {shape:<18} {r['size']:>11,}  {remaining}  {note}")
    print_fn(line)
    masked_size = sum(r["size"] for r in rows if r["masked"])
    kept = sum(r["size"] * r["remaining"] for r in rows if r["masked"])
    other = sum(r["size"] for r in rows if not r["masked"])
    share = masked_size / max(masked_size + other, 1)
    print_fn(f"Masked: {masked_size:,} entries ({share:.1%} of the trainable entries)")
    if masked_size:
        print_fn(f"Remaining in masked weights: {round(kept):,} ({kept / masked_size:.2%})")
    print_fn(f"Not masked: {other:,} entries")
    unknown = [r["key"] for r in rows if "unknown layer" in r["reason"] and not r["masked"]]
    if unknown:
        print_fn(f"Weights of unknown layers left dense (unknown=True masks them): {unknown}")
    print_fn(line)
    return rows
