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
"""

import dataclasses
import io
import json
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
        model = keras.saving.deserialize_keras_object(self.metadata["model"], safe_mode=safe_mode)
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

    Args:
        path: A file written by `save_ticket`.
        model: A model to write the ticket into (see `Ticket.apply`).
            Defaults to `None`.
        weights: With `model`: `"final"` or `"rewind"`. Defaults to
            `"final"`.

    Returns:
        A `Ticket`.

    Raises:
        ValueError: If the file is not a ticket file of a known version, or
            `model` does not fit it.

    Example:

    ```python
    ticket = lth_keras.load_ticket("lenet.ticket.npz", model)
    ```
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        metadata = json.loads(arrays.pop("metadata").tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{path} is not a readable lth_keras ticket file: {error}") from error
    if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} is not an lth_keras ticket file of version {FORMAT_VERSION}. Received: "
            f"format={metadata.get('format')!r}, version={metadata.get('format_version')!r}"
        )
    try:
        masks = {}
        for key, shape in metadata["shapes"].items():
            bits = np.unpackbits(arrays.pop(f"mask/{key}"), count=int(np.prod(shape)))
            masks[key] = bits.astype(bool).reshape(shape)
        final, rewind = {}, {}
        for name, value in arrays.items():
            kind, key = name.split("/", 1)
            target = final if kind == "final" else rewind
            kernel_mask = metadata["kernels"].get(key)
            target[key] = (
                value if kernel_mask is None else _unpack_kernel(value, masks[kernel_mask])
            )
    except (KeyError, ValueError) as error:
        raise ValueError(f"{path} is an incomplete lth_keras ticket file: {error!r}") from error
    ticket = Ticket(masks=masks, rewind=rewind, final=final, metadata=metadata)
    if model is not None:
        ticket.apply(model, weights)
    return ticket
