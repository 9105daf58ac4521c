"""tfmot's callbacks: `UpdatePruningStep` (prunes during `fit`) and `PruningSummaries`.

`UpdatePruningStep` holds no pruning of its own: it groups the masked
kernels by the `PruningParams` that `prune_low_magnitude` recorded (one
group per distinct schedule and structure) and drives one
`lth_keras.LotteryPruner(schedule=..., targets=...)` per group, each
excluding the other groups' kernels.
"""

import os

import keras

from lth_keras import masks as masks_lib
from lth_keras.callbacks import LotteryPruner
from lth_keras.targets import Targets
from lth_keras.tfmot.prune import PARAMS_ATTR

__all__ = ["PruningSummaries", "UpdatePruningStep"]


def _group_key(params):
    """Equal schedules and structures prune together; a config that fails, by identity."""
    try:
        schedule = (type(params.schedule), repr(sorted(params.schedule.get_config().items())))
    except Exception:  # a schedule of one's own without a usable config
        schedule = id(params.schedule)
    structure = (params.structure.name, repr(sorted(params.structure.get_config().items())))
    return schedule, structure


def _groups(model):
    """`{group key: (PruningParams, [kernel keys])}`, and the keys of masks without params."""
    groups, bare = {}, []
    for key, layer, _ in masks_lib.prunable_entries(model):
        params = getattr(layer, PARAMS_ATTR, None)
        if params is None:
            bare.append(key)
            continue
        groups.setdefault(_group_key(params), (params, []))[1].append(key)
    return groups, bare


class UpdatePruningStep(keras.callbacks.Callback):
    """Prunes the layers `prune_low_magnitude` marked, during `fit` (tfmot's).

    At each training step a layer's schedule names, its kernels are set to
    the schedule's sparsity. Steps are the optimizer's iterations plus one
    (the first batch of training is step 1, as in tfmot), counted across
    `fit` calls; compiling again with a new optimizer starts them at 1. The
    work is `lth_keras.LotteryPruner`'s gradual mode, one pruner per
    distinct schedule and structure, reachable as `pruners`. In a training
    loop of one's own, call it as tfmot's guide does: `set_model`,
    `on_train_begin()`, `on_train_batch_begin(batch=-1)` before each step
    (the step is then the optimizer's iterations plus one) and
    `on_epoch_end(batch=-1)`.

    Raises:
        ValueError: When training starts, if the model has no layer marked
            by `prune_low_magnitude` (a model loaded from a file forgets the
            schedules: call `prune_low_magnitude` on it again).

    Example:

    ```python
    model = lth_keras.tfmot.prune_low_magnitude(model)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, callbacks=[lth_keras.tfmot.UpdatePruningStep()])
    ```
    """

    def __init__(self):
        super().__init__()
        self.pruners = []
        self._keys = None

    def on_train_begin(self, logs=None):
        groups, bare = _groups(self.model)
        if not groups:
            raise ValueError(
                "UpdatePruningStep found no layer marked for pruning. Call "
                "lth_keras.tfmot.prune_low_magnitude(model, ...) before compiling (a model "
                f"loaded from a file keeps its masks but not its schedules). Masked: {bare}"
            )
        keys = [(group, tuple(kernels)) for group, (_, kernels) in groups.items()]
        if keys != self._keys:  # the first fit, or layers marked since: new pruners
            self._keys = keys
            every = [key for _, kernels in groups.values() for key in kernels] + bare
            self.pruners = []
            for params, kernels in groups.values():
                others = [key for key in every if key not in kernels]
                targets = Targets(structure=params.structure, exclude=others)
                self.pruners.append(LotteryPruner(targets=targets, schedule=params.schedule))
        for pruner in self.pruners:
            pruner.set_model(self.model)
            pruner.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        for pruner in self.pruners:
            pruner.on_epoch_begin(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        for pruner in self.pruners:
            if batch < 0:  # tfmot's custom loops pass -1: the step is the optimizer's now
                pruner.on_epoch_begin(batch, logs)
            pruner.on_train_batch_begin(max(batch, 0), logs)

    def on_epoch_end(self, batch, logs=None):  # tfmot's name, which its custom loops pass
        for pruner in self.pruners:
            pruner.on_epoch_end(batch, logs)

    def on_train_end(self, logs=None):
        for pruner in self.pruners:
            pruner.on_train_end(logs)


class PruningSummaries(keras.callbacks.TensorBoard):
    """TensorBoard logs with each kernel's sparsity (tfmot's).

    A `keras.callbacks.TensorBoard` that also writes, at the start of every
    epoch, `<kernel key>/sparsity` (the fraction of its weights pruned, e.g.
    `dense/kernel/sparsity`) under `log_dir/metrics`, at the optimizer's
    step. tfmot's per-layer `threshold` has no counterpart: masks keep the
    largest weights by count, not above a threshold. Needs TensorFlow
    installed (for its summary writer), on any backend.

    Args:
        log_dir: The folder for the logs, a non-empty string.
        update_freq: As for `keras.callbacks.TensorBoard`. Defaults to
            `"epoch"`.
        **kwargs: Other arguments of `keras.callbacks.TensorBoard`.

    Raises:
        ValueError: If `log_dir` is not a non-empty string.

    Example:

    ```python
    model.fit(x, y, callbacks=[lth_keras.tfmot.UpdatePruningStep(),
                               lth_keras.tfmot.PruningSummaries(log_dir="logs")])
    ```
    """

    def __init__(self, log_dir, update_freq="epoch", **kwargs):
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(
                "Received an invalid value for `log_dir`, expected a non-empty string. "
                f"Received: log_dir={log_dir!r}"
            )
        super().__init__(log_dir=log_dir, update_freq=update_freq, **kwargs)
        self._metrics_writer = None

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        model = self.model
        if self._metrics_writer is None:
            path = os.path.join(self.log_dir, "metrics")
            self._metrics_writer = self.summary.create_file_writer(path)
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        with self._metrics_writer.as_default():
            for key, mask in masks_lib.get_masks(model).items():
                self.summary.scalar(f"{key}/sparsity", 1.0 - float(mask.mean()), step=step)
        self._metrics_writer.flush()

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._metrics_writer is not None:
            self._metrics_writer.close()
            self._metrics_writer = None
