"""Experiment arms: seeds from fixed keys, PFT, pruning at initialisation, R_p rows."""

import keras
import numpy as np
import pytest
from helpers import compile_model, mlp

import lth_keras
from lth_keras.experiments import arms, report
from lth_keras.experiments.config import CONTROLS
from lth_keras.experiments.overlap import OverlapTracker, overlap_key
from lth_keras.experiments.presets import preset


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


# Arms that prune at initialisation (SNIP, GraSP, SynFlow) ----------------------


def test_new_arms_have_new_seed_keys_and_old_keys_stay():
    keys = {name: arms.ARMS.get(name).key() for name in arms.ARMS.names()}
    assert keys == {
        "ticket": 0,
        "reinit": 1,
        "random": 2,
        "pft": 4,
        "shuffle": 3,
        "snip": 5,
        "grasp": 6,
        "synflow": 7,
    }
    assert {"snip", "grasp", "synflow", "shuffle"} <= set(CONTROLS)


def test_schedule_trains_controls_at_control_rounds_only():
    config = preset("lenet", rounds=3, controls=("snip", "reinit"), control_rounds=(2,))
    assert list(arms.schedule(config)) == [
        ("ticket", 0),
        ("ticket", 1),
        ("ticket", 2),
        ("snip", 2),
        ("reinit", 2),
        ("ticket", 3),
    ]


def _ticket_masks(model, keep, seed=0):
    rng = np.random.default_rng(seed)
    masks = {}
    for key, mask in lth_keras.get_masks(model).items():
        masks[key] = rng.random(mask.shape) < keep[key.split("/")[0]]
    return masks


@pytest.mark.parametrize("name", ["snip", "grasp", "synflow"])
@pytest.mark.parametrize("exclude", [(), ("out",)], ids=["all-layers", "output-excluded"])
def test_at_init_arms_keep_exactly_the_tickets_count(name, exclude, data):
    model = compile_model(mlp())
    initial = lth_keras.masks.get_kernels(model)
    ticket = _ticket_masks(model, {"fc1": 0.3, "fc2": 0.6, "out": 1.0 if exclude else 0.9})
    config = preset("lenet", exclude=exclude)
    arm = arms.ARMS.get(name)
    assert arm.needs_batch() == (name != "synflow") and arm.mask_iterations(1234) == 0
    arm.prepare(model, ticket, config, 1, batch=data)
    masks = lth_keras.get_masks(model)
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == sum(int(m.sum()) for m in ticket.values())
    if exclude:
        assert masks["out/kernel"].all()
    kernels = lth_keras.masks.get_kernels(model)
    for key, mask in masks.items():  # pruned weights zero, kept ones the initial weights
        np.testing.assert_array_equal(kernels[key], np.where(mask, initial[key], 0))
    # Global: not the ticket's per-layer counts (fc1 keeps 30% in the ticket).
    assert int(masks["fc1/kernel"].sum()) != int(ticket["fc1/kernel"].sum())


def test_snip_arm_keeps_the_highest_global_scores(data):
    model = compile_model(mlp())
    kernels = lth_keras.masks.get_kernels(model)
    full = lth_keras.get_masks(model)
    score = lth_keras.saliency.Snip(data=data)
    score.bind(model)
    scores = score.scores(kernels, full)
    ticket = _ticket_masks(model, {"fc1": 0.2, "fc2": 0.5, "out": 0.9})
    arms.ARMS.get("snip").prepare(model, ticket, preset("lenet"), 2, batch=data)
    masks = lth_keras.get_masks(model)
    kept = np.concatenate([scores[k][masks[k]] for k in masks])
    pruned = np.concatenate([scores[k][~masks[k]] for k in masks])
    assert kept.min() >= pruned.max()


def test_control_arms_cost_the_tickets_iterations():
    for name in ("reinit", "random", "shuffle", "pft"):
        assert arms.ARMS.get(name).mask_iterations(5000) == 5000
        assert not arms.ARMS.get(name).needs_batch()


@pytest.mark.slow
def test_runner_at_init_arms_match_the_tickets_count(tmp_path):
    from lth_keras.experiments import runner

    config = preset(
        "lenet",
        rounds=2,
        iterations=20,
        eval_every=10,
        train_examples=300,
        validation_examples=100,
        test_examples=100,
        controls=("snip", "grasp", "synflow"),
        control_rounds=(2,),
    )
    rows = runner.run(config, tmp_path / "run", verbose=0)
    assert [(r["round"], r["kind"]) for r in rows] == [
        (0, "ticket"),
        (1, "ticket"),
        (2, "ticket"),
        (2, "snip"),
        (2, "grasp"),
        (2, "synflow"),
    ]
    assert [r["mask_iterations"] for r in rows] == [0, 20, 40, 0, 0, 0]
    counts = {r["kind"]: r["weights_remaining"] for r in rows if r["round"] == 2}
    assert len(set(counts.values())) == 1  # the same fraction, so the same count
    assert all(r["iterations"] == 20 for r in rows)
