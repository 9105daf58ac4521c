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
    """Records every period's metrics, evaluating the test set where it counts.

    Each record holds `iteration` (steps since the round's start, counting
    a late-resetting start) and the period's `loss`, `accuracy`, `val_loss`
    and `val_accuracy`. The test set (`test_loss`, `test_accuracy`) is
    evaluated only where `early_stopping` reads it, unless
    `test_every_period`: at the last period, and at the period with the
    lowest validation loss of the job (the first of equals). While training
    goes on, that period is only a candidate: its weights are kept in memory
    and evaluated on the test set at the end of training, or by `flush()`
    (before a checkpoint saves the records), so a candidate superseded by a
    lower validation loss costs no test evaluation. A test evaluation of
    the same weights gives the same numbers, so the early-stopping and final
    test accuracies are those of evaluating every period; with Adam, whose
    validation loss falls in most periods, this saves about two thirds of
    the test evaluations.

    Args:
        test_data: Batched test dataset.
        eval_every: Steps per period.
        records: A list to append to (resumed records). Defaults to `None`.
        on_period: Called as `on_period(period, records)` after each record,
            e.g. to write a checkpoint (call `flush()` first). Defaults to
            `None`.
        test_every_period: Evaluate the test set after every period (for
            full test curves). Defaults to `False`.
        early_stopping_from: The first iteration early stopping may pick
            (see `early_stopping`): earlier periods are recorded but never
            candidates. Defaults to `0`.

    Example:

    ```python
    recorder = EvalRecorder(splits.test, 1000)
    model.fit(..., validation_data=splits.validation, callbacks=[recorder])
    early_stopping(recorder.records)
    ```
    """

    def __init__(
        self,
        test_data,
        eval_every,
        records=None,
        on_period=None,
        test_every_period=False,
        early_stopping_from=0,
    ):
        super().__init__()
        self.test_data = test_data
        self.eval_every = eval_every
        self.records = [] if records is None else records
        self.on_period = on_period
        self.test_every_period = test_every_period
        self.early_stopping_from = early_stopping_from
        self._candidate = None  # (record, its weights) awaiting a test evaluation

    def _is_candidate(self, record):
        first = self.early_stopping_from
        if first and record["iteration"] < first:
            return False
        return all(
            record["val_loss"] < r["val_loss"]
            for r in self.records
            if not first or r["iteration"] >= first
        )

    def _evaluate_test(self, record):
        test = self.model.evaluate(self.test_data, verbose=0, return_dict=True)
        record["test_loss"] = float(test["loss"])
        record["test_accuracy"] = float(test["accuracy"])

    def flush(self):
        """Evaluates the pending early-stopping candidate on the test set now.

        The model's weights are swapped for the candidate's during the
        evaluation and restored after it, bit for bit.
        """
        if self._candidate is None:
            return
        record, weights = self._candidate
        self._candidate = None
        current = self.model.get_weights()
        self.model.set_weights(weights)
        try:
            self._evaluate_test(record)
        finally:
            self.model.set_weights(current)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        record = {"iteration": (epoch + 1) * self.eval_every}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            record[key] = float(logs[key])
        last = epoch + 1 == self.params.get("epochs") or self.model.stop_training
        if self.test_every_period or last:
            if not self.test_every_period and not self._is_candidate(record):
                self.flush()
            self._candidate = None
            self._evaluate_test(record)
        elif self._is_candidate(record):
            self._candidate = (record, self.model.get_weights())
        self.records.append(record)
        if self.on_period is not None:
            self.on_period(epoch + 1, self.records)

    def on_train_end(self, logs=None):
        # Training stopped before its last epoch without saying so first
        # (stop_training set after this callback's epoch end): the last
        # record must still hold the final test accuracy.
        if self.records and "test_accuracy" not in self.records[-1]:
            if self._candidate is not None and self._candidate[0] is not self.records[-1]:
                self.flush()
            self._candidate = None
            self._evaluate_test(self.records[-1])
        self.flush()


def early_stopping(records, first_iteration=0):
    """Reads the early-stopping point from evaluation records.

    The early-stopping iteration is the first with the minimum validation
    loss, as in the paper, among the records from `first_iteration` on.

    Args:
        records: Records of `EvalRecorder`, in order.
        first_iteration: The first iteration that may be picked (a gradual
            pruning job's end of pruning). Defaults to `0`.

    Returns:
        A dict with `es_iteration`, `val_loss_min`, `val_accuracy_es`,
        `test_accuracy_es` and `test_accuracy_final`.

    Raises:
        ValueError: If no record is at or after `first_iteration`.

    Example:

    ```python
    early_stopping([{"iteration": 100, "val_loss": 0.3, ...}, ...])
    ```
    """
    eligible = [i for i, r in enumerate(records) if r["iteration"] >= first_iteration]
    if not eligible:
        raise ValueError(
            f"Received no evaluation records at or after iteration {first_iteration} (of "
            f"{len(records)} records); train at least one period past it."
        )
    best = min(eligible, key=lambda i: (records[i]["val_loss"], i))
    return {
        "es_iteration": records[best]["iteration"],
        "val_loss_min": records[best]["val_loss"],
        "val_accuracy_es": records[best]["val_accuracy"],
        "test_accuracy_es": records[best]["test_accuracy"],
        "test_accuracy_final": records[-1]["test_accuracy"],
    }
