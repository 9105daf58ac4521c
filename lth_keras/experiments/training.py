"""Training pieces of experiments: schedule, optimizer, evaluation records.

Iterations count optimizer steps. A round trains in *periods* of
`eval_every` steps (one Keras epoch each); after every period the model is
evaluated on the validation and test sets and a record is kept, from which
the early-stopping iteration (minimum validation loss) is read.
"""

import keras

from lth_keras.schedules import WarmupPiecewise

__all__ = ["EvalRecorder", "compile_for", "early_stopping", "make_optimizer"]


def make_optimizer(config):
    """The optimizer an `ExperimentConfig` asks for.

    Args:
        config: An `ExperimentConfig`.

    Returns:
        A new `keras.optimizers.Adam` or `SGD` (with momentum), with a
        `WarmupPiecewise` schedule when the config has boundaries or warm-up.

    Example:

    ```python
    optimizer = make_optimizer(preset("vgg19"))
    ```
    """
    rate = config.learning_rate
    if config.lr_boundaries or config.warmup_iterations:
        rate = WarmupPiecewise(
            rate, config.lr_boundaries, config.lr_factor, config.warmup_iterations
        )
    decay = config.weight_decay or None
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate, weight_decay=decay)
    return keras.optimizers.SGD(rate, momentum=config.momentum, weight_decay=decay)


def compile_for(model, config, steps_per_execution=None, jit_compile=None):
    """Compiles `model` for classification with the config's optimizer.

    Args:
        model: A Keras model producing logits.
        config: An `ExperimentConfig`.
        steps_per_execution: Overrides `config.execution_steps`. Defaults
            to `None`.
        jit_compile: Overrides `config.jit_compile`; with neither set, XLA.
            Defaults to `None`.

    Returns:
        `model`, compiled with sparse categorical cross-entropy and accuracy.

    Example:

    ```python
    compile_for(model, config)
    ```
    """
    model.compile(
        make_optimizer(config),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=_first(jit_compile, config.jit_compile, True),
        steps_per_execution=steps_per_execution or config.execution_steps,
    )
    return model


def _first(*values):
    return next(v for v in values if v is not None)


class EvalRecorder(keras.callbacks.Callback):
    """Evaluates on the test set after every period and keeps the records.

    Each record holds `iteration` (steps since the round's start, counting
    a late-resetting start) and the period's `loss`, `accuracy`, `val_loss`,
    `val_accuracy`, `test_loss` and `test_accuracy`.

    Args:
        test_data: Batched test dataset.
        eval_every: Steps per period.
        records: A list to append to (resumed records). Defaults to `None`.
        on_period: Called as `on_period(period, records)` after each record,
            e.g. to write a checkpoint. Defaults to `None`.

    Example:

    ```python
    recorder = EvalRecorder(splits.test, 1000)
    model.fit(..., validation_data=splits.validation, callbacks=[recorder])
    early_stopping(recorder.records)
    ```
    """

    def __init__(self, test_data, eval_every, records=None, on_period=None):
        super().__init__()
        self.test_data = test_data
        self.eval_every = eval_every
        self.records = [] if records is None else records
        self.on_period = on_period

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        test = self.model.evaluate(self.test_data, verbose=0, return_dict=True)
        record = {"iteration": (epoch + 1) * self.eval_every}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            record[key] = float(logs[key])
        record["test_loss"] = float(test["loss"])
        record["test_accuracy"] = float(test["accuracy"])
        self.records.append(record)
        if self.on_period is not None:
            self.on_period(epoch + 1, self.records)


def early_stopping(records):
    """Reads the early-stopping point from evaluation records.

    The early-stopping iteration is the first with the minimum validation
    loss, as in the paper.

    Args:
        records: Records of `EvalRecorder`, in order.

    Returns:
        A dict with `es_iteration`, `val_loss_min`, `val_accuracy_es`,
        `test_accuracy_es` and `test_accuracy_final`.

    Raises:
        ValueError: If `records` is empty.

    Example:

    ```python
    early_stopping([{"iteration": 100, "val_loss": 0.3, ...}, ...])
    ```
    """
    if not records:
        raise ValueError("Received no evaluation records; train at least one period.")
    best = min(range(len(records)), key=lambda i: (records[i]["val_loss"], i))
    return {
        "es_iteration": records[best]["iteration"],
        "val_loss_min": records[best]["val_loss"],
        "val_accuracy_es": records[best]["val_accuracy"],
        "test_accuracy_es": records[best]["test_accuracy"],
        "test_accuracy_final": records[-1]["test_accuracy"],
    }
