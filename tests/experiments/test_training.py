"""Learning-rate schedule, optimizers and early-stopping records."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lth_keras.experiments import training
from lth_keras.experiments.presets import preset


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.1 * 1 / 10), (4, 0.1 * 5 / 10), (9, 0.1), (99, 0.1), (100, 0.01), (250, 0.001)],
    ids=["first", "mid-warmup", "warm", "before", "first-drop", "second-drop"],
)
def test_warmup_piecewise_values(step, expected):
    schedule = training.WarmupPiecewise(0.1, boundaries=(100, 200), factor=0.1, warmup_steps=10)
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)


def test_warmup_piecewise_serializes():
    schedule = training.WarmupPiecewise(0.03, (20000, 25000), 0.1, 20000)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert again.get_config() == schedule.get_config()


def test_make_optimizer_follows_config():
    adam = training.make_optimizer(preset("lenet"))
    assert isinstance(adam, keras.optimizers.Adam)
    assert float(adam.learning_rate) == pytest.approx(1.2e-3)
    sgd = training.make_optimizer(preset("resnet20"))
    assert isinstance(sgd, keras.optimizers.SGD)
    assert sgd.momentum == 0.9 and sgd.weight_decay == pytest.approx(1e-4)
    assert isinstance(sgd._learning_rate, training.WarmupPiecewise)


def _records(val_losses):
    return [
        {
            "iteration": 100 * (i + 1),
            "val_loss": v,
            "val_accuracy": 1 - v,
            "test_accuracy": 0.5 + i / 100,
        }
        for i, v in enumerate(val_losses)
    ]


def test_early_stopping_takes_the_first_minimum():
    summary = training.early_stopping(_records([0.5, 0.2, 0.3, 0.2, 0.4]))
    assert summary == {
        "es_iteration": 200,
        "val_loss_min": 0.2,
        "val_accuracy_es": 0.8,
        "test_accuracy_es": 0.51,
        "test_accuracy_final": 0.54,
    }
    with pytest.raises(ValueError, match="no evaluation records"):
        training.early_stopping([])


def test_eval_recorder_records_every_period(data):
    x, y = data
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(3)])
    model.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    seen = []
    test = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(16)
    recorder = training.EvalRecorder(
        test, eval_every=3, on_period=lambda p, r: seen.append((p, len(r)))
    )
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        steps_per_epoch=3,
        validation_data=(x, y),
        callbacks=[recorder],
        verbose=0,
    )
    assert [r["iteration"] for r in recorder.records] == [3, 6]
    assert seen == [(1, 1), (2, 2)]
    assert set(recorder.records[-1]) == {
        "iteration",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "test_loss",
        "test_accuracy",
    }


class _CountingModel:
    """Stands in for a model: one weight (the period), counts test evaluations.

    An evaluation returns the weight as its accuracy, so a record's test
    accuracy says which period's weights were evaluated.
    """

    stop_training = False

    def __init__(self):
        self.evaluations = 0
        self.weight = 0.0

    def get_weights(self):
        return [np.float32(self.weight)]

    def set_weights(self, weights):
        (self.weight,) = weights

    def evaluate(self, data, verbose=0, return_dict=True):
        self.evaluations += 1
        return {"loss": 1.0 + self.evaluations, "accuracy": float(self.weight)}


def _period(recorder, epoch, val_loss):
    recorder.model.weight = float(epoch)  # "training" changes the weights
    logs = {"loss": 0.0, "accuracy": 0.0, "val_loss": val_loss, "val_accuracy": 0.0}
    recorder.on_epoch_end(epoch, logs)
    return recorder.records[-1]


@pytest.mark.parametrize(
    "losses, tested, es_period",
    [
        ([0.5, 0.6, 0.5, 0.4, 0.7], [False, False, False, True, True], 3),
        ([0.5, 0.4, 0.3, 0.2, 0.1], [False, False, False, False, True], 4),
        ([0.1, 0.4, 0.3, 0.2, 0.1], [True, False, False, False, True], 0),
    ],
    ids=["minimum-before-the-end", "minimum-at-the-end", "tie-keeps-the-first"],
)
def test_eval_recorder_tests_only_the_early_stopping_point_and_the_last(losses, tested, es_period):
    model = _CountingModel()
    recorder = training.EvalRecorder(None, eval_every=10)
    recorder.set_model(model)
    recorder.set_params({"epochs": 5})
    for epoch, loss in enumerate(losses):
        _period(recorder, epoch, loss)
    assert ["test_accuracy" in r for r in recorder.records] == tested
    assert model.evaluations == sum(tested)
    assert model.weight == 4.0  # the last period's weights are back after the swap
    result = training.early_stopping(recorder.records)
    assert result["es_iteration"] == 10 * (es_period + 1)
    assert result["test_accuracy_es"] == es_period  # evaluated with that period's weights
    assert result["test_accuracy_final"] == 4.0


def test_eval_recorder_flush_evaluates_the_pending_candidate():
    model = _CountingModel()
    seen = []

    def on_period(period, records):
        if period == 2:  # a checkpoint: flush first, then save the records
            recorder.flush()
            seen.append(["test_accuracy" in r for r in records])

    recorder = training.EvalRecorder(None, eval_every=10, on_period=on_period)
    recorder.set_model(model)
    recorder.set_params({"epochs": 4})
    for epoch, loss in enumerate([0.5, 0.4, 0.6, 0.7]):
        _period(recorder, epoch, loss)
    assert seen == [[False, True]]
    assert model.evaluations == 2  # period 2 (flushed) and the last; none at the end again
    assert model.weight == 3.0
    assert training.early_stopping(recorder.records)["test_accuracy_es"] == 1.0


def test_eval_recorder_every_period_and_early_end():
    model = _CountingModel()
    recorder = training.EvalRecorder(None, eval_every=10, test_every_period=True)
    recorder.set_model(model)
    recorder.set_params({"epochs": 4})
    assert all("test_accuracy" in _period(recorder, e, v) for e, v in enumerate([1, 2, 3]))
    lazy = training.EvalRecorder(None, eval_every=10, records=[{"val_loss": 0.1}])
    lazy.set_model(_CountingModel())
    lazy.set_params({"epochs": 4})
    assert "test_accuracy" not in _period(lazy, 1, 0.2)
    lazy.on_train_end()  # stopped early, e.g. by another callback
    assert lazy.records[-1]["test_accuracy"] == 1.0


def test_eval_recorder_early_end_evaluates_the_pending_candidate():
    model = _CountingModel()
    recorder = training.EvalRecorder(None, eval_every=10, records=[{"val_loss": 0.3}])
    recorder.set_model(model)
    recorder.set_params({"epochs": 5})
    _period(recorder, 1, 0.2)  # a candidate, pending
    _period(recorder, 2, 0.4)
    recorder.on_train_end()  # stopped early, e.g. by another callback
    assert [r.get("test_accuracy") for r in recorder.records] == [None, 1.0, 2.0]
    assert model.evaluations == 2 and model.weight == 2.0


def test_early_stopping_from_an_iteration_skips_the_records_before_it():
    records = _records([0.1, 0.5, 0.2, 0.3, 0.2])  # iterations 100 to 500
    assert training.early_stopping(records)["es_iteration"] == 100
    summary = training.early_stopping(records, 200)
    assert summary["es_iteration"] == 300 and summary["test_accuracy_es"] == 0.52
    assert training.early_stopping(records, 500)["es_iteration"] == 500
    with pytest.raises(ValueError, match="no evaluation records at or after iteration 600"):
        training.early_stopping(records, 600)


def test_eval_recorder_never_tests_a_period_before_early_stopping_may_pick():
    model = _CountingModel()
    recorder = training.EvalRecorder(None, eval_every=10, early_stopping_from=30)
    recorder.set_model(model)
    recorder.set_params({"epochs": 5})
    # Iterations 10 to 50; the lowest loss (at 10) is before the first pickable iteration.
    for epoch, loss in enumerate([0.1, 0.5, 0.4, 0.3, 0.6]):
        _period(recorder, epoch, loss)
    assert ["test_accuracy" in r for r in recorder.records] == [False] * 3 + [True, True]
    assert model.evaluations == 2
    result = training.early_stopping(recorder.records, 30)
    assert result["es_iteration"] == 40 and result["test_accuracy_es"] == 3.0
