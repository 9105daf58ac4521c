"""Several networks trained in one compiled step: fused training.

A lottery-ticket study trains many small, independent networks: the trials
of a run, each with its own seed and data order, and the controls of each
round. On a small network a train step leaves most of the machine idle, so
`fit_together` trains several at once, each exactly as it would train alone:

- `FusedModel` is one Keras model holding the networks side by side, each
  its own (masked) model with its own input and output, so masks, rewinding
  and tickets keep working per network, through the library's masked layers;
- `FusedOptimizer` hands each network's gradients to that network's own
  optimizer (the one it was compiled with), so each keeps its optimizer
  state, step count and learning-rate schedule position, and a network can
  start at a different step than the others;
- each network reads its own data stream, and its callbacks (the pruner,
  evaluation records, checkpoints) see it alone, with its own logs.

The loss of the fused model is the sum of the networks' losses, so each
network's gradient is that of its own loss. On the TensorFlow and JAX
backends, with XLA, a network trained fused gets the same weights, losses
and accuracies, bit for bit, as trained alone on the same machine
(`tests/experiments/test_fused.py`), so a fused run's rows are those of a
sequential run.

`run_jobs` is the runner's scheduler: it takes the pending jobs of one or
more runs (trials), each job a generator of the trainings it needs, and
fits together the trainings waiting at the same time that start and end
at the same periods.
"""

import time

import keras
import tensorflow as tf
from keras import ops

from lth_keras.experiments.progress import StatusLine, format_seconds

__all__ = ["FusedModel", "FusedOptimizer", "FusedProgress", "Fuser", "network_logs", "run_jobs"]


class FusedOptimizer(keras.optimizers.Optimizer):
    """Applies each network's gradients with that network's own optimizer.

    Each member model keeps the optimizer it was compiled with, and with it
    its own state, step counter (`iterations`) and learning-rate schedule;
    this optimizer only routes gradients and exposes the members' state as
    its variables (the JAX trainer carries them through its stateless step).

    Args:
        members: The member models, each compiled with its own optimizer.
    """

    def __init__(self, members, **kwargs):
        super().__init__(learning_rate=0.0, name="fused_optimizer", **kwargs)
        self._members = list(members)
        self._owners = {}

    def build(self, variables):
        for member in self._members:
            if not member.optimizer.built:
                member.optimizer.build(member.trainable_variables)
        owners = {}
        for index, member in enumerate(self._members):
            for variable in member.trainable_variables:
                owners[id(variable)] = index
        self._owners = owners
        super().build(variables)

    @property
    def variables(self):
        own = self._variables[:]
        return own + [v for member in self._members for v in member.optimizer.variables]

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            self.build(list(trainable_variables))
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        parts = [([], []) for _ in self._members]
        for grad, variable in zip(grads, trainable_variables, strict=True):
            grads_of, variables_of = parts[self._owners[id(variable)]]
            grads_of.append(grad)
            variables_of.append(variable)
        for member, (grads_of, variables_of) in zip(self._members, parts, strict=True):
            if variables_of:
                member.optimizer.apply(grads_of, variables_of)
        self._iterations.assign_add(1)

    def get_config(self):
        raise NotImplementedError("A FusedOptimizer is not saved; save its members.")


class _Network(keras.layers.Layer):
    """A member model as one layer of the fused model, under a unique name."""

    def __init__(self, member, **kwargs):
        super().__init__(**kwargs)
        self.member = member

    def call(self, inputs, training=None):
        return self.member(inputs, training=training)

    def compute_output_spec(self, inputs, training=None):
        return self.member.compute_output_spec(inputs)

    @property
    def metrics(self):
        return []  # the members' compiled metrics are theirs, not the fused model's


class FusedModel(keras.Model):
    """One Keras model of `len(members)` networks side by side, each on its own input.

    Output `i` is `members[i]` applied to input `i`, named `net{i}`; its
    loss (sparse categorical cross-entropy on logits) is tracked as
    `net{i}_loss` in the logs, weighted by the batch size as Keras weights a
    single model's `loss` (so the numbers are the same), and its accuracy as
    `net{i}_accuracy`. The members keep their own weights, masks and
    compiled optimizers; compile the fused model with `compile_members`.

    Args:
        members: Built Keras models with one input and one output each.

    Example:

    ```python
    fused = FusedModel([model_a, model_b])
    fused.compile_members(jit_compile=True, steps_per_execution=100)
    fused.fit(((x_a, x_b), (y_a, y_b)), ...)
    ```
    """

    def __init__(self, members, **kwargs):
        inputs = [
            keras.Input(member.inputs[0].shape[1:], dtype=member.inputs[0].dtype, name=f"in{i}")
            for i, member in enumerate(members)
        ]
        outputs = [
            _Network(member, name=f"net{i}")(x)
            for i, (member, x) in enumerate(zip(members, inputs, strict=True))
        ]
        super().__init__(inputs, outputs, name="fused", **kwargs)
        self.members = list(members)
        self.network_losses = [keras.metrics.Mean(name=f"net{i}_loss") for i in range(len(members))]
        self._loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def compile_members(self, jit_compile=True, steps_per_execution=1):
        """Compiles the fused model: the members' optimizers, accuracy per network."""
        self.compile(
            FusedOptimizer(self.members),
            loss=None,
            metrics={f"net{i}": ["accuracy"] for i in range(len(self.members))},
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )
        self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = 0
        targets, predictions = keras.tree.flatten(y), keras.tree.flatten(y_pred)
        for tracker, target, prediction in zip(
            self.network_losses, targets, predictions, strict=True
        ):
            value = ops.cast(self._loss_fn(target, prediction), "float32")
            # The batch size as the trainer weights a single model's loss (a
            # tensor in a TensorFlow graph, where the static size may be None).
            tracker.update_state(value, sample_weight=ops.shape(prediction)[0])
            total = total + value
        return total


def network_logs(logs, index):
    """The logs of network `index` of a fused model's logs, named as a single model's.

    Example:

    ```python
    network_logs({"net1_loss": 0.3, "val_net1_accuracy": 0.9}, 1)
    # {'loss': 0.3, 'val_accuracy': 0.9}
    ```
    """
    if logs is None:
        return None
    own = {}
    for prefix in ("", "val_"):
        for metric in ("loss", "accuracy"):
            key = f"{prefix}net{index}_{metric}"
            if key in logs:
                own[f"{prefix}{metric}"] = logs[key]
    return own


def _overrides(callback, hook):
    """Whether `callback` does something in `hook` (Keras' base hooks do nothing)."""
    return hook in vars(callback) or (
        getattr(type(callback), hook) is not getattr(keras.callbacks.Callback, hook)
    )


class _NetworkCallbacks(keras.callbacks.Callback):
    """Runs one network's callbacks inside a fused fit, on that network's model and logs."""

    def __init__(self, index, member, callbacks):
        super().__init__()
        self.index = index
        self.member = member
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            callback.set_model(member)
        for hook in ("on_train_batch_begin", "on_train_batch_end"):
            if any(_overrides(callback, hook) for callback in self.callbacks):
                setattr(self, hook, lambda batch, logs=None, hook=hook: self._batch(hook, batch))

    def set_params(self, params):
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def _call(self, hook, *args):
        self.model  # noqa: B018  (on JAX, syncs the fused state back into the variables)
        for callback in self.callbacks:
            getattr(callback, hook)(*args)
        if self.member.stop_training:
            raise RuntimeError(
                f"Network {self.index} asked to stop training inside a fused fit, which trains "
                "every network for the same periods. Run it alone (fuse='off')."
            )

    def _batch(self, hook, batch):
        self._call(hook, batch, None)

    def on_train_begin(self, logs=None):
        self.member.stop_training = False
        self._call("on_train_begin", None)

    def on_epoch_begin(self, epoch, logs=None):
        self._call("on_epoch_begin", epoch, None)

    def on_epoch_end(self, epoch, logs=None):
        self._call("on_epoch_end", epoch, network_logs(logs, self.index))

    def on_train_end(self, logs=None):
        self._call("on_train_end", network_logs(logs, self.index))


class FusedProgress(StatusLine):
    """A line about the networks training together.

    On a terminal the line updates after every period; otherwise a line is
    written every `every` seconds, and at the end.
    """

    def __init__(self, label, total, start, eval_every, every=30.0, stream=None):
        super().__init__(stream)
        self.label, self.total, self.start, self.eval_every = label, total, start, eval_every
        self.every = every
        self._began = self._shown = None

    def on_train_begin(self, logs=None):
        self._began = self._shown = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        iteration = (epoch + 1) * self.eval_every
        if not self.tty and now - self._shown < self.every and iteration < self.total:
            return
        self._shown = now
        trained = iteration - self.start
        eta = (now - self._began) / trained * (self.total - iteration)
        accuracies = [
            float(v)
            for k, v in (logs or {}).items()
            if k.endswith("_accuracy") and k.startswith("val_")
        ]
        mean = sum(accuracies) / len(accuracies) if accuracies else float("nan")
        self._show(
            [
                self.label,
                f"{iteration:>{len(str(self.total))}}/{self.total} it",
                f"mean val acc {mean:.4f}",
                f"{format_seconds(now - self._began)} elapsed",
                f"ETA {format_seconds(eta)}",
            ]
        )


def _quiet(dataset):
    options = tf.data.Options()
    options.autotune.enabled = False  # see lth_keras.experiments.data
    return dataset.with_options(options)


class Fuser:
    """Builds (once per set of networks) and fits fused models.

    Args:
        jit_compile: XLA for the fused step.
        steps_per_execution: Train steps per compiled call.
    """

    def __init__(self, jit_compile, steps_per_execution):
        self.jit_compile = jit_compile
        self.steps_per_execution = steps_per_execution
        self._models = {}

    def model(self, members):
        """The fused model of `members` (built and compiled once per distinct list)."""
        key = tuple(id(member) for member in members)
        if key not in self._models:
            fused = FusedModel(members)
            fused.compile_members(self.jit_compile, self.steps_per_execution)
            self._models[key] = fused
        return self._models[key]

    def fit_together(self, trainings, label=None, verbose=1):
        """Fits `trainings` (`lth_keras.experiments.jobs.Training`s) in one fused fit.

        They must start at the same period and train the same periods; each
        is then finished with `training.result()` as if fitted alone.

        Args:
            trainings: The trainings, one per network, of distinct models.
            label: What the progress line says. Defaults to `None` (no line).
            verbose: `0` prints nothing. Defaults to `1`.

        Raises:
            ValueError: If they do not start and end at the same period.
        """
        first = trainings[0]
        if any(
            (t.start_period, t.periods) != (first.start_period, first.periods) for t in trainings
        ):
            raise ValueError(
                "Received trainings that start or end at different periods: "
                f"{[(t.job, t.start_period, t.periods) for t in trainings]}. Fuse only those "
                "that train the same periods."
            )
        fused = self.model([t.model for t in trainings])
        count = len(trainings)
        streams = tf.data.Dataset.zip(tuple(t.stream() for t in trainings)).map(
            lambda *pairs: (tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
        )
        validation = first.splits.validation.map(lambda x, y: ((x,) * count, (y,) * count))
        callbacks = [_NetworkCallbacks(i, t.model, t.callbacks) for i, t in enumerate(trainings)]
        eval_every = first.jobs.config.eval_every
        if verbose and label:
            callbacks.append(
                FusedProgress(
                    label, first.periods * eval_every, first.start_period * eval_every, eval_every
                )
            )
        for training in trainings:
            if training.progress is not None:
                training.progress.silent = True  # the fused line speaks for them
            training.start(share=1.0 / count)
        fused.fit(
            _quiet(streams.prefetch(2)),
            epochs=first.periods,
            initial_epoch=first.start_period,
            steps_per_epoch=eval_every,
            validation_data=_quiet(validation),
            callbacks=callbacks,
            shuffle=False,
            verbose=0,
        )


def run_jobs(sources, fuser=None, label=None, verbose=1, on_fitted=None):
    """Runs the jobs of several sources, fitting together the trainings that can go together.

    A source is an iterator of job generators, as
    `lth_keras.experiments.runner.Experiment.pending_jobs` gives (one per
    trial): each job generator yields a `Training`, or a list of them to fit
    at the same time (the controls of a round), and is sent back its result,
    or the list of their results. Each source's jobs run in its order; of
    the trainings waiting, those that start and end at the same periods are
    fitted together by `fuser.fit_together`, the largest such group first
    (among equals, the one holding the lowest source), and a training with
    no partner alone (`Jobs.fit`). Without a `fuser`, every training is
    fitted alone, in the sources' order: the sequential runner.

    Args:
        sources: The sources, a list of iterators of job generators.
        fuser: A `Fuser`, or `None`. Defaults to `None`.
        label: `label(pairs)` names a fused fit of `(source, training)`
            pairs on its progress line. Defaults to `None` (no line).
        verbose: As for `Fuser.fit_together`. Defaults to `1`.
        on_fitted: `on_fitted(sources)` is called after each fit with the
            sources whose trainings it fitted. Defaults to `None`.
    """
    missing = object()
    current = [None] * len(sources)  # per source: [job generator, trainings, results, listed]

    def advance(index, result):
        steps = current[index][0] if current[index] is not None else None
        while True:
            if steps is None:
                steps, result = next(sources[index], None), None
                if steps is None:
                    current[index] = None
                    return
            try:
                wanted = steps.send(result)
            except StopIteration:
                steps = None
                continue
            listed = isinstance(wanted, list)
            trainings = list(wanted) if listed else [wanted]
            current[index] = [steps, trainings, [missing] * len(trainings), listed]
            return

    for index in range(len(sources)):
        advance(index, None)
    while any(current):
        groups = {}
        for index, entry in enumerate(current):
            if entry is None:
                continue
            for position, training in enumerate(entry[1]):
                if entry[2][position] is missing:
                    key = (training.start_period, training.periods)
                    groups.setdefault(key, []).append((index, position))
        if fuser is None:
            members = [min(m[0] for m in groups.values())]
        else:
            members = max(groups.values(), key=lambda m: (len(m), -m[0][0]))
        trainings = [current[i][1][k] for i, k in members]
        if len(trainings) == 1:
            trainings[0].jobs.fit(trainings[0])
        else:
            name = label([(i, current[i][1][k]) for i, k in members]) if label else None
            fuser.fit_together(trainings, label=name, verbose=verbose)
        for (index, position), training in zip(members, trainings, strict=True):
            current[index][2][position] = training.result()
        fitted = sorted({index for index, _ in members})
        for index in fitted:
            _, _, results, listed = current[index]
            if all(result is not missing for result in results):
                advance(index, results if listed else results[0])
        if on_fitted is not None:
            on_fitted(fitted)
