"""Exporting tickets for serving: SavedModels for TF Serving, and TFLite (TF only).

`export_ticket` writes `export_dir/<version>/` in the layout TF Serving loads,
with one `serving_default` signature. A model with one input and one output
takes `inputs` and returns `outputs`; with several, the keys are the Keras
input and output names. The graph holds plain TensorFlow ops and only the
effective weights (`kernel * mask` and the other weights): no lth_keras
classes, masks or initial weights. `sparse=True` stores every masked kernel as
the values of its unpruned entries plus their int32 positions, rebuilt into
the dense kernel at each call: much smaller on disk, slower per call
(`benchmarks/export_size_latency.py` measures both).

`export_tflite` converts a ticket with TFLite's sparsity optimisation, which
stores sparse weights in a sparse format.

Exports are written to a temporary folder and renamed into place, so a
failed export leaves nothing half-written; an existing version or file is
only replaced with `overwrite=True`. `assets.extra/lth_keras.json` in each
SavedModel version records the exported sparsity and signature names.
"""

import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from lth_keras import _compat, pruning
from lth_keras import masks as masks_lib
from lth_keras._io import atomic_write

__all__ = ["export_ticket", "export_tflite", "next_version"]


def next_version(export_dir):
    """The version after the largest integer version folder (1 if none).

    Example:

    ```python
    next_version("exports/lenet")  # 3 when 1/ and 2/ exist
    ```
    """
    if not os.path.isdir(export_dir):
        return 1
    versions = [int(name) for name in os.listdir(export_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def _signature(model, input_signature=None):
    """Input specs and the names of the serving signature's inputs and outputs."""
    if input_signature is not None:
        specs = (
            list(input_signature)
            if isinstance(input_signature, (list, tuple))
            else [input_signature]
        )
        if not all(isinstance(s, tf.TensorSpec) for s in specs):
            raise ValueError(
                "Received an invalid `input_signature`, expected a tf.TensorSpec or a list of "
                f"them. Received: input_signature={input_signature!r}"
            )
        names = (
            ["inputs"] if len(specs) == 1 else [s.name or f"input_{i}" for i, s in enumerate(specs)]
        )
        specs = [tf.TensorSpec(s.shape, s.dtype, name=n) for s, n in zip(specs, names, strict=True)]
        outputs = getattr(model, "outputs", None) or [None]
        output_names = (
            ["outputs"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
        )
        return specs, names, output_names
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs:
        raise ValueError(
            "export needs the model's inputs: a Sequential model with keras.Input or a "
            "functional model has them; for a subclassed model pass `input_signature=` "
            "(e.g. tf.TensorSpec((None, 784), tf.float32)). Received a model without `inputs`."
        )
    input_names = ["inputs"] if len(inputs) == 1 else [t.name for t in inputs]
    output_names = ["outputs"] if len(model.outputs) == 1 else list(model.output_names)
    specs = [
        tf.TensorSpec(t.shape, t.dtype, name=n) for t, n in zip(inputs, input_names, strict=True)
    ]
    return specs, input_names, output_names


def _serving_function(specs, output_names, call, structure=None):
    """A tf.function with named keyword inputs and a dict of named outputs.

    `structure` is the model's `input` (a dict for a functional model built
    from a dict of inputs, as KerasHub's are): the flat inputs are packed
    into it.
    """

    def serve(*args):
        if isinstance(structure, dict):
            inputs = keras.tree.pack_sequence_as(structure, list(args))
        else:
            inputs = args[0] if len(args) == 1 else list(args)
        outputs = call(inputs)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return dict(zip(output_names, outputs, strict=True))

    return tf.function(serve, input_signature=specs)


class _Serving(tf.Module):
    """The model's weights as plain `tf.Variable`s, for `model.stateless_call`.

    Kernels in `compact_kernels` are held as values and positions and
    rebuilt at each call. The Keras model is kept in a closure, not as an
    attribute, so its own variables are not saved: each weight is stored
    exactly once (Keras' ExportArchive stores every weight twice, keras-team/
    keras#23553), and TFLite can freeze them. A model with masks is served
    as it is: its masked kernels are saved as `where(mask, kernel, 0)`, and
    its masks and initial copies, which inference does not read, are given
    to the call as generated tensors, never saved.
    """

    def __init__(self, model, compact_kernels, masks=None, internal=()):
        super().__init__()
        self._layout = []
        self.values, self.positions, self.dense = [], [], []
        masks = masks or {}
        for variable in model.trainable_variables + model.non_trainable_variables:
            if id(variable) in internal:
                spec = (tuple(variable.shape), str(variable.dtype))
                self._layout.append(("generated", spec, None))
                continue
            value = ops.convert_to_numpy(variable)
            if id(variable) in masks:
                value = np.where(masks[id(variable)], value, 0).astype(value.dtype)
            if id(variable) in compact_kernels:
                flat = value.reshape(-1)
                keep = np.flatnonzero(compact_kernels[id(variable)].reshape(-1))
                self.values.append(tf.Variable(flat[keep], trainable=False))
                self.positions.append(tf.Variable(keep.astype(np.int32), trainable=False))
                self._layout.append(("sparse", len(self.values) - 1, value.shape))
            else:
                self.dense.append(tf.Variable(value, trainable=False))
                self._layout.append(("dense", len(self.dense) - 1, value.shape))
        self._trainable_count = len(model.trainable_variables)
        state = {"model": model}
        self.call = lambda inputs: self._forward(state["model"], inputs)

    def _forward(self, model, inputs):
        values = []
        for kind, index, shape in self._layout:
            if kind == "generated":
                values.append(tf.zeros(index[0], dtype=index[1]))
            elif kind == "dense":
                values.append(self.dense[index])
            else:
                size = int(np.prod(shape))
                flat = tf.scatter_nd(self.positions[index][:, None], self.values[index], [size])
                values.append(tf.reshape(flat, shape))
        outputs, _ = model.stateless_call(
            values[: self._trainable_count],
            values[self._trainable_count :],
            inputs,
            **_compat.inference_kwargs(model),
        )
        return outputs


def _replace_dir(tmp, target, overwrite):
    if os.path.exists(target):
        if not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True to replace it.")
        trash = f"{target}.old-{os.getpid()}"
        os.rename(target, trash)
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(trash, target)  # the old version stays in place
            raise
        shutil.rmtree(trash)
    else:
        os.rename(tmp, target)


def _masked_state(model):
    """`(masks by key, masks by id of the kernel, ids of masks and initial copies)`."""
    masks, by_variable, internal = {}, {}, set()
    for key, _, weight in masks_lib.prunable_entries(model):
        mask = ops.convert_to_numpy(weight.mask) != 0
        masks[key] = mask
        by_variable[id(weight.variable)] = mask
    for layer in masks_lib.masked_layers(model):
        for weight in layer.get_lottery_weights():
            internal.update(id(v) for v in (weight.mask, weight.initial) if v is not None)
    return masks, by_variable, internal


def export_ticket(
    model,
    export_dir,
    version=None,
    *,
    sparse=False,
    compact=False,
    overwrite=False,
    input_signature=None,
):
    """Exports a ticket as a SavedModel for TF Serving (see the module docstring).

    Args:
        model: A built model, masked or plain: Sequential, functional,
            subclassed (give `input_signature`), KerasHub.
        export_dir: The model's base folder; the export goes to
            `export_dir/<version>/`.
        version: A positive int. Defaults to `None`, meaning
            `next_version(export_dir)`.
        sparse: Store masked kernels compactly (values and positions).
            Defaults to `False`.
        compact: Serve `lth_keras.compact(model)`: dead units and channels
            physically removed, a smaller dense model that is faster to
            serve (with `structure="units"` tickets most of all). Not
            combined with `sparse`. Defaults to `False`.
        overwrite: Replace an existing version. Defaults to `False`.
        input_signature: A `tf.TensorSpec` or a list of them, for a model
            without `inputs` (subclassed). Defaults to `None`: the model's
            `inputs`.

    Returns:
        A dict with `path`, `version`, `signature` (`inputs`, `outputs`),
        `sparse`, `compact`, `weights_remaining` and `layers` (fraction per
        kernel, of the ticket).

    Raises:
        FileExistsError: If the version exists and `overwrite` is `False`.
        ValueError: If `version` is not a positive int, the model has no
            known inputs, `sparse` and `compact` are both set, or `compact`
            meets a topology it does not support. Nothing is written in any
            of these cases.

    Example:

    ```python
    from lth_keras.tensorflow import export

    info = export.export_ticket(model, "exports/lenet")
    # tensorflow_model_server --model_base_path=$PWD/exports/lenet ...
    ```
    """
    if version is None:
        version = next_version(export_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            "Received an invalid value for `version`, expected a positive int. "
            f"Received: version={version!r}"
        )
    target = os.path.join(export_dir, str(version))
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it.")
    if sparse and compact:
        raise ValueError(
            "Received sparse=True and compact=True; choose one: `compact` removes dead units "
            "(a smaller dense model), `sparse` stores kernels as values and positions."
        )
    masks, by_variable, internal = _masked_state(model)
    total, per_kernel = pruning.fraction_remaining(masks)
    served = model
    if compact:
        from lth_keras.compact import compact as compact_model

        served, by_variable, internal = compact_model(model), {}, set()
    specs, input_names, output_names = _signature(served, input_signature)
    info = {
        "version": version,
        "signature": {"name": "serving_default", "inputs": input_names, "outputs": output_names},
        "sparse": bool(sparse),
        "compact": bool(compact),
        "weights_remaining": total,
        "layers": per_kernel,
    }
    os.makedirs(export_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=export_dir, prefix=f".tmp-{version}-")
    try:
        module = _Serving(served, by_variable if sparse else {}, by_variable, internal)
        structure = getattr(served, "input", None) if input_signature is None else None
        serve = _serving_function(specs, output_names, module.call, structure)
        tf.saved_model.save(module, tmp, signatures={"serving_default": serve})
        atomic_write(
            os.path.join(tmp, "assets.extra", "lth_keras.json"), json.dumps(info, indent=2).encode()
        )
        _replace_dir(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": target, **info}


def export_tflite(model, path, *, sparse=True, overwrite=False, input_signature=None):
    """Converts a ticket to TFLite, with the converter's sparsity optimisation.

    Args:
        model: A built model, masked or plain (see `export_ticket`).
        path: Destination `.tflite` file.
        sparse: Enable `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`, which
            stores sparse weight tensors in a sparse format. Defaults to
            `True`.
        overwrite: Replace an existing file. Defaults to `False`.
        input_signature: As for `export_ticket`. Defaults to `None`.

    Returns:
        A dict with `path`, `bytes`, `sparse` and `weights_remaining`.

    Raises:
        FileExistsError: If `path` exists and `overwrite` is `False`.

    Example:

    ```python
    from lth_keras.tensorflow import export

    export.export_tflite(model, "lenet.tflite")
    interpreter = tf.lite.Interpreter(model_path="lenet.tflite")
    ```
    """
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    with tempfile.TemporaryDirectory() as tmp:
        info = export_ticket(model, tmp, version=1, input_signature=input_signature)
        converter = tf.lite.TFLiteConverter.from_saved_model(info["path"])
        if sparse:
            converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        flatbuffer = converter.convert()
    atomic_write(path, flatbuffer)
    return {
        "path": path,
        "bytes": len(flatbuffer),
        "sparse": sparse,
        "weights_remaining": info["weights_remaining"],
    }
