"""Portable ticket files: masks, rewind weights, trained weights and metadata.

A ticket file is one `.npz` archive read with `allow_pickle=False`, so
loading it executes no code. The model's architecture is stored as its Keras
config (JSON) and rebuilt with Keras' `safe_mode` honoured. Sparse kernels are
stored compactly: masks as packed bits and kernels as the values of their
unpruned entries only, so a ticket at 5% of weights remaining takes about
7% of the space of its dense weights. The initial values of pruned weights
are not stored; rewinding multiplies them by zero anyway.

Keys: masks are keyed `"<layer>/<kernel attribute>"` (as `get_masks`); other
weights by `lth_keras.masks.weights_by_key` (`"<layer>/<weight name>"` for
plain layers).

Ticket files are shared, so loading one trusts nothing in it: every array's
declared shape is checked against the bytes the archive holds for it before
anything is allocated (a small file cannot make us allocate gigabytes),
every metadata field is type-checked, and the masks and packed kernels must
fit the shapes the metadata declares. Damage is one `ValueError` naming the
file and the field.
"""

import dataclasses
import io
import json
import math
import os
import zipfile
import zlib

import keras
import numpy as np
from keras import ops

import lth_keras
from lth_keras import masks as masks_lib
from lth_keras import pruning
from lth_keras._io import atomic_write
from lth_keras._npz import read_npz
from lth_keras.convert import attach_by_keys

__all__ = ["Ticket", "load_ticket", "save_ticket"]

FORMAT = "lth_keras.ticket"
FORMAT_VERSION = 1


def _layout(model):
    """How a model's weights map onto a ticket.

    Returns:
        `(weights, kernels, initials)`: every weight that is not a mask or an
        initial-weight copy, keyed as `weights_by_key`; `{weight key: mask
        key}` for masked kernels (the same key); `{weight key: initial
        variable}` for the masked layers' kernels and biases.
    """
    everything = masks_lib.weights_by_key(model)
    key_of = {id(v): k for k, v in everything.items()}
    kernels, initials, internal = {}, {}, set()
    for layer in masks_lib.masked_layers(model):
        for weight in layer.get_lottery_weights():
            key = key_of[id(weight.variable)]
            if weight.mask is not None:
                kernels[key] = key
                internal.add(id(weight.mask))
            initials[key] = weight.initial
            internal.add(id(weight.initial))
    weights = {k: v for k, v in everything.items() if id(v) not in internal}
    return weights, kernels, initials


@dataclasses.dataclass
class Ticket:
    """A lottery ticket: masks, rewind weights, trained weights, metadata.

    Attributes:
        masks: `{"<layer>/<attr>": bool array}`.
        rewind: `{"<layer>/<weight>": array}`: the weights that rounds rewind
            to (masked layers' kernels times masks, and their biases; other
            layers' weights when a pruner's snapshot was saved).
        final: `{"<layer>/<weight>": array}`: the trained weights, pruned
            entries exactly zero; masks and initial-weight copies excluded.
        metadata: JSON-ready dict (format, sparsity per kernel, versions,
            the experiment config if one was given, the model config).

    Example:

    ```python
    ticket = lth_keras.load_ticket("lenet.ticket.npz")
    ticket.metadata["weights_remaining"]   # 0.036: total; per kernel in "layers"
    ticket.apply(model, weights="rewind")  # to train the ticket again
    ```
    """

    masks: dict
    rewind: dict
    final: dict
    metadata: dict

    def apply(self, model, weights="final"):
        """Writes the ticket into a model of the same architecture.

        Masks are set, the masked layers' initial weights are set from
        `rewind`, and every weight from `final` (or, with
        `weights="rewind"`, the rewind point, to train the ticket again;
        weights with no rewind value, such as BatchNorm statistics of a ticket
        saved without its pruner, keep their trained values). Everything is
        checked before anything is written.

        Args:
            model: A model with the same masked layers and weight shapes.
            weights: `"final"` or `"rewind"`. Defaults to `"final"`.

        Raises:
            ValueError: If `weights` is invalid or the model's layers or
                shapes differ from the ticket's; the model is unchanged.

        Example:

        ```python
        ticket = lth_keras.load_ticket("lenet.ticket.npz")
        ticket.apply(model, weights="rewind")
        ```
        """
        if weights not in ("final", "rewind"):
            raise ValueError(
                "Received an invalid value for `weights`, expected 'final' or 'rewind'. "
                f"Received: weights={weights!r}"
            )
        variables, _, initials = _layout(model)
        model_masks = masks_lib.get_masks(model)
        problems = [f"mask {k}" for k in self.masks if k not in model_masks]
        problems += [
            f"mask {k} shape {self.masks[k].shape} vs {model_masks[k].shape}"
            for k in self.masks
            if k in model_masks and self.masks[k].shape != model_masks[k].shape
        ]
        problems += [
            f"masked kernel {k} not in the ticket" for k in model_masks if k not in self.masks
        ]
        source = self.final if weights == "final" else {**self.final, **self.rewind}
        for key, value in source.items():
            if key not in variables:
                problems.append(f"weight {key}")
            elif tuple(variables[key].shape) != value.shape:
                problems.append(
                    f"weight {key} shape {value.shape} vs {tuple(variables[key].shape)}"
                )
        if problems:
            raise ValueError(
                "The ticket does not fit this model (different architecture or shapes): "
                + "; ".join(problems[:8])
                + ("; ..." if len(problems) > 8 else "")
            )
        for key, initial in initials.items():
            if key in self.rewind:
                initial.assign(self.rewind[key])
        masks_lib.set_masks(model, self.masks)
        for key, value in source.items():
            variables[key].assign(value)
        masks_lib.apply_masks(model)

    def build_model(self, weights="final", safe_mode=True):
        """Rebuilds the model from the stored Keras config and applies the ticket.

        Args:
            weights: `"final"` or `"rewind"`. Defaults to `"final"`.
            safe_mode: Passed to Keras deserialization: refuses configs that
                would run arbitrary code (lambdas). Defaults to `True`.

        Returns:
            A new (uncompiled) model holding the ticket.

        Example:

        ```python
        model = lth_keras.load_ticket("lenet.ticket.npz").build_model()
        ```
        """
        try:
            model = keras.saving.deserialize_keras_object(
                self.metadata["model"], safe_mode=safe_mode
            )
        except (TypeError, KeyError, AttributeError, IndexError) as error:
            raise ValueError(
                f"The ticket's metadata field `model` is not a Keras model config ({error!r}). "
                "The file is damaged; save the ticket again."
            ) from error
        attach_by_keys(model, self.masks)  # masks on layers the config does not name
        self.apply(model, weights)
        return model


def _pack_kernel(value, mask):
    return np.asarray(value).reshape(-1)[mask.reshape(-1)]


def _unpack_kernel(values, mask):
    dense = np.zeros(mask.size, dtype=values.dtype)
    dense[mask.reshape(-1)] = values
    return dense.reshape(mask.shape)


def save_ticket(model, path, *, pruner=None, config=None, overwrite=False):
    """Saves a model's ticket to one portable file (see the module docstring).

    Args:
        model: A built model with masked layers (Keras config serializable).
        path: Destination file, conventionally ending in `.ticket.npz`.
        pruner: The `LotteryPruner` that found the ticket; its rewind point
            adds the weights of layers that are not masked (biases of plain
            layers, BatchNorm statistics). Defaults to `None`.
        config: JSON-ready description of how the ticket was found (e.g.
            `ExperimentConfig.to_dict()`). Defaults to `None`.
        overwrite: Replace an existing file. Defaults to `False`.

    Returns:
        The metadata dict written.

    Raises:
        FileExistsError: If `path` exists and `overwrite` is `False`.
        ValueError: If the model has no masked layers.

    Example:

    ```python
    lth_keras.save_ticket(model, "lenet.ticket.npz", pruner=pruner)
    ```
    """
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    masks = masks_lib.get_masks(model)
    if not masks:
        raise ValueError(
            "save_ticket() found no masked layers. Call lth_keras.prunable(model) first."
        )
    total, per_kernel = pruning.fraction_remaining(masks)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights_remaining": total,
        "layers": per_kernel,
        "config": config,
        "versions": {"lth_keras": lth_keras.__version__, "keras": keras.__version__},
        "model": keras.saving.serialize_keras_object(model),
        "shapes": {k: list(m.shape) for k, m in masks.items()},
    }
    weights, kernels, initials = _layout(model)
    metadata["kernels"] = kernels
    arrays = {f"mask/{k}": np.packbits(m.reshape(-1)) for k, m in masks.items()}
    for key, variable in weights.items():
        value = ops.convert_to_numpy(variable)
        arrays[f"final/{key}"] = (
            _pack_kernel(value, masks[kernels[key]]) if key in kernels else value
        )
    for key, initial in initials.items():
        value = ops.convert_to_numpy(initial)
        arrays[f"rewind/{key}"] = (
            _pack_kernel(value, masks[kernels[key]]) if key in kernels else value
        )
    snapshot = pruner.get_state()["snapshot"] if pruner is not None else None
    for key, value in (snapshot or {}).items():
        arrays[f"rewind/{key}"] = value
    arrays["metadata"] = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write(path, buffer.getvalue())
    return metadata


def load_ticket(path, model=None, *, weights="final"):
    """Loads a ticket file, without executing code; optionally applies it.

    Nothing in the file is trusted: see the module docstring.

    Args:
        path: A file written by `save_ticket`.
        model: A model to write the ticket into (see `Ticket.apply`).
            Defaults to `None`.
        weights: With `model`: `"final"` or `"rewind"`. Defaults to
            `"final"`.

    Returns:
        A `Ticket`.

    Raises:
        ValueError: If the file is not a ticket file of a known version, is
            damaged or malformed (the message names the field), or `model`
            does not fit it.

    Example:

    ```python
    ticket = lth_keras.load_ticket("lenet.ticket.npz", model)
    ```
    """
    try:
        arrays = read_npz(path)
        raw = arrays.pop("metadata")
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"array 'metadata' is {raw.dtype} of shape {raw.shape}, not bytes")
        metadata = json.loads(raw.tobytes().decode())
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        RecursionError,
        zipfile.BadZipFile,
        zlib.error,
    ) as error:
        raise ValueError(f"{path} is not a readable lth_keras ticket file: {error}") from error
    format_ = metadata.get("format") if isinstance(metadata, dict) else None
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if format_ != FORMAT or version != FORMAT_VERSION:
        raise ValueError(
            f"{path} is not an lth_keras ticket file of version {FORMAT_VERSION}. Received: "
            f"format={format_!r}, version={version!r}"
        )
    try:
        _check_metadata(metadata)
        masks = _unpack_masks(arrays, metadata["shapes"])
        final, rewind = _unpack_weights(arrays, metadata["kernels"], masks)
    except _Malformed as error:
        raise ValueError(
            f"{path} is not a valid lth_keras ticket file: {error}. The file is damaged or was "
            "not written by lth_keras.save_ticket; save the ticket again."
        ) from None
    except KeyError as error:
        raise ValueError(f"{path} is an incomplete lth_keras ticket file: {error!r}") from None
    ticket = Ticket(masks=masks, rewind=rewind, final=final, metadata=metadata)
    if model is not None:
        ticket.apply(model, weights)
    return ticket


class _Malformed(Exception):
    """A field of a ticket file that is not what `save_ticket` writes."""


def _expect(ok, field, expected, value):
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise _Malformed(f"metadata field `{field}` should be {expected}, found {shown}")


def _is_fraction(value):
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and 0 <= value <= 1
    )


def _check_metadata(metadata):
    """Every metadata field `save_ticket` writes, type-checked and bounded."""
    expect_mapping = {"layers", "versions", "model", "shapes", "kernels"}
    for field in sorted(expect_mapping):
        _expect(isinstance(metadata.get(field), dict), field, "a mapping", metadata.get(field))
    _expect(
        _is_fraction(metadata.get("weights_remaining")),
        "weights_remaining",
        "a number in [0, 1]",
        metadata.get("weights_remaining"),
    )
    for key, value in metadata["layers"].items():
        _expect(_is_fraction(value), f"layers[{key!r}]", "a number in [0, 1]", value)
    config = metadata.get("config")
    _expect(config is None or isinstance(config, dict), "config", "a mapping or null", config)
    model = metadata["model"]
    _expect(isinstance(model.get("class_name"), str), "model.class_name", "a string", model)
    for key, shape in metadata["shapes"].items():
        valid = isinstance(shape, list) and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        )
        _expect(valid and len(shape) <= 32, f"shapes[{key!r}]", "a list of sizes", shape)
    for key, mask in metadata["kernels"].items():
        _expect(mask in metadata["shapes"], f"kernels[{key!r}]", "a key of `shapes`", mask)


def _unpack_masks(arrays, shapes):
    masks = {}
    for key, shape in shapes.items():
        packed = arrays.pop(f"mask/{key}")
        count = math.prod(shape)
        if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != -(-count // 8):
            raise _Malformed(
                f"array 'mask/{key}' ({packed.dtype}, {packed.size} values) does not hold the "
                f"{count} bits of the shape {shape} that metadata field `shapes` declares"
            )
        masks[key] = np.unpackbits(packed, count=count).astype(bool).reshape(shape)
    return masks


def _unpack_weights(arrays, kernels, masks):
    final, rewind = {}, {}
    for name, value in arrays.items():
        kind, _, key = name.partition("/")
        if kind not in ("final", "rewind") or not key:
            raise _Malformed(f"array {name!r} is not a mask, final or rewind weight")
        target = final if kind == "final" else rewind
        mask = masks[kernels[key]] if key in kernels else None
        if mask is None:
            target[key] = value
            continue
        kept = int(np.count_nonzero(mask))
        if value.ndim != 1 or value.size != kept:
            raise _Malformed(
                f"array {name!r} holds {value.size} values of shape {value.shape}, not the "
                f"{kept} kept entries of its mask"
            )
        target[key] = _unpack_kernel(value, mask)
    return final, rewind
