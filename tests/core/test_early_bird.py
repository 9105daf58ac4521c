"""Early-bird tickets: the mask distance, the rule, and rounds that end early."""

import json
import math

import keras
import numpy as np
import pytest
from helpers import compile_model, mlp, stored

import lth_keras
from lth_keras.pruning import EarlyBird, mask_distance

# A single 2x4 kernel; at rate 0.5 magnitude pruning keeps the four largest.
A = np.array([[8, 7, 6, 5], [4, 3, 2, 1]], "float32")  # keeps row 0
B = np.array([[8, 7, 6, 1], [5, 4, 3, 2]], "float32")  # 2 of 8 differ from A
C = np.array([[8, 7, 1, 2], [6, 5, 4, 3]], "float32")  # 4 differ from A, 2 from B
MASK_C = C >= 5


@pytest.mark.parametrize(
    "a, b, where, expected",
    [
        ([1, 1, 0, 0], [1, 1, 0, 0], None, 0.0),
        ([1, 1, 0, 0], [1, 0, 1, 0], None, 0.5),
        ([1, 1, 1, 0, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0, 0, 0], None, 0.25),
        ([1, 1, 0, 0], [0, 0, 1, 1], None, 1.0),
        ([1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], 0.5),
        ([1, 1, 0, 0], [1, 1, 0, 1], [1, 1, 0, 0], 0.0),
        ([1, 0], [0, 1], [0, 0], 0.0),
    ],
    ids=["same", "half", "quarter", "all", "where-half", "where-ignores", "nothing-counts"],
)
def test_mask_distance(a, b, where, expected):
    a, b = np.array(a, bool), np.array(b, bool)
    where = None if where is None else np.array(where, bool)
    assert mask_distance(a, b, where) == expected


def test_mask_distance_pools_kernels():
    a = {"x": np.array([True, False]), "y": np.ones((2, 3), bool)}
    b = {"x": np.array([False, False]), "y": np.ones((2, 3), bool)}
    assert mask_distance(a, b) == 1 / 8
    with pytest.raises(ValueError, match="different sizes"):
        mask_distance(np.ones(3, bool), np.ones(4, bool))


def test_rule_compares_the_last_window_masks():
    rule = EarlyBird(window=3, threshold=0.1)
    masks = {"k": np.ones((2, 4), bool)}
    recent, seen = [], []
    for kernel in (A, B, C, C, C):
        candidate = {"k": kernel >= 5}
        recent, distances, drawn = rule.observe(recent, candidate, masks)
        seen.append((distances, drawn))
        assert len(recent) <= 2
    assert seen == [
        ([], False),
        ([0.25], False),
        ([0.5, 0.25], False),
        ([0.25, 0.0], False),
        ([0.0, 0.0], True),
    ]
    # Only entries unpruned when the round began count: 2 of 4, not of 8.
    round_masks = {"k": np.array([[True] * 4, [False] * 4])}
    previous = {"k": np.array([[True, True, False, False], [False] * 4])}
    candidate = {"k": np.array([[True, False, True, False], [False] * 4])}
    recent, _, _ = rule.observe([], previous, round_masks)
    assert rule.observe(recent, candidate, round_masks)[1] == [0.5]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"window": 1}, "window=1"),
        ({"window": 2.0}, "window=2.0"),
        ({"threshold": 1.5}, "threshold=1.5"),
        ({"threshold": "x"}, "threshold='x'"),
    ],
    ids=["window-1", "window-float", "threshold-high", "threshold-str"],
)
def test_invalid_rules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyBird(**kwargs)


def test_pruner_early_bird_argument():
    assert lth_keras.LotteryPruner(early_bird=True).early_bird == EarlyBird()
    rule = EarlyBird(window=3, threshold=0.0)
    assert EarlyBird.from_config(rule.get_config()) == rule
    with pytest.raises(ValueError, match="early_bird=5"):
        lth_keras.LotteryPruner(early_bird=5)


class Script(keras.callbacks.Callback):
    """Writes A, B, then C into the kernel at each epoch end (placed first).

    Pruned entries are written as 0, as a callback that writes weights must
    (on JAX nothing else would zero them, and the pruner's check at the end of
    `fit` would report them).
    """

    def __init__(self):
        super().__init__()
        self.epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        kernel = (A, B)[self.epochs - 1] if self.epochs <= 2 else C
        layer = self.model.get_layer("d")
        mask = keras.ops.convert_to_numpy(layer.kernel_mask)
        stored(layer).assign(np.where(mask, kernel, 0).astype("float32"))


def toy(**kwargs):
    model = lth_keras.prunable(
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, name="d")])
    )
    model.compile(keras.optimizers.SGD(0.0), "mse", **kwargs)
    return model


TOY_X, TOY_Y = np.ones((4, 2), "float32"), np.zeros((4, 4), "float32")
DISTANCES = [[], [0.25], [0.5, 0.25], [0.25, 0.0], [0.0, 0.0]]


def pruner(**kwargs):
    return lth_keras.LotteryPruner(
        rate=0.5, output_rate=0.5, early_bird=EarlyBird(window=3, threshold=0.1), **kwargs
    )


def test_round_ends_at_the_epoch_the_mask_is_drawn():
    model, eb = toy(), pruner()
    history = model.fit(TOY_X, TOY_Y, epochs=20, batch_size=4, callbacks=[Script(), eb], verbose=0)
    logged = history.history["early_bird_distance"]
    assert len(logged) == 5 and math.isnan(logged[0])
    assert logged[1:] == [0.25, 0.5, 0.25, 0.0]
    assert eb.history[0]["early_bird"] == {"epoch": 5, "iteration": 5, "distances": DISTANCES}
    assert lth_keras.get_masks(model)["d/kernel"].all()  # not applied yet
    model.fit(TOY_X, TOY_Y, epochs=1, batch_size=4, callbacks=[eb], verbose=0)
    np.testing.assert_array_equal(lth_keras.get_masks(model)["d/kernel"], MASK_C)
    assert eb.round == 1 and eb.history[1]["early_bird"]["distances"] == [[]]


def test_epochs_per_round_moves_on_and_state_round_trips():
    script, eb = Script(), pruner(epochs_per_round=10, max_rounds=1)
    model = toy()
    model.fit(TOY_X, TOY_Y, epochs=3, batch_size=4, callbacks=[script, eb], verbose=0)
    state = eb.get_state()
    snapshot = state.pop("snapshot")
    state = json.loads(json.dumps(state))  # JSON-ready, but for the snapshot
    resumed = pruner(epochs_per_round=10, max_rounds=1)
    resumed.set_state(dict(state, snapshot=snapshot))
    history = model.fit(
        TOY_X, TOY_Y, epochs=4, batch_size=4, callbacks=[script, resumed], verbose=0
    )
    assert history.history["pruning_round"] == [0, 0, 1, 1]
    assert resumed.history[0]["early_bird"] == {"epoch": 5, "iteration": 5, "distances": DISTANCES}
    assert [h["epochs"] for h in resumed.history] == [5, 2]
    np.testing.assert_array_equal(lth_keras.get_masks(model)["d/kernel"], MASK_C)
    # The last round computes no candidate: no round follows it.
    assert all(math.isnan(d) for d in history.history["early_bird_distance"][2:])


def test_candidates_draw_no_random_numbers(data):
    x, y = data
    model = compile_model(mlp())
    eb = lth_keras.LotteryPruner(method="random", seed=0, early_bird=EarlyBird(window=50))
    model.fit(x, y, epochs=3, batch_size=96, callbacks=[eb], verbose=0)
    assert len(eb.history[0]["early_bird"]["distances"]) == 3  # three random candidates
    assert eb.get_state()["rng"] == np.random.default_rng(0).bit_generator.state


class _TraceCounter(keras.layers.Layer):
    traces = 0

    def call(self, x):
        _TraceCounter.traces += 1
        return x


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras' torch trainer refuses steps_per_execution > 1",
)
def test_no_retrace_with_jit_and_steps_per_execution():
    model = keras.Sequential(
        [keras.Input((2,)), lth_keras.MaskedDense(4, name="d"), _TraceCounter()]
    )
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=True, steps_per_execution=2)
    x, y = np.ones((8, 2), "float32"), np.zeros((8, 4), "float32")
    eb = lth_keras.LotteryPruner(rate=0.5, early_bird=EarlyBird(window=2, threshold=0.0))
    model.fit(x, y, epochs=9, batch_size=2, callbacks=[eb], verbose=0)
    traces = _TraceCounter.traces
    for _ in range(2):
        history = model.fit(x, y, epochs=9, batch_size=2, callbacks=[eb], verbose=0)
        assert len(history.history["loss"]) == 2  # lr 0: the mask never changes
    assert _TraceCounter.traces == traces
    assert [h["early_bird"]["epoch"] for h in eb.history] == [2, 2, 2]
    assert int(lth_keras.get_masks(model)["d/kernel"].sum()) == 4  # 8 -> 6 -> 4 at rate 0.25
