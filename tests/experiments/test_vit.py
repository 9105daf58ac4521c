"""The small ViT (KerasHub `ViTBackbone`): shape, masks, preset, a run and its resume."""

import sys

import numpy as np
import pytest
from helpers import layerwise_counts

import lth_keras
from lth_keras.experiments import runner as experiment
from lth_keras.experiments.models import build_model
from lth_keras.experiments.presets import PRESETS, preset

pytest.importorskip("keras_hub")

HIDDEN, MLP, LAYERS = 64, 128, 4
# Derived by hand: patch kernel 7x7x1x64 and bias; class token; 17 positions;
# per block two LayerNorms, q/k/v/output kernels 64x64 with biases, the MLP
# 64->128->64; the final LayerNorm; the 64->10 head.
BLOCK = 2 * 2 * HIDDEN + 4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * HIDDEN * MLP + MLP + HIDDEN
PARAMS = (49 * HIDDEN + HIDDEN) + HIDDEN + 17 * HIDDEN + LAYERS * BLOCK + 2 * HIDDEN + 650
GROUPS = {
    "/mha/": LAYERS * 4 * HIDDEN * HIDDEN,  # query, key, value, attention_output
    "/mlp/": LAYERS * 2 * HIDDEN * MLP,  # dense_1, dense_2
    "patch_embedding": 49 * HIDDEN,
    "output/": HIDDEN * 10,
}


def _group(key):
    return next(name for name in GROUPS if name in key)


def _prunable(model):
    with pytest.warns(UserWarning, match="class_token"):  # reported, left dense
        return lth_keras.prunable(model)


def test_vit_architecture_and_masked_kernels():
    model = build_model("vit", (28, 28, 1))
    assert model.count_params() == PARAMS == 139018
    assert model.output_shape == (None, 10)
    assert model.layers[-1].name == "output"
    model = _prunable(model)
    masks = lth_keras.get_masks(model)
    assert len(masks) == 26  # patch embedding, 4 x (4 attention + 2 MLP), head
    sizes = {}
    for key, mask in masks.items():
        sizes[_group(key)] = sizes.get(_group(key), 0) + mask.size
    assert sizes == GROUPS


def test_vit_width_scales_hidden_and_mlp():
    model = _prunable(build_model("vit", (28, 28, 1), width=0.5))
    masks = lth_keras.get_masks(model)
    assert masks["vit_encoder/transformer_block_1/mha/query/kernel"].shape == (32, 4, 8)
    assert masks["vit_encoder/transformer_block_1/mlp/dense_1/kernel"].shape == (32, 64)


def test_vit_needs_sides_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        build_model("vit", (30, 30, 1))


def test_vit_without_keras_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # `import keras_hub` fails
    with pytest.raises(ImportError, match="pip install keras-hub"):
        build_model("vit", (28, 28, 1))


def test_vit_preset_reaches_below_20_percent():
    config = PRESETS["vit"]
    assert (config.model, config.dataset, config.optimizer) == ("vit", "mnist", "adam")
    assert (config.iterations, config.batch_size, config.warmup_iterations) == (1000, 128, 100)
    left = layerwise_counts({"k": 4096}, {"k": config.rate}, config.rounds)["k"] / 4096
    assert left == pytest.approx(0.168, abs=1e-3)


TINY = dict(
    rounds=1,
    iterations=4,
    eval_every=2,
    batch_size=16,
    rewind_iteration=2,
    controls=("reinit", "random"),
    train_examples=64,
    validation_examples=32,
    test_examples=32,
    train_eval_examples=32,
    overlap_ps=(0.2,),
    jit_compile=False,
    steps_per_execution=2,
)


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_vit_runs_with_controls_late_rewind_and_resume(tmp_path, monkeypatch):
    config = preset("vit", **TINY)
    with pytest.warns(UserWarning, match="class_token"):
        reference = experiment.run(config, tmp_path / "reference", verbose=0)
    assert [(r["round"], r["kind"], r["iterations"]) for r in reference] == [
        (0, "ticket", 4),
        (1, "ticket", 2),  # from the rewind point, iteration 2
        (1, "reinit", 4),
        (1, "random", 2),
    ]
    for row in reference[1:]:
        for key, left in row["layers"].items():
            assert left == pytest.approx(0.9 if key == "output/kernel" else 0.8, abs=1e-3)
    # Killed inside the reinit control, after its first checkpoint: the rerun
    # resumes there and ends with the same rows.
    save = experiment.RunState.save_checkpoint

    def crash(self, job, *args, **kwargs):
        save(self, job, *args, **kwargs)
        if job == "reinit-r01":
            raise _Crash()

    monkeypatch.setattr(experiment.RunState, "save_checkpoint", crash)
    with pytest.raises(_Crash), pytest.warns(UserWarning):
        experiment.run(config, tmp_path / "resumed", verbose=0, checkpoint_every=1)
    monkeypatch.setattr(experiment.RunState, "save_checkpoint", save)
    with pytest.warns(UserWarning):
        resumed = experiment.run(config, tmp_path / "resumed", verbose=0, checkpoint_every=1)
    for a, b in zip(reference, resumed, strict=True):
        assert {k: v for k, v in a.items() if k != "wall_seconds"} == {
            k: v for k, v in b.items() if k != "wall_seconds"
        }
    ticket = lth_keras.load_model(tmp_path / "resumed" / "ticket.keras")
    last = np.load(tmp_path / "resumed" / "masks" / "round_01.npz")
    for key, mask in lth_keras.get_masks(ticket).items():
        np.testing.assert_array_equal(mask, last[key])
