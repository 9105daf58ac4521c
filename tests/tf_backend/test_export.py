"""SavedModel and TFLite exports of tickets."""

import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import lth_keras
from lth_keras import pruning
from lth_keras.experiments.models import build_model
from lth_keras.tensorflow import export


@pytest.fixture(scope="module")
def ticket():
    model = lth_keras.prunable(build_model("conv2", (16, 16, 3)))
    masks = lth_keras.get_masks(model)
    kernels = lth_keras.masks.get_kernels(model)
    lth_keras.set_masks(model, pruning.magnitude_prune(kernels, masks, {k: 0.9 for k in masks}))
    return model


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(0).normal(size=(5, 16, 16, 3)).astype("float32")


def _saved_variables(path):
    return {
        name: shape
        for name, shape in tf.train.list_variables(os.path.join(path, "variables", "variables"))
        if "OBJECT_GRAPH" not in name
    }


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_saved_model_serves_the_ticket(ticket, inputs, sparse, tmp_path):
    info = export.export_ticket(ticket, tmp_path / "conv2", sparse=sparse)
    assert info["path"] == str(tmp_path / "conv2" / "1") and info["version"] == 1
    assert info["signature"] == {
        "name": "serving_default",
        "inputs": ["inputs"],
        "outputs": ["outputs"],
    }
    assert info["weights_remaining"] == pytest.approx(0.1, abs=1e-3)
    assert os.path.exists(os.path.join(info["path"], "saved_model.pb"))
    serve = tf.saved_model.load(info["path"]).signatures["serving_default"]
    outputs = serve(inputs=tf.constant(inputs))["outputs"].numpy()
    np.testing.assert_allclose(outputs, ticket.predict(inputs, verbose=0), rtol=1e-5, atol=1e-5)
    # Only the effective weights are saved: no masks, no initial weights.
    variables = _saved_variables(info["path"])
    stored = sum(int(np.prod(shape)) for shape in variables.values())
    plain_params = lth_keras.strip_masks(ticket).count_params()
    if sparse:
        kept = sum(int(m.sum()) for m in lth_keras.get_masks(ticket).values())
        kernel_params = sum(m.size for m in lth_keras.get_masks(ticket).values())
        assert stored == plain_params - kernel_params + 2 * kept  # values + positions
    else:
        assert stored == plain_params  # each weight once
    with open(os.path.join(info["path"], "saved_model.pb"), "rb") as f:
        graph = f.read()
    assert b"lth_keras" not in graph and b"Masked" not in graph
    assert b"kernel_mask" not in graph and b"_initial" not in graph
    with open(os.path.join(info["path"], "assets.extra", "lth_keras.json")) as f:
        assert json.load(f)["sparse"] is sparse


def test_exported_pruned_entries_are_exactly_zero(ticket, tmp_path):
    info = export.export_ticket(ticket, tmp_path / "m")
    reader = tf.train.load_checkpoint(os.path.join(info["path"], "variables", "variables"))
    stored = [reader.get_tensor(name) for name in _saved_variables(info["path"])]
    for mask in lth_keras.get_masks(ticket).values():
        (kernel,) = [v for v in stored if v.shape == mask.shape]
        np.testing.assert_array_equal(kernel[~mask], 0)
        assert np.all(kernel[mask] != 0)


def test_saved_model_cli_lists_the_signature(ticket, tmp_path):
    info = export.export_ticket(ticket, tmp_path / "m")
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorflow.python.tools.saved_model_cli",
            "show",
            "--dir",
            info["path"],
            "--all",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "signature_def['serving_default']" in shown
    assert "inputs['inputs'] tensor_info" in shown
    assert "outputs['outputs'] tensor_info" in shown
    assert "shape: (-1, 16, 16, 3)" in shown


def test_versions_overwrite_and_atomicity(ticket, tmp_path, monkeypatch):
    base = tmp_path / "m"
    assert export.export_ticket(ticket, base)["version"] == 1
    assert export.export_ticket(ticket, base)["version"] == 2
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.export_ticket(ticket, base, version=1)
    assert export.export_ticket(ticket, base, version=1, overwrite=True)["version"] == 1
    with pytest.raises(ValueError, match="version=0"):
        export.export_ticket(ticket, base, version=0)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_ticket(ticket, base, version=3)
    assert sorted(os.listdir(base)) == ["1", "2"]  # nothing half-written


def test_tflite_matches_keras(ticket, inputs, tmp_path):
    dense = export.export_tflite(ticket, tmp_path / "dense.tflite", sparse=False)
    sparse = export.export_tflite(ticket, tmp_path / "sparse.tflite")
    assert sparse["bytes"] < 0.35 * dense["bytes"]
    with pytest.raises(FileExistsError):
        export.export_tflite(ticket, tmp_path / "dense.tflite")
    outputs = _tflite_outputs(_interpreter(tmp_path / "sparse.tflite"), inputs)
    np.testing.assert_allclose(outputs, ticket.predict(inputs, verbose=0), rtol=1e-5, atol=1e-5)


def _interpreter(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter is deprecated for LiteRT
        return tf.lite.Interpreter(model_path=str(path))


def _tflite_outputs(interpreter, inputs):
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], inputs.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_compact_export_serves_a_smaller_model(inputs, tmp_path):
    model = lth_keras.prunable(build_model("conv2", (16, 16, 3)))
    kernels = lth_keras.masks.get_kernels(model)
    masks = lth_keras.get_masks(model)
    targets = pruning.PruneTargets(
        {k: 0.5 for k in masks},
        layouts={k: pruning.KernelLayout(-2, -1, is_output=k.startswith("output")) for k in masks},
    )
    scores = {k: np.abs(v) for k, v in kernels.items()}
    lth_keras.set_masks(model, pruning.Units().select(scores, masks, targets))
    info = export.export_ticket(model, tmp_path / "c", compact=True)
    with open(os.path.join(info["path"], "assets.extra", "lth_keras.json")) as f:
        assert json.load(f)["compact"] is True
    serve = tf.saved_model.load(info["path"]).signatures["serving_default"]
    outputs = serve(inputs=tf.constant(inputs))["outputs"].numpy()
    np.testing.assert_allclose(outputs, model.predict(inputs, verbose=0), rtol=1e-4, atol=1e-4)
    stored = sum(int(np.prod(s)) for s in _saved_variables(info["path"]).values())
    assert stored < 0.5 * lth_keras.strip_masks(model).count_params()
    with pytest.raises(ValueError, match="choose one"):
        export.export_ticket(model, tmp_path / "d", compact=True, sparse=True)
    assert not os.path.exists(tmp_path / "d")


def test_block_sparse_tflite_runs_sparse_kernels(tmp_path, capsys):
    """1x4 blocks along the input axis are stored as TFLite block sparsity, not densified."""
    model = lth_keras.prunable(
        keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(8)]
        )
    )
    rng = np.random.default_rng(0)
    masks = {}
    for key, mask in lth_keras.get_masks(model).items():
        blocks = rng.random((mask.shape[0] // 4, mask.shape[1])) < 0.15  # keep 15% of blocks
        masks[key] = np.repeat(blocks, 4, axis=0)
    lth_keras.set_masks(model, masks)
    path = tmp_path / "blocks.tflite"
    export.export_tflite(model, path)
    interpreter = _interpreter(path)
    blocked = [
        t["sparsity_parameters"]
        for t in interpreter.get_tensor_details()
        if t.get("sparsity_parameters") and len(t["sparsity_parameters"]["block_map"])
    ]
    assert len(blocked) == 2
    assert all(p["dim_metadata"][-1]["dense_size"] == 4 for p in blocked)
    tf.lite.experimental.Analyzer.analyze(model_path=str(path))
    ops = capsys.readouterr().out
    assert "FULLY_CONNECTED" in ops and "DENSIFY" not in ops
    inputs = rng.normal(size=(3, 64)).astype("float32")
    outputs = _tflite_outputs(interpreter, inputs)
    np.testing.assert_allclose(outputs, model.predict(inputs, verbose=0), rtol=1e-5, atol=1e-5)


class _Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu", name="hidden")
        self.out = keras.layers.Dense(3, name="out")

    def call(self, x):  # no `training` argument, as many users write it
        return self.out(self.hidden(x))


def test_a_subclassed_model_exports_with_an_input_signature(tmp_path):
    model = _Net()
    x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    model(x)
    lth_keras.prunable(model)
    masks = {
        k: np.random.default_rng(1).random(m.shape) > 0.7
        for k, m in lth_keras.get_masks(model).items()
    }
    lth_keras.set_masks(model, masks)
    with pytest.raises(ValueError, match="pass `input_signature=`"):
        export.export_ticket(model, tmp_path / "none")
    assert not (tmp_path / "none").exists()
    spec = tf.TensorSpec((None, 8), tf.float32)
    info = export.export_ticket(model, tmp_path / "net", input_signature=spec, sparse=True)
    serve = tf.saved_model.load(info["path"]).signatures["serving_default"]
    np.testing.assert_allclose(serve(inputs=x)["outputs"].numpy(), model(x).numpy(), rtol=1e-5)
    saved = _saved_variables(info["path"])
    assert not any("mask" in name or "initial" in name for name in saved)
    assert lth_keras.masked_layers(model)  # the model keeps its masks
    lite = export.export_tflite(model, tmp_path / "net.tflite", input_signature=spec)
    interpreter = tf.lite.Interpreter(model_path=lite["path"])
    runner = interpreter.get_signature_runner()
    out = runner(inputs=x[:1])["outputs"]
    np.testing.assert_allclose(out, model(x[:1]).numpy(), rtol=1e-4, atol=1e-5)


def test_a_keras_hub_model_exports(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=40,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=8,
    )
    model = keras.Model(
        backbone.input, keras.layers.Dense(2, name="head")(backbone.output["pooled_output"])
    )
    lth_keras.prunable(model)
    masks = {
        k: np.random.default_rng(1).random(m.shape) > 0.5
        for k, m in lth_keras.get_masks(model).items()
    }
    lth_keras.set_masks(model, masks)
    tokens = np.random.default_rng(0).integers(1, 40, (2, 8)).astype("int32")
    x = {
        "token_ids": tokens,
        "segment_ids": np.zeros_like(tokens),
        "padding_mask": np.ones_like(tokens),
    }
    info = export.export_ticket(model, tmp_path / "bert")
    serve = tf.saved_model.load(info["path"]).signatures["serving_default"]
    out = serve(**{name: tf.constant(x[name]) for name in info["signature"]["inputs"]})["outputs"]
    np.testing.assert_allclose(out.numpy(), model(x).numpy(), rtol=1e-4, atol=1e-5)
    assert info["weights_remaining"] < 0.6
