"""Learning-rate schedule, optimizers and early-stopping records."""

import keras
import pytest
import tensorflow as tf

from lth_keras.experiments import training
from lth_keras.experiments.config import preset


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
    assert set(recorder.records[0]) == {
        "iteration",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "test_loss",
        "test_accuracy",
    }


class _CountingModel:
    """Stands in for a model: counts test evaluations."""

    stop_training = False

    def __init__(self):
        self.evaluations = 0

    def evaluate(self, data, verbose=0, return_dict=True):
        self.evaluations += 1
        return {"loss": 1.0 + self.evaluations, "accuracy": 0.1 * self.evaluations}


def _period(recorder, epoch, val_loss):
    logs = {"loss": 0.0, "accuracy": 0.0, "val_loss": val_loss, "val_accuracy": 0.0}
    recorder.on_epoch_end(epoch, logs)
    return recorder.records[-1]


def test_eval_recorder_tests_only_candidate_early_stopping_points_and_the_last():
    model = _CountingModel()
    recorder = training.EvalRecorder(None, eval_every=10)
    recorder.set_model(model)
    recorder.set_params({"epochs": 5})
    losses = [0.5, 0.6, 0.5, 0.4, 0.7]  # new minima at 1 and 4; 3 ties period 1
    tested = ["test_accuracy" in _period(recorder, e, v) for e, v in enumerate(losses)]
    assert tested == [True, False, False, True, True]
    assert model.evaluations == 3
    result = training.early_stopping(recorder.records)
    assert result["es_iteration"] == 40
    assert result["test_accuracy_es"] == pytest.approx(0.2)
    assert result["test_accuracy_final"] == pytest.approx(0.3)


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
    assert lazy.records[-1]["test_accuracy"] == pytest.approx(0.1)
