"""Experiment arms: seeds from fixed keys, PFT's weights and masks, R_p rows."""

import keras
import numpy as np
import pytest
from helpers import mlp

import lth_keras
from lth_keras.experiments import arms, report
from lth_keras.experiments.config import CONTROLS, preset
from lth_keras.experiments.overlap import OverlapTracker, overlap_key


def test_controls_are_the_registered_arms():
    assert {"reinit", "random", "pft"} <= set(CONTROLS) and "ticket" not in CONTROLS


def test_seeds_come_from_fixed_keys_not_display_order():
    config = preset("lenet", seed=5)
    expected = np.random.SeedSequence([5, 3, 1]).generate_state(1)
    np.testing.assert_array_equal(arms.Reinit().seed(config, 3), expected)
    assert arms.RandomMask().key() == 2 and arms.PruneFineTune().key() == 4


def test_pft_starts_from_the_trained_weights_with_the_ticket_mask(tmp_path):
    trained_model = mlp()
    for variable in trained_model.trainable_variables:  # "trained" weights
        variable.assign(np.random.default_rng(1).normal(size=variable.shape))
    lth_keras.save_ticket(trained_model, tmp_path / "t.ticket.npz")
    trained = lth_keras.load_ticket(tmp_path / "t.ticket.npz")
    masks = {k: np.random.default_rng(2).random(m.shape) > 0.5 for k, m in trained.masks.items()}
    model = mlp()
    arms.PruneFineTune().prepare(model, masks, preset("lenet"), 1, trained=trained)
    kernels = lth_keras.masks.get_kernels(model)
    for key, mask in masks.items():
        expected = np.where(mask, trained.final[key], 0)
        np.testing.assert_array_equal(kernels[key], expected)
        np.testing.assert_array_equal(lth_keras.get_masks(model)[key], mask)
    np.testing.assert_array_equal(model.get_layer("fc1").bias.numpy(), trained.final["fc1/bias"])


def test_overlap_tracker_records_start_after_pruning(data):
    x, y = data
    model = mlp()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    tracker = OverlapTracker((0.2, 1.0))
    model.fit(x, y, epochs=2, batch_size=16, callbacks=[tracker], verbose=0)
    start = tracker.start
    values = tracker.overlaps(model)
    assert set(values) == {overlap_key(0.2), overlap_key(1.0)}
    assert values[overlap_key(1.0)] == 1.0
    expected = lth_keras.analysis.overlap_ratio(start, lth_keras.masks.get_kernels(model), 0.2)
    assert values[overlap_key(0.2)] == pytest.approx(expected)


def test_overlap_columns_and_plot(tmp_path):
    rows = [
        {
            "round": r,
            "kind": kind,
            "weights_remaining": 0.8**r,
            "layers": {},
            "iterations": 10,
            "es_iteration": 10,
            "test_accuracy_es": 0.9,
            "test_accuracy_final": 0.9,
            "val_loss_min": 0.1,
            "val_accuracy_es": 0.9,
            "train_accuracy": 0.9,
            "wall_seconds": 1.0,
            "overlap@0.1": 0.3,
            "overlap@0.5": 0.6,
        }
        for r in range(3)
        for kind in (["ticket"] if r == 0 else ["ticket", "reinit", "pft"])
    ]
    header = report.csv_text(rows).splitlines()[0].split(",")
    assert header[header.index("wall_seconds") + 1 : header.index("wall_seconds") + 3] == [
        "overlap@0.1",
        "overlap@0.5",
    ]
    summary = report.summarize([rows, rows])
    assert summary[0]["overlap@0.5"] == 0.6 and summary[0]["overlap@0.5_min"] == 0.6
    report.plot_overlap(summary, tmp_path / "overlap.png")
    assert (tmp_path / "overlap.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="without R_p values"):
        report.plot_overlap([{k: v for k, v in rows[0].items() if "@" not in k}], tmp_path / "x")
