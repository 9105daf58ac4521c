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
    gradual = preset("lenet", controls=("pft",), pft_schedule="polynomial", iterations=5000)
    gradual = gradual.replace(eval_every=500, pft_prune_fraction=0.3)
    assert arms.gradual_end(gradual) == 1500
    # The dense network's training, then the pruning span (not the ticket's rounds).
    assert arms.PruneFineTune().mask_iterations(15000, gradual, 5000) == 6500
    assert (
        arms.PruneFineTune().mask_iterations(15000, gradual.replace(pft_schedule="oneshot"))
        == 15000
    )


@pytest.mark.parametrize(
    "iterations, eval_every, fraction, end",
    [(5000, 500, 0.5, 2500), (5000, 500, 0.33, 1500), (40, 10, 0.1, 10), (40, 10, 1.0, 40)],
)
def test_gradual_end_is_a_multiple_of_eval_every(iterations, eval_every, fraction, end):
    config = preset(
        "lenet",
        controls=("pft",),
        pft_schedule="polynomial",
        pft_prune_fraction=fraction,
        iterations=iterations,
        eval_every=eval_every,
    )
    assert arms.gradual_end(config) == end


def test_gradual_pft_prunes_each_kernel_to_the_tickets_count(tmp_path, data):
    x, y = data
    trained_model = mlp()
    for variable in trained_model.trainable_variables:  # "trained" dense weights
        variable.assign(np.random.default_rng(1).normal(size=variable.shape))
    lth_keras.save_ticket(trained_model, tmp_path / "t.ticket.npz")
    trained = lth_keras.load_ticket(tmp_path / "t.ticket.npz")
    ticket = _ticket_masks(trained_model, {"fc1": 0.3, "fc2": 0.55, "out": 1.1})  # out: dense
    config = preset(
        "lenet", controls=("pft",), pft_schedule="polynomial", iterations=60, eval_every=10
    )
    pft = arms.PruneFineTune()
    assert pft.needs_trained() and pft.needs_callbacks(config)
    assert pft.trained_round(config, 3) == 0  # the dense network, whatever the round
    assert pft.early_stopping_from(config, 3) == 30
    model = compile_model(mlp())
    pft.prepare(model, ticket, config, 3, trained=trained)
    assert all(m.all() for m in lth_keras.get_masks(model).values())  # dense at the start
    for key, value in lth_keras.masks.get_kernels(model).items():
        np.testing.assert_array_equal(value, trained.final[key])
    callbacks = pft.callbacks(ticket, config, 3)
    assert len(callbacks) == 2  # fc1 and fc2; the dense output layer keeps its mask

    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(lth_keras.get_masks(self.model))

    model.fit(
        np.tile(x, (3, 1)),
        np.tile(y, 3),
        batch_size=8,
        epochs=1,
        steps_per_epoch=36,
        callbacks=[*callbacks, Watch()],
        verbose=0,
        shuffle=False,
    )
    final = lth_keras.get_masks(model)
    for key, mask in ticket.items():
        assert final[key].sum() == mask.sum()  # exactly the ticket's count
    for earlier, later in zip(seen[:-1], seen[1:], strict=True):  # masks only shrink
        assert all((later[k] <= earlier[k]).all() for k in later)
    assert all((m == seen[29][k]).all() for k, m in final.items())  # fixed from step 30 on
    # Counts at each update follow PolynomialDecay(0, s, 0, 30, frequency=10), tfmot's rule.
    size = ticket["fc1/kernel"].size
    schedule = lth_keras.pruning.PolynomialDecay(
        0.0, arms._sparsity_keeping(size, int(ticket["fc1/kernel"].sum())), 0, 30, frequency=10
    )
    for step in (10, 20, 30):
        count = lth_keras.pruning.keep_count(size, schedule.sparsity(step))
        assert seen[step - 1]["fc1/kernel"].sum() == count
    assert seen[8]["fc1/kernel"].all()  # nothing before step 10
    kernels = lth_keras.masks.get_kernels(model)
    for key, mask in final.items():
        assert (kernels[key][~mask] == 0).all()  # pruned weights exactly zero
    # Its own magnitudes chose the weights, not the ticket's mask.
    assert not (final["fc1/kernel"] == ticket["fc1/kernel"]).all()


@pytest.mark.slow
def test_runner_gradual_pft_matches_the_tickets_counts(tmp_path):
    from lth_keras.experiments import runner

    config = preset(
        "lenet",
        rounds=2,
        iterations=40,
        eval_every=10,
        train_examples=300,
        validation_examples=100,
        test_examples=100,
        controls=("pft",),
        pft_schedule="polynomial",
    )
    rows = runner.run(config, tmp_path / "run", verbose=0)
    assert [(r["round"], r["kind"]) for r in rows] == [
        (0, "ticket"),
        (1, "ticket"),
        (1, "pft"),
        (2, "ticket"),
        (2, "pft"),
    ]
    by = {(r["round"], r["kind"]): r for r in rows}
    for round_ in (1, 2):
        ticket, pft = by[round_, "ticket"], by[round_, "pft"]
        assert (
            pft["layers"] == ticket["layers"]
            and pft["weights_remaining"] == ticket["weights_remaining"]
        )
        assert pft["es_iteration"] >= 20 and pft["iterations"] == 40
        assert pft["mask_iterations"] == 40 + 20  # round 0's training and the pruning span


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


@pytest.mark.parametrize(
    "changes, rounds",
    [
        (dict(controls=("reinit", "random")), set()),
        (dict(controls=("pft",)), {0, 1, 2}),
        (dict(controls=("reinit", "pft"), control_rounds=(3,)), {2}),
        (dict(controls=("pft",), pft_schedule="polynomial"), {0}),
    ],
    ids=["no-pft", "oneshot", "control-rounds", "gradual"],
)
def test_a_round_saves_its_trained_ticket_only_when_a_control_reads_it(changes, rounds):
    from lth_keras.experiments.jobs import trained_rounds

    assert trained_rounds(preset("lenet", rounds=3, **changes)) == rounds
