"""Sparsity schedules (tfmot's semantics) and gradual pruning inside one `fit`."""

import keras
import numpy as np
import pytest
from helpers import compile_model, numpy

import lth_keras
from lth_keras.pruning import ConstantSparsity, PolynomialDecay, Rounds, keep_count


def _tfmot_polynomial(step, initial, final, begin, end, power):
    """tfmot's PolynomialDecay, written out from its source in float32."""
    f = np.float32
    p = min(f(1.0), max(f(0.0), f(step - begin) / f(end - begin)))
    return f((f(initial) - f(final)) * (f(1.0) - p) ** f(power) + f(final))


def _tfmot_should_prune(step, begin, end, frequency):
    return step >= begin and (step <= end or end < 0) and (step - begin) % frequency == 0


@pytest.mark.parametrize(
    "initial, final, begin, end, power, frequency",
    [(0.5, 0.8, 0, 938, 3, 100), (0.0, 0.9, 100, 2000, 2, 50), (0.2, 0.5, 7, 8, 1, 1)],
)
def test_polynomial_decay_matches_tfmot_at_every_step(initial, final, begin, end, power, frequency):
    schedule = PolynomialDecay(initial, final, begin, end, power=power, frequency=frequency)
    for step in range(0, end + 300):
        should, sparsity = schedule(step)
        assert should == _tfmot_should_prune(step, begin, end, frequency), step
        assert np.float32(sparsity) == _tfmot_polynomial(step, initial, final, begin, end, power)


def test_hand_derived_values():
    schedule = PolynomialDecay(0.5, 0.8, begin_step=0, end_step=1000)
    assert schedule(0) == (True, 0.5)
    assert round(schedule(500)[1], 6) == 0.7625  # 0.8 - 0.3 * 0.5 ** 3
    assert schedule(1000) == (True, pytest.approx(0.8))
    assert schedule(1100) == (False, pytest.approx(0.8))  # past end_step: no more updates
    assert schedule(250)[0] is False  # not a multiple of 100 from begin_step
    constant = ConstantSparsity(0.6, begin_step=10, frequency=5)
    assert [constant(s)[0] for s in (5, 10, 12, 15, 10**6)] == [False, True, False, True, True]
    assert constant.last_step() is None and schedule.last_step() == 1000


def test_keep_count_is_tfmots_rule():
    assert keep_count(10, 0.25) == 8  # 7.5 rounds half to even
    assert keep_count(10, 0.35) == 6  # 6.5 likewise
    assert keep_count(10, 0.5) == 5
    assert keep_count(3, 0.9) == 1  # at least one weight
    assert keep_count(784 * 300, 0.8) == 47040


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PolynomialDecay(0.5, 1.0, 0, 10), "final_sparsity=1.0"),
        (lambda: PolynomialDecay(0.5, 0.8, 10, 5), "end_step"),
        (lambda: PolynomialDecay(0.5, 0.8, 0, -1), "end_step"),
        (lambda: ConstantSparsity(0.5, 0, frequency=0), "frequency"),
        (lambda: ConstantSparsity(0.5, -1), "begin_step"),
        (lambda: PolynomialDecay(0.5, 0.8, 0, 10, power="3"), "power"),
        (lambda: Rounds(max_rounds=0), "max_rounds"),
    ],
    ids=["sparsity", "end-before-begin", "no-end", "frequency", "begin", "power", "rounds"],
)
def test_invalid_schedules_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_schedules_round_trip_their_configs():
    for schedule in (
        PolynomialDecay(0.1, 0.7, 3, 90, 2, 7),
        ConstantSparsity(0.3, 5),
        Rounds(2, 3),
    ):
        again = type(schedule).from_config(schedule.get_config())
        assert again == schedule and again.get_config() == schedule.get_config()
        assert lth_keras.pruning.get_schedule(schedule) is schedule


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(32, activation="relu", name="fc1"),
            keras.layers.Dense(16, activation="relu", name="fc2"),
            keras.layers.Dense(3, name="out"),
        ]
    )
    return compile_model(lth_keras.prunable(model), keras.optimizers.Adam(1e-2))


class Watch(keras.callbacks.Callback):
    """After every batch: masks only shrink and pruned weights are exactly zero."""

    def __init__(self):
        super().__init__()
        self.masks, self.batches, self.traces = None, 0, None

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        masks = lth_keras.get_masks(self.model)
        for key, value in lth_keras.masks.get_kernels(self.model).items():
            assert np.all(value[~masks[key]] == 0), key
            if self.masks is not None:
                assert not np.any(masks[key] & ~self.masks[key]), key
        self.masks = masks


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_gradual_pruning_reaches_exact_counts_inside_one_fit(data, scope):
    x, y = data
    model = _model()
    schedule = PolynomialDecay(0.5, 0.8, begin_step=0, end_step=24, frequency=6)
    pruner = lth_keras.LotteryPruner(schedule=schedule, scope=scope)
    watch = Watch()
    model.fit(x, y, batch_size=8, epochs=3, callbacks=[pruner, watch], verbose=0)  # 36 steps
    updates = pruner.history[-1]["updates"]
    assert [u["step"] for u in updates] == [6, 12, 18, 24]  # tfmot's steps count from 1
    masks = lth_keras.get_masks(model)
    sparsity = schedule.sparsity(24)
    if scope == "layerwise":
        for key, mask in masks.items():
            assert mask.sum() == keep_count(mask.size, sparsity), key
    else:
        size = sum(m.size for m in masks.values())
        assert sum(m.sum() for m in masks.values()) == keep_count(size, sparsity)
    assert watch.batches == 36
    assert pruner.round == 0 and len(pruner.history) == 1  # no rounds, no resets


def test_gradual_pruning_traces_once_and_resumes(data):
    x, y = data
    model = _model()
    schedule = ConstantSparsity(0.6, begin_step=4, frequency=4)
    pruner = lth_keras.LotteryPruner(schedule=schedule)
    model.fit(x, y, batch_size=16, epochs=1, callbacks=[pruner], verbose=0)
    function = model.train_function
    model.fit(x, y, batch_size=16, epochs=1, callbacks=[pruner], verbose=0)
    assert model.train_function is function  # masks changed between steps, no retrace
    state = pruner.get_state()
    resumed = lth_keras.LotteryPruner(schedule=schedule)
    resumed.set_state(state)
    assert resumed.get_state()["gradual"] == state["gradual"]
    assert [u["step"] for u in state["gradual"]["updates"]] == [4, 8, 12]


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras' torch trainer refuses steps_per_execution > 1",
)
def test_steps_per_execution_updates_at_the_call_that_holds_the_step(data):
    x, y = data
    model = _model()
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=4,
    )
    schedule = ConstantSparsity(0.5, begin_step=6, frequency=100)
    pruner = lth_keras.LotteryPruner(schedule=schedule)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[pruner], verbose=0)
    (update,) = pruner.history[-1]["updates"]
    assert update["step"] == 6  # due in the call of steps 5-8, applied at its start
    for mask in lth_keras.get_masks(model).values():
        assert mask.sum() == keep_count(mask.size, 0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reset": "rewind"},
        {"max_rounds": 3},
        {"rewind_iteration": 5},
        {"early_bird": True},
    ],
    ids=["reset", "rounds", "rewind", "early-bird"],
)
def test_gradual_pruning_refuses_round_options(kwargs):
    with pytest.raises(ValueError, match="With a step schedule"):
        lth_keras.LotteryPruner(schedule=ConstantSparsity(0.5, 0), **kwargs)


def test_rounds_schedule_is_the_default(data):
    x, y = data
    histories = []
    for pruner in (
        lth_keras.LotteryPruner(rate=0.3, max_rounds=2),
        lth_keras.LotteryPruner(rate=0.3, schedule=Rounds(max_rounds=2)),
    ):
        model = _model()
        for _ in range(4):
            model.fit(x, y, batch_size=16, epochs=1, callbacks=[pruner], verbose=0)
        histories.append([h["weights_remaining"] for h in pruner.history])
        assert pruner.max_rounds == 2
    assert histories[0] == histories[1] and len(histories[0]) == 3
    with pytest.raises(ValueError, match="not both"):
        lth_keras.LotteryPruner(max_rounds=3, schedule=Rounds(max_rounds=2))


def test_newly_pruned_entries_get_a_fresh_optimizer_state(data):
    x, y = data
    model = _model()
    pruner = lth_keras.LotteryPruner(schedule=ConstantSparsity(0.5, begin_step=6, frequency=100))
    model.fit(x, y, batch_size=16, epochs=1, callbacks=[pruner], verbose=0)
    optimizer, masks = model.optimizer, lth_keras.get_masks(model)
    for key, _, weight in lth_keras.masks.prunable_entries(model):
        slots = lth_keras._compat.optimizer_slots(optimizer, weight.variable)
        assert len(slots) == 2  # Adam's momentum and velocity
        for slot in slots:
            value = numpy(slot)
            # Pruned at step 6: its state restarted then and its gradient is 0 since.
            assert np.all(value[~masks[key]] == 0), (key, slot.name)
            assert np.any(value[masks[key]] != 0), (key, slot.name)
