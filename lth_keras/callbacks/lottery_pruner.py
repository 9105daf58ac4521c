"""`LotteryPruner`: iterative magnitude pruning as a Keras callback.

The callback only coordinates: masks come from `lth_keras.pruning`, model
state is read and written through `lth_keras.masks` and `lth_keras.rewind`.
"""

import contextlib
import copy
import warnings
import zlib

import keras
import numpy as np

from lth_keras import exactness, pruning
from lth_keras import masks as masks_lib
from lth_keras.callbacks.gradual import Gradual
from lth_keras.callbacks.resets import ResetContext, get_reset
from lth_keras.options import check_int, check_pruning_options
from lth_keras.pruning import Rounds
from lth_keras.pruning import early_bird as early_bird_lib
from lth_keras.rewind import OptimizerReset, WeightSnapshot
from lth_keras.targets import Targets

__all__ = ["LotteryPruner"]


def _seed_from_weights(model):
    """A seed every worker of a synchronised run computes alike."""
    digest = 0
    for _, _, weight in masks_lib.prunable_entries(model):
        kernel = keras.ops.convert_to_numpy(weight.initial)
        digest = zlib.crc32(kernel.tobytes(), digest)
    return digest


class LotteryPruner(keras.callbacks.Callback):
    """Finds lottery tickets by iterative magnitude pruning during `fit`.

    A *round* trains the network, then prunes a fraction of the weights that
    remain and resets the survivors (Frankle & Carbin, 2019). Round 0 trains
    the dense network. Rounds are delimited in one of two ways:

    - by default, one round per `fit` call: each later `fit` with this
      callback starts by pruning and resetting, so after the last call the
      model holds the trained ticket. A `fit` that did not finish (an
      exception, an interrupt) does not end its round: the next `fit`
      continues it;
    - with `epochs_per_round=k`, every `k` epochs, inside one `fit` (and
      across `fit` calls); the round that would exceed `max_rounds` or
      `target_sparsity` is not started and `fit` stops after the last
      round's `k` epochs.

    Pruning removes `prune_count(remaining, rate)` weights per kernel
    (`scope="layerwise"`, the paper's choice for LeNet and Conv-2/4/6) or
    from all kernels pooled (`scope="global"`, its choice for VGG-19 and
    ResNet-20); see `lth_keras.pruning` for the exact count rule. With
    layerwise pruning at rate `p`, a kernel of `n` weights keeps
    `n_r = n_{r-1} - prune_count(n_{r-1}, p)` weights after round `r`,
    about `(1 - p) ** r`.

    After pruning, `reset` decides where training resumes:

    - `"rewind"` (default): every weight of the model (biases, BatchNorm
      gammas, betas and moving statistics too, masks excepted) goes back to
      the rewind point, kernels times their masks. The rewind point is the
      start of round 0 (`rewind_epoch=0, rewind_iteration=0`, the paper), or
      epoch or iteration `k` of round 0 ("late resetting", Frankle et al.
      2019). The optimizer's state is reset and its iteration count set to
      that of the rewind point, so learning-rate schedules restart there.
    - `"lr_rewind"`: keep the trained weights, reset the optimizer and set
      its iteration count to the rewind point's (Renda et al., 2020).
    - `"finetune"`: keep the trained weights and the iteration count, so a
      schedule continues at its last learning rate; reset the optimizer
      state (Liu et al., 2021).
    - `"reinit"`: draw new weights from the layers' initializers (a random
      re-initialisation control); other weights go back to the start.

    Pruned weights are exactly zero after every round and stay zero: masked
    layers compute with `kernel * mask`, so pruned weights get zero
    gradients, and the optimizer state is reset whenever masks change, so no
    stale momentum moves them (SGD with momentum, Adam and AdamW included).

    Every epoch, `logs` gains `weights_remaining` (fraction of prunable
    weights left) and `pruning_round`, so `History`, `CSVLogger` and
    `TensorBoard` record them. `history` holds one dict per round with
    `round`, `weights_remaining`, `layers` (fraction per kernel), `epochs`
    and `logs` (the round's last epoch logs).

    With `early_bird`, every epoch end of a round that will be followed by
    another computes the mask pruning would give now (the same maths, not
    applied, random draws untouched) and its normalised Hamming distance to
    the masks of the previous `window - 1` epochs of the round, over the
    weights unpruned when the round began. When all are at most `threshold`
    the round's mask is drawn: with one round per `fit`, training stops
    (`model.stop_training`) and the next `fit` prunes and resets as usual;
    with `epochs_per_round`, the next round starts at the next epoch. Logs
    gain `early_bird_distance` (the largest distance to the previous masks,
    NaN at a round's first epoch and where no round follows), and each
    history entry an `early_bird` dict: `epoch` (of the round) and
    `iteration` (the optimizer's) at which the mask was drawn (`None` if it
    was not), and `distances` (one list per epoch, oldest mask first).

    Masks, weights and optimizer state are only read and written between
    steps, as variables, so the train step is traced once, with
    `jit_compile=True` and `steps_per_execution > 1` too, and the callback
    works under `tf.distribute` strategies: build the model under the
    strategy's scope (and, for `MultiWorkerMirroredStrategy`, call `fit`
    inside `lth_keras.tensorflow.distribute.fit_scope`); every replica and worker prunes
    to the same masks.

    What to prune (the kernels, their rates, the score and the structure) is
    a `lth_keras.Targets`, given as `targets=` or built from the shorthand
    arguments `rate` ... `structure`, which are its arguments. When to prune
    is a schedule: `lth_keras.pruning.Rounds` (the rounds above, the
    default, built from `epochs_per_round`, `max_rounds` and
    `target_sparsity`), or a step schedule with tfmot's semantics,
    `lth_keras.pruning.PolynomialDecay` or `ConstantSparsity`: gradual
    pruning (Zhu & Gupta, 2017) inside `fit`, the masks set to the
    schedule's sparsity at the steps it names (tfmot's count rule
    `lth_keras.pruning.keep_count`), the weights never reset and newly
    pruned entries given a fresh optimizer state; `history[-1]["updates"]`
    records each update (see `lth_keras.callbacks.gradual`).

    Args:
        rate: Fraction of the remaining weights pruned per round, in (0, 1).
            Defaults to `0.2`.
        targets: A `lth_keras.Targets` (then leave `rate` ... `structure` at
            their defaults). Defaults to `None`: built from them.
        output_rate: Rate of the model's last masked layer (layerwise only).
            Defaults to `None`, meaning `rate / 2` as in the paper.
        layer_rates: Dict from a kernel key, layer path, layer name or type
            name (`"Conv2D"`, `"MaskedConv2D"`, `"Dense"`, ...) to its rate in
            [0, 1); layerwise only. A key, path or name beats `output_rate`,
            which beats a type. Defaults to `None`.
        exclude: Kernel keys, layer paths, names or type names never pruned.
            Defaults to `()`.
        scope: `"layerwise"` or `"global"`. Defaults to `"layerwise"`.
        method: The pruning score: `"magnitude"`, `"random"` (the control
            that prunes the same number of weights per kernel at random),
            `"synflow"`, a `lth_keras.pruning.Score` such as
            `lth_keras.saliency.Snip(data=(x, y))` or `GraSP(data=(x, y))`
            (scores on data need it given), or another `Score`. The pruner
            binds the score to its model. Defaults to `"magnitude"`.
        reset: `"rewind"`, `"lr_rewind"`, `"finetune"`, `"reinit"` (see
            above) or a `lth_keras.callbacks.Reset`; rounds only. Defaults to
            `None`: `"rewind"`.
        structure: The sparsity structure: `"unstructured"`, `"units"`
            (whole units/filters; the last layer keeps its units),
            `"block:1x4"`, `"block:1x16"` (blocks along the input axis),
            `"N:M"` such as `"2:4"`, or a `lth_keras.pruning.Structure`
            (see `lth_keras.pruning.structured`). Defaults to
            `"unstructured"`.
        schedule: A `lth_keras.pruning.Rounds`, `PolynomialDecay` or
            `ConstantSparsity`. Defaults to `None`: `Rounds` from
            `epochs_per_round`, `max_rounds` and `target_sparsity` (with a
            step schedule leave those, `reset`, late rewinding and
            `early_bird` unset).
        rewind_epoch: Late resetting: rewind to the end of this epoch of
            round 0. Defaults to `0`.
        rewind_iteration: Late resetting: rewind to this optimizer step of
            round 0. With `steps_per_execution > 1` the snapshot is taken at
            the first execution boundary at or after it. Defaults to `0`.
        epochs_per_round: If set, a new round every this many epochs
            (`Rounds`). Defaults to `None` (one round per `fit` call).
        max_rounds: Stop after this many pruning rounds. Defaults to `None`.
        target_sparsity: Stop pruning once at least this fraction of
            prunable weights is pruned, in (0, 1); the last round may go past
            it. Defaults to `None`.
        early_bird: End a round early once its mask stops changing
            (early-bird tickets, You et al. 2020): a
            `lth_keras.pruning.EarlyBird(window, threshold)`, `True` for
            `EarlyBird()` (window 5, threshold 0.1), or `None`. See below.
            Defaults to `None`.
        seed: Seed for `method="random"` and `reset="reinit"`. Defaults to
            `None`: a seed derived from the model's initial kernels, so every
            worker of a multi-worker run draws the same random masks.
        verbose: `0` silent, `1` one line per round. Defaults to `0`.

    Raises:
        ValueError: For an argument outside its allowed values, conflicting
            options, or (when training starts) a model with no masked layers.

    Example:

    ```python
    model = lth_keras.prunable(keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(300, activation="relu"),
        keras.layers.Dense(100, activation="relu"),
        keras.layers.Dense(10),
    ]))
    model.compile("adam", "sparse_categorical_crossentropy")
    pruner = lth_keras.LotteryPruner(rate=0.2)
    for _ in range(5):  # round 0 (dense), then 4 pruning rounds
        model.fit(x, y, epochs=2, callbacks=[pruner])
    pruner.history[-1]["weights_remaining"]  # about 0.41
    ```
    """

    def __init__(
        self,
        rate=0.2,
        *,
        targets=None,
        output_rate=None,
        layer_rates=None,
        exclude=(),
        scope="layerwise",
        method="magnitude",
        reset=None,
        structure="unstructured",
        schedule=None,
        rewind_epoch=0,
        rewind_iteration=0,
        epochs_per_round=None,
        max_rounds=None,
        target_sparsity=None,
        early_bird=None,
        seed=None,
        verbose=0,
    ):
        super().__init__()
        shorthands = {
            "rate": (rate, 0.2),
            "output_rate": (output_rate, None),
            "layer_rates": (layer_rates, None),
            "exclude": (exclude, ()),
            "scope": (scope, "layerwise"),
            "method": (method, "magnitude"),
            "structure": (structure, "unstructured"),
        }
        if targets is not None:
            given = [k for k, (value, default) in shorthands.items() if value != default]
            if not isinstance(targets, Targets) or given:
                raise ValueError(
                    "Pass what to prune either as `targets=lth_keras.Targets(...)` or as the "
                    f"shorthand arguments, not both. Received: targets={targets!r} and {given}"
                )
            self.targets = targets
        else:
            self.targets = Targets(
                rate,
                output_rate=output_rate,
                layer_rates=layer_rates,
                exclude=exclude,
                scope=scope,
                method=method,
                structure=structure,
            )
        rounds = {"epochs_per_round": epochs_per_round, "max_rounds": max_rounds}
        rounds["target_sparsity"] = target_sparsity
        if schedule is None:
            schedule = Rounds(**rounds)
        self.schedule = pruning.get_schedule(schedule)
        self._gradual = None
        if isinstance(self.schedule, pruning.SparsitySchedule):
            late = {"rewind_epoch": rewind_epoch, "rewind_iteration": rewind_iteration}
            given = [k for k, v in {**rounds, **late, "reset": reset}.items() if v]
            if early_bird:
                given.append("early_bird")
            if given:
                raise ValueError(
                    "With a step schedule (gradual pruning) masks change during training "
                    "and weights are never reset, so rounds, resets, late rewinding and "
                    f"early-bird do not apply. Received: schedule={self.schedule!r} and {given}"
                )
            self._gradual = Gradual(self, self.schedule)
            # Keras dispatches batch hooks only to callbacks that define them.
            self.on_train_batch_begin = self._gradual_batch_begin
        elif any(v is not None for v in rounds.values()) and schedule is not None:
            if not isinstance(schedule, Rounds) or any(
                v is not None and getattr(schedule, k) != v for k, v in rounds.items()
            ):
                raise ValueError(
                    "Pass the rounds either as `schedule=Rounds(...)` or as "
                    f"epochs_per_round/max_rounds/target_sparsity, not both. Received: {rounds}"
                )
        self.reset = get_reset("rewind" if reset is None else reset)
        if early_bird is True:
            early_bird = pruning.EarlyBird()
        if early_bird is not None and not isinstance(early_bird, pruning.EarlyBird):
            raise ValueError(
                "Received an invalid value for `early_bird`, expected None, True or a "
                f"lth_keras.pruning.EarlyBird. Received: early_bird={early_bird!r}"
            )
        self.early_bird = early_bird
        check_pruning_options(
            rate=self.targets.rate,
            output_rate=self.targets.output_rate,
            layer_rates=self.targets.layer_rates,
            scope=self.targets.scope,
            rewinds=self.reset.rewinds,
            reset_name=self.reset.name,
            rewind_epoch=rewind_epoch,
            rewind_iteration=rewind_iteration,
            epochs_per_round=self._rounds("epochs_per_round"),
        )
        check_int(seed, "seed", 0, allow_none=True)
        check_int(verbose, "verbose", 0)
        self.rewind_epoch = rewind_epoch
        self.rewind_iteration = rewind_iteration
        self.seed = seed
        self.verbose = verbose
        if rewind_iteration:
            # Only late resetting by iteration needs a batch hook. Keras calls
            # batch hooks every step and dispatches callbacks synchronously
            # when one is overridden, so it is added to this instance only.
            self.on_train_batch_end = self._watch_rewind_iteration
        self.round = 0
        self.history = []
        self._started = False
        self._round_trained = False
        self._epochs_in_round = 0
        self._snapshot = None
        self._rewind_step = None
        self._optimizer_reset = None
        self._iteration0 = 0
        self._remaining = 1.0
        self._rng = np.random.default_rng(seed)  # seed=None: replaced in _start
        self._early_round = None  # the round `_early_recent` belongs to
        self._early_recent = []  # candidate masks of its last epochs

    # Keras hooks -----------------------------------------------------------

    def _rounds(self, name):
        return getattr(self.schedule, name, None)

    @property
    def epochs_per_round(self):
        """Epochs per round (`schedule.epochs_per_round`), or `None`."""
        return self._rounds("epochs_per_round")

    @property
    def max_rounds(self):
        """The last round (`schedule.max_rounds`), or `None`."""
        return self._rounds("max_rounds")

    @property
    def target_sparsity(self):
        """The sparsity at which rounds stop (`schedule.target_sparsity`), or `None`."""
        return self._rounds("target_sparsity")

    def _gradual_batch_begin(self, batch, logs=None):
        self._gradual.batch_begin(batch)

    @property
    def method(self):
        """The pruning score (`targets.method`)."""
        return self.targets.method

    @property
    def structure(self):
        """The sparsity structure (`targets.structure`)."""
        return self.targets.structure

    def set_model(self, model):
        super().set_model(model)
        bind = getattr(self.method, "bind", None)
        if bind is not None:
            bind(model)  # scores that need the model (SNIP, GraSP, SynFlow)

    def on_train_begin(self, logs=None):
        layers = masks_lib.masked_layers(self.model)
        if not layers:
            raise ValueError(
                "LotteryPruner found no masked layers in the model. Call "
                "lth_keras.prunable(model) first, or build the model from "
                "lth_keras.layers (e.g. MaskedDense)."
            )
        self.targets.resolve(self.model)  # keys of layer_rates and exclude checked now
        masks_lib.apply_masks(self.model)  # weights may have been written since the last fit
        optimizer = self.model.optimizer
        if not optimizer.built:
            # Keras builds the optimizer lazily, inside the first train step;
            # its initial state must be recorded before that step.
            strategy = getattr(self.model, "distribute_strategy", None)
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                optimizer.build(self.model.trainable_variables)
        if self._optimizer_reset is None or self._optimizer_reset.optimizer is not optimizer:
            exactness.check_optimizer(optimizer)
            self._optimizer_reset = OptimizerReset(optimizer, self.model.trainable_variables)
        if not self._started:
            self._start()
        elif self._gradual is None and self.epochs_per_round is None and self._round_trained:
            self._maybe_next_round()

    def on_epoch_begin(self, epoch, logs=None):
        if self._gradual is not None:
            self._gradual.epoch_begin()
        elif self.epochs_per_round and self._epochs_in_round >= self.epochs_per_round:
            self._maybe_next_round()

    def _watch_rewind_iteration(self, batch, logs=None):
        if self.round == 0 and self._rewind_step is None:
            # On JAX, Keras keeps the training state outside the variables
            # during an epoch; reading `self.model` syncs it back first.
            self.model  # noqa: B018
            step = self._optimizer_reset.iterations()
            if step - self._iteration0 >= self.rewind_iteration:
                self._take_rewind_point()

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_in_round += 1
        if self.round == 0 and self._rewind_step is None and self.rewind_epoch:
            if self._epochs_in_round == self.rewind_epoch:
                self._take_rewind_point()
        if logs is not None:
            logs["weights_remaining"] = self._remaining
            logs["pruning_round"] = self.round
        entry = self.history[-1]
        entry["epochs"] += 1
        if self.early_bird is not None:
            self._watch_early_bird(entry, logs)
        entry["logs"] = {k: float(v) for k, v in (logs or {}).items()}
        if self.epochs_per_round and self._epochs_in_round == self.epochs_per_round:
            if not self._can_prune():
                self.model.stop_training = True
                self._say(f"round {self.round} was the last; stopping training.")

    def _watch_early_bird(self, entry, logs):
        record = entry.setdefault("early_bird", {"epoch": None, "iteration": None, "distances": []})
        if self._early_round != self.round:
            self._early_round, self._early_recent = self.round, []
        distances, drawn = [], record["epoch"] is not None
        if self._can_prune() and not drawn:
            masks = masks_lib.get_masks(self.model)
            rng_state = self._rng.bit_generator.state  # the candidate draws nothing
            candidate = self._prune(masks_lib.get_kernels(self.model), masks)
            self._rng.bit_generator.state = rng_state
            self._early_recent, distances, drawn = self.early_bird.observe(
                self._early_recent, candidate, masks
            )
            record["distances"].append(distances)
            drawn = drawn and self._rewind_step is not None
            if drawn:
                record["epoch"] = entry["epochs"]
                record["iteration"] = self._optimizer_reset.iterations()
                self._say(f"round {self.round}: early-bird mask drawn at epoch {entry['epochs']}.")
        if logs is not None:
            logs["early_bird_distance"] = max(distances) if distances else float("nan")
        if drawn:
            if self.epochs_per_round:
                self._epochs_in_round = self.epochs_per_round  # the next epoch prunes
            else:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        self._round_trained = True
        exactness.check_weights(self.model)
        # Whatever wrote the weights at the end of `fit` (an optimizer's EMA
        # swaps in the averages), pruned weights stay exactly zero.
        masks_lib.apply_masks(self.model)

    # State -----------------------------------------------------------------

    def get_state(self):
        """The pruner's progress, for checkpoints; the inverse of `set_state`.

        Returns:
            A dict of JSON-ready values, except `"snapshot"`: the rewind
            point's unmasked weights as a dict of NumPy arrays (or `None`
            before the rewind point). The masked layers' part of the rewind
            point lives in the model, as their initial weights.

        Example:

        ```python
        state = pruner.get_state()
        ```
        """
        return {
            "round": self.round,
            "history": copy.deepcopy(self.history),
            "started": self._started,
            "round_trained": self._round_trained,
            "epochs_in_round": self._epochs_in_round,
            "rewind_step": self._rewind_step,
            "iteration0": self._iteration0,
            "remaining": self._remaining,
            "rng": self._rng.bit_generator.state,
            "early_bird": {
                "round": self._early_round,
                "recent": early_bird_lib.pack_recent(self._early_recent),
            },
            "snapshot": None if self._snapshot is None else dict(self._snapshot.values),
            "gradual": None if self._gradual is None else self._gradual.get_state(),
        }

    def set_state(self, state):
        """Restores progress saved by `get_state` (e.g. to resume a run).

        Use it on a new pruner with the same arguments, attached to a model
        that holds the weights (masks and initial weights included) saved
        with the state.

        Args:
            state: A dict as returned by `get_state`.

        Example:

        ```python
        pruner = lth_keras.LotteryPruner(rate=0.2)
        pruner.set_state(saved_state)
        model.fit(x, y, epochs=2, callbacks=[pruner])  # continues the run
        ```
        """
        self.round = int(state["round"])
        self.history = copy.deepcopy(state["history"])
        self._started = bool(state["started"])
        self._round_trained = bool(state["round_trained"])
        self._epochs_in_round = int(state["epochs_in_round"])
        self._rewind_step = state["rewind_step"]
        self._iteration0 = int(state["iteration0"])
        self._remaining = float(state["remaining"])
        self._rng.bit_generator.state = state["rng"]
        early = state.get("early_bird") or {"round": None, "recent": []}
        self._early_round = early["round"]
        self._early_recent = early_bird_lib.unpack_recent(early["recent"])
        snapshot = state["snapshot"]
        self._snapshot = None if snapshot is None else WeightSnapshot.from_values(snapshot)
        if self._gradual is not None:
            self._gradual.set_state(state.get("gradual"))

    # Rounds ----------------------------------------------------------------

    def _start(self):
        if self.seed is None:
            self._rng = np.random.default_rng(_seed_from_weights(self.model))
        masks = masks_lib.get_masks(self.model)
        self._check_structure(masks)
        self._remaining = pruning.fraction_remaining(masks)[0]
        self._iteration0 = self._optimizer_reset.iterations()
        self._started = True
        self._epochs_in_round = 0
        self._append_history(masks)
        if not (self.rewind_epoch or self.rewind_iteration):
            # A model that is already pruned keeps the initial weights it holds.
            self._take_rewind_point(save_initial=self._remaining == 1.0)

    def _take_rewind_point(self, save_initial=True):
        self._snapshot = WeightSnapshot(self.model, save_initial=save_initial)
        self._rewind_step = self._optimizer_reset.iterations()

    def _can_prune(self):
        if self._gradual is not None:
            return False  # no rounds: the schedule prunes during training
        return self.schedule.can_prune(self.round, self._remaining)

    def _maybe_next_round(self):
        if not self._can_prune():
            self._say(f"pruning is finished after round {self.round}; training the ticket on.")
            return
        if self._rewind_step is None:
            point = (
                f"rewind_epoch={self.rewind_epoch}"
                if self.rewind_epoch
                else f"rewind_iteration={self.rewind_iteration}"
            )
            raise ValueError(
                f"Round 0 ended before its rewind point ({point}); it trained "
                f"{self._epochs_in_round} epochs. Train round 0 longer, or rewind earlier."
            )
        old = masks_lib.get_masks(self.model)
        new = self._prune(masks_lib.get_kernels(self.model), old)
        if all(np.array_equal(new[key], old[key]) for key in new):
            warnings.warn(
                f"LotteryPruner: round {self.round + 1} prunes no weight: the structure "
                f"({type(self.structure).__name__}), rates and exclusions allow no sparser "
                "mask (e.g. every group of 2:4 already holds 2 of 4), so this round and "
                "later ones retrain the same mask. Stop earlier with max_rounds or "
                "target_sparsity.",
                stacklevel=2,
            )
        masks_lib.set_masks(self.model, new)
        self._reset_weights()
        self.round += 1
        self._round_trained = False
        self._epochs_in_round = 0
        self._remaining, per_kernel = pruning.fraction_remaining(new)
        self._append_history(new)
        layers = ", ".join(f"{k}: {v:.1%}" for k, v in per_kernel.items())
        self._say(f"round {self.round}: {self._remaining:.2%} of weights remain ({layers}).")

    def _prune(self, kernels, old):
        return self.targets.prune(self.model, self._rng, kernels, old, bind=False)

    def _check_structure(self, masks):
        """Refuses, before round 0 trains, layers the structure cannot prune."""
        self.targets.check(self.model)

    def _reset_weights(self):
        context = ResetContext(
            model=self.model,
            snapshot=self._snapshot,
            rewind_step=self._rewind_step,
            step=self._optimizer_reset.iterations(),
            rng=self._rng,
        )
        self._optimizer_reset.reset(iterations=self.reset.apply(context))

    def _append_history(self, masks):
        total, per_kernel = pruning.fraction_remaining(masks)
        self.history.append(
            {
                "round": self.round,
                "weights_remaining": total,
                "layers": per_kernel,
                "epochs": 0,
                "logs": {},
            }
        )

    def _say(self, message):
        if self.verbose > 0:
            print(f"LotteryPruner: {message}")
