"""Finding winning tickets end to end: rounds, controls, run directories, resume.

`run(config, run_dir)` trains round 0 (dense), then `config.rounds` rounds of
pruning with `LotteryPruner` (one `fit` per round), and after every pruned
round the requested controls at the same sparsity. Every job is evaluated on
the validation set every `eval_every` steps, and on the test set at its
early-stopping point and its end (`training.EvalRecorder`).

With `config.early_bird`, a ticket round that only serves to find the next
mask ends once that mask stops changing (`lth_keras.pruning.EarlyBird`);
the last round trains in full, and a round of `config.eval_rounds` goes on
training to `iterations` after its round-end state is saved at the draw
(see `lth_keras.experiments.early_bird`). Every row records
`mask_iterations`, the ticket training spent before its mask was drawn.

The run directory holds `config.json`, `flags.json` (when run from the
command line), `progress.json` (finished jobs with their results, file
checksums, the last checkpoint), `metrics.csv`, `metrics.jsonl`,
`masks/round_XX.npz`, `rewind.ticket.npz` (round 0 as a ticket file, see
`lth_keras.load_ticket`: its rewind weights are the rewind point of every
round), `records/<job>.json` (evaluation records),
`state/` (the last finished round: weights, optimizer and pruner state),
`checkpoints/` (the unfinished job's last checkpoint), `ticket.keras` (the
last round's trained ticket), `summary.txt`, `plots/*.png` and
`tensorboard/`.

A run can be killed at any moment and resumed by running it again: finished
jobs are skipped and an unfinished one continues from its last checkpoint
(every `checkpoint_every` evaluation periods) with the same data stream and
optimizer state, so it ends with the same masks as an uninterrupted run.
Every file is written atomically; the files a resumed run reads back (masks,
rewind weights, states, checkpoints, records) are checked against their
SHA-256 in `progress.json`. Reports (`metrics.*`, `summary.txt`, plots) are
rewritten from `progress.json` after every job; TensorBoard files are
appended to.
"""

import contextlib
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import lth_keras
from lth_keras import _compat, pruning
from lth_keras import masks as masks_lib
from lth_keras.callbacks import LotteryPruner
from lth_keras.convert import prunable
from lth_keras.experiments import data as data_lib
from lth_keras.experiments import early_bird, report, summaries, training
from lth_keras.experiments.arms import ARMS, AT_INIT_EXAMPLES_PER_CLASS, schedule
from lth_keras.experiments.models import build_model
from lth_keras.experiments.overlap import OverlapTracker
from lth_keras.experiments.progress import Progress
from lth_keras.experiments.rundir import RunDir
from lth_keras.experiments.state import RunState
from lth_keras.rewind import OptimizerReset
from lth_keras.tickets import load_ticket, save_ticket

__all__ = ["default_run_dir", "run"]

#: Seconds of a job's training between checkpoints (`run(checkpoint_every=None)`).
CHECKPOINT_SECONDS = 60.0
#: Seconds between plot updates during a run; the last plots are drawn at its end.
PLOT_SECONDS = 60.0


def default_run_dir(config, base="runs"):
    """`<base>/<model>-<config hash>`: a directory per distinct config.

    Example:

    ```python
    default_run_dir(preset("lenet"))  # 'runs/lenet-3f2a...'
    ```
    """
    return os.path.join(base, f"{config.model}-{config.hash()}")


def run(config, run_dir=None, *, strategy=None, verbose=1, checkpoint_every=None, flag_values=None):
    """Runs (or resumes) an iterative-magnitude-pruning experiment.

    Args:
        config: An `ExperimentConfig`.
        run_dir: The run directory. Defaults to `None`, meaning
            `default_run_dir(config)`.
        strategy: A `tf.distribute.Strategy` (see
            `lth_keras.tensorflow.distribute`; TensorFlow backend only);
            under a multi-worker strategy every worker runs this same call
            and only the chief writes the run directory. Defaults to `None`
            (the default strategy; on JAX, the current
            `keras.distribution`, e.g. `DataParallel`).
        verbose: `0` silent; `1` live progress of each job (an updating
            line on a terminal, a line per evaluation otherwise), a line per
            finished job and the final table; `2` also a line per evaluation
            on a terminal and the pruner's line per round. Defaults to `1`.
        checkpoint_every: Evaluation periods between checkpoints inside a
            job (and one after its last period). Defaults to `None`: a
            checkpoint at the first period end after each
            `CHECKPOINT_SECONDS` (60) of a job's training, none after its
            last period (the job's results are written right after). A
            killed run resumes from its last checkpoint to the same results
            either way.
        flag_values: Command-line flag values to save as `flags.json`.
            Defaults to `None`.

    Returns:
        The result rows of all jobs (see `lth_keras.report`).

    Raises:
        ValueError: If `run_dir` holds a run with a different config.
        lth_keras.experiments.rundir.CorruptRunError: If a file of the run directory
            is truncated or altered.

    Example:

    ```python
    from lth_keras.experiments import preset, run

    rows = run(preset("lenet", rounds=5), "runs/lenet")
    ```
    """
    tensorflow = keras.backend.backend() == "tensorflow"
    if strategy is not None and not tensorflow:
        raise ValueError(
            "`strategy` is a tf.distribute strategy and needs the TensorFlow backend. Received: "
            f"a strategy with KERAS_BACKEND={keras.backend.backend()!r}. On JAX, set a "
            "keras.distribution (e.g. DataParallel) instead."
        )
    placement = _Placement(strategy)
    with _compat.op_determinism(tensorflow and not placement.jit_compile(config)):
        experiment = Experiment(
            config,
            run_dir or default_run_dir(config),
            placement,
            verbose,
            checkpoint_every,
        )
        try:
            if flag_values is not None:
                experiment.run_dir.write_json("flags.json", flag_values)
            return experiment.run()
        finally:
            experiment.run_dir.close()
            if not experiment.chief:
                shutil.rmtree(experiment.run_dir.write_path, ignore_errors=True)


class Experiment:
    """One run: the job schedule, the models, the run directory and reports.

    `run()` is the entry point; this class is its engine (and what tests
    patch to simulate crashes).
    """

    def __init__(self, config, run_dir, placement, verbose, checkpoint_every):
        self.config = config
        self.placement = placement
        self.chief = placement.chief()
        self.verbose = verbose if self.chief else 0
        self.checkpoint_every = checkpoint_every
        self._plotted_at = time.monotonic()  # of the last plots drawn (or the start)
        self._plots_stale = True  # some finished job is not in the plots yet
        versions = {
            "lth_keras": lth_keras.__version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "backend": keras.backend.backend(),
        }
        # Other workers read the run but write their copies somewhere private.
        write_to = None if self.chief else tempfile.mkdtemp(prefix="lth_keras-worker-")
        try:
            self.run_dir = RunDir(
                run_dir,
                config.to_dict(),
                extra={"hash": config.hash(), "versions": versions},
                write_to=write_to,
                defaults=type(config)().to_dict(),
            )
        except BaseException:
            if write_to:
                shutil.rmtree(write_to, ignore_errors=True)
            raise
        try:
            self._build(config)
        except BaseException:
            self.run_dir.close()
            raise

    def _build(self, config):
        keras.utils.set_random_seed(config.seed)
        self.splits = data_lib.load(
            config.dataset,
            batch_size=config.batch_size,
            validation_examples=config.validation_examples,
            train_examples=config.train_examples,
            test_examples=config.test_examples,
            train_eval_examples=config.train_eval_examples,
            augment=config.augment,
            seed=config.seed,
        )
        self.model = self._new_model()
        self.pruner = LotteryPruner(
            config.rate,
            output_rate=config.output_rate,
            layer_rates=dict(config.layer_rates),
            exclude=config.exclude,
            scope=config.scope,
            structure=config.structure,
            reset=config.reset,
            rewind_iteration=config.rewind_iteration,
            seed=config.seed,
            verbose=1 if self.verbose >= 2 else 0,
        )
        self._early_bird = early_bird.rule(config)
        self.state = RunState(self.run_dir, self.pruner, self._scope)
        self._state_round = -1  # the round whose end state self.model holds
        self._control = None
        self._rewind = None  # the rewind point as a Ticket, read once per process
        self._batch = None  # the training batch of scores at initialisation

    def _new_model(self):
        with self.placement.build_scope():
            model = prunable(
                build_model(
                    self.config.model,
                    self.splits.input_shape,
                    self.splits.num_classes,
                    self.config.width,
                )
            )
            return training.compile_for(
                model,
                self.config,
                self.placement.steps_per_execution(self.config),
                self.placement.jit_compile(self.config),
            )

    def _scope(self, model):
        return self.placement.fit_scope(model)

    # Jobs ------------------------------------------------------------------

    def run(self):
        for name, round_ in schedule(self.config):
            if _job(name, round_) not in self.run_dir.progress["done"]:
                if name == "ticket":
                    self._ticket(round_)
                else:
                    self._control_job(ARMS.get(name), round_)
        if "final" not in self.run_dir.progress:
            self._load_round_end(self.config.rounds)
            digest = self.run_dir.save_with("ticket.keras", self.model.save)
            self.run_dir.commit(files={"ticket.keras": digest}, final=True)
        rows = list(self.run_dir.progress["done"].values())
        if self.chief:
            report.write_reports(self.run_dir, rows, plots=self._plots_stale)
        if self.verbose:
            print(report.table(report.sort_rows(rows)), end="")
        return report.sort_rows(rows)

    def _ticket(self, round_):
        job = _job("ticket", round_)
        arm = ARMS.get("ticket")
        # The last round has no next mask to find: it always trains in full.
        self.pruner.early_bird = self._early_bird if round_ < self.config.rounds else None
        drawn = self.run_dir.progress.get("drawn")
        if drawn is None or drawn["job"] != job:
            records, wall, overlaps, files, end = self._find_mask(job, arm, round_)
            fields = early_bird.row_fields(self.config, self.pruner, round_, records)
            fields["mask_iterations"] = self._mask_iterations(round_)
            if fields.get("early_bird_iteration") is not None:
                fields["early_bird_seconds"] = wall  # the training time to the draw
            if not early_bird.trains_on(self.config, round_, records):
                masks = masks_lib.get_masks(self.model)
                row = self._row(arm, round_, records, wall, masks, self.model, overlaps, **fields)
                self._finish_job(job, row, records, files, round_end=end)
                self._state_round = round_
                return
            drawn = {"job": job, "records": records, "wall": wall, "fields": fields}
            self._commit_round_end(files, end, drawn)
        # An evaluation round: on from the draw to `iterations`, pruner detached.
        records, wall, overlaps = self._train_on(job, arm, round_, drawn)
        masks = masks_lib.get_masks(self.model)
        row = self._row(arm, round_, records, wall, masks, self.model, overlaps, **drawn["fields"])
        self._finish_job(job, row, records, {}, drawn=None)

    def _find_mask(self, job, arm, round_):
        """Trains the ticket of `round_` (to the early-bird point, if any); saves its round end."""
        resumed = self.state.load_checkpoint(job, self.model, pruner=True)
        if resumed is None:
            if round_ > 0:
                self._load_round_end(round_ - 1)
            resumed = (arm.start_period(self.config, round_), [], 0.0)
        else:
            self._state_round = None
        records, wall, overlaps = self._train(self.model, job, arm, round_, *resumed, pruner=True)
        early_bird.annotate(records, self.pruner, round_)
        masks = masks_lib.get_masks(self.model)
        files = {
            f"masks/round_{round_:02d}.npz": self.run_dir.save_npz(
                f"masks/round_{round_:02d}.npz", masks
            )
        }
        if self._keeps_trained_tickets():
            name = _trained_ticket(round_)
            files[name] = self.run_dir.save_with(
                name, lambda path: save_ticket(self.model, path, pruner=self.pruner)
            )
        if round_ == 0:
            files["rewind.ticket.npz"] = self.run_dir.save_with(
                "rewind.ticket.npz",
                lambda path: save_ticket(
                    self.model, path, pruner=self.pruner, config=self.config.to_dict()
                ),
            )
        end = {"round": round_, **self.state.save(f"state/round_{round_:02d}", self.model, True)}
        files.update(end["files"])
        return records, wall, overlaps, files, end

    def _commit_round_end(self, files, end, drawn):
        """Records a round end (its mask drawn) before the round's job is finished."""
        old = self.run_dir.progress.get("round_end")
        checkpoint = self.run_dir.progress.get("checkpoint")
        self.run_dir.commit(files=files, round_end=end, checkpoint=None, drawn=drawn)
        if old:
            self.run_dir.remove(*old["files"])
        if checkpoint:
            self.run_dir.remove(*checkpoint["files"])
        self._state_round = end["round"]

    def _train_on(self, job, arm, round_, drawn):
        """Trains an evaluation round on from its early-bird point, without the pruner."""
        name = f"{job}-full"
        resumed = self.state.load_checkpoint(name, self.model)
        if resumed is None:
            self._load_round_end(round_)
            period = drawn["records"][-1]["iteration"] // self.config.eval_every
            resumed = (period, list(drawn["records"]), drawn["wall"])
        self._state_round = None  # the model leaves the round-end state
        return self._train(self.model, name, arm, round_, *resumed, start_job=job)

    def _mask_iterations(self, round_):
        if round_ == 0:
            return 0
        previous = self.run_dir.progress["done"][_job("ticket", round_ - 1)]
        first = ARMS.get("ticket").start_period(self.config, round_ - 1) * self.config.eval_every
        return early_bird.mask_iterations(previous, first)

    def _control_job(self, arm, round_):
        job = _job(arm.name, round_)
        model, reset = self._control_model()
        resumed = self.state.load_checkpoint(job, model)
        if resumed is None:
            ticket = self.run_dir.load_npz(f"masks/round_{round_:02d}.npz")
            # The rewind point, every weight of it, with round 0's (full) masks.
            if self._rewind is None:
                self._rewind = load_ticket(self.run_dir.verified("rewind.ticket.npz"))
            self._rewind.apply(model, weights="rewind")
            needs = {}
            if arm.needs_trained():
                needs["trained"] = load_ticket(self.run_dir.verified(_trained_ticket(round_ - 1)))
            if arm.needs_batch():
                needs["batch"] = self._score_batch()
            arm.prepare(model, ticket, self.config, round_, **needs)
            start = arm.start_period(self.config, round_)
            reset.reset(iterations=start * self.config.eval_every)
            resumed = (start, [], 0.0)
        records, wall, overlaps = self._train(model, job, arm, round_, *resumed)
        ticket_row = self.run_dir.progress["done"][_job("ticket", round_)]
        cost = arm.mask_iterations(ticket_row.get("mask_iterations"))
        masks = masks_lib.get_masks(model)
        row = self._row(arm, round_, records, wall, masks, model, overlaps, mask_iterations=cost)
        self._finish_job(job, row, records, {})

    def _score_batch(self):
        """The first examples of the training stream, for SNIP and GraSP: 10 per class."""
        if self._batch is None:
            count = AT_INIT_EXAMPLES_PER_CLASS * self.splits.num_classes
            batches = -(-count // self.config.batch_size)
            stream = self.splits.train(start_step=0).take(batches).as_numpy_iterator()
            xs, ys = zip(*stream, strict=True)
            self._batch = (np.concatenate(xs)[:count], np.concatenate(ys)[:count])
        return self._batch

    def _control_model(self):
        """The model controls train on: the ticket's own model, re-set for each.

        One model means one traced (and XLA-compiled) train step per process;
        the ticket's next round reloads its state from the run directory.
        """
        self._state_round = None
        if self._control is None:
            with self._scope(self.model):
                self.model.optimizer.build(self.model.trainable_variables)
                reset = OptimizerReset(self.model.optimizer, self.model.trainable_variables)
            self._control = (self.model, reset)
        return self._control

    def _train(
        self, model, job, arm, round_, start_period, records, wall, pruner=False, start_job=None
    ):
        config = self.config
        periods = config.iterations // config.eval_every
        if pruner and early_bird.drawn(self.pruner, round_):
            periods = start_period  # resumed after the draw: no epoch, just the round's end
        began = time.perf_counter()

        saved = [began]

        def on_period(period, so_far):
            now = time.perf_counter()
            if self.checkpoint_every is None:
                due = period < periods and now - saved[0] >= CHECKPOINT_SECONDS
            else:
                due = period % self.checkpoint_every == 0 or period == periods
            if due:
                recorder.flush()  # the records saved hold the test accuracy of their best period
                self.state.save_checkpoint(job, model, period, so_far, wall + now - began, pruner)
                saved[0] = time.perf_counter()

        recorder = training.EvalRecorder(self.splits.test, config.eval_every, records, on_period)
        start_job = start_job or job
        tracker = OverlapTracker(
            config.overlap_ps,
            self._job_start(start_job),
            lambda kernels: self._save_start(start_job, kernels),
        )
        callbacks = [self.pruner, tracker, recorder] if pruner else [tracker, recorder]
        if self.verbose:
            label = f"{arm.name:>6} round {round_:2d}"
            start = start_period * config.eval_every
            tty = False if self.verbose >= 2 else None
            callbacks.append(Progress(label, config.iterations, start, config.eval_every, tty=tty))
        with self._scope(model):
            model.fit(
                self.splits.train(start_step=start_period * config.eval_every),
                epochs=periods,
                initial_epoch=start_period,
                steps_per_epoch=config.eval_every,
                validation_data=self.splits.validation,
                callbacks=callbacks,
                shuffle=False,
                verbose=0,
            )
        return recorder.records, wall + time.perf_counter() - began, tracker.overlaps(model)

    def _row(self, arm, round_, records, wall, masks, model, overlaps, **extra):
        total, per_kernel = pruning.fraction_remaining(masks)
        with self._scope(model):
            train = model.evaluate(self.splits.train_eval, verbose=0, return_dict=True)
        first = arm.start_period(self.config, round_) * self.config.eval_every
        return {
            "round": round_,
            "kind": arm.name,
            "weights_remaining": total,
            "layers": per_kernel,
            "iterations": records[-1]["iteration"] - first,
            **training.early_stopping(records),
            "train_accuracy": float(train["accuracy"]),
            "wall_seconds": wall,
            **overlaps,
            **extra,
        }

    def _finish_job(self, job, row, records, files, **replace):
        name = f"records/{job}.json"
        files[name] = self.run_dir.write_json(name, records)
        old = self.run_dir.progress.get("round_end") if "round_end" in replace else None
        checkpoint = self.run_dir.progress.get("checkpoint")
        start = self.run_dir.progress.get("start")
        self.run_dir.commit(done={job: row}, files=files, checkpoint=None, start=None, **replace)
        if start:
            self.run_dir.remove(start["file"])
        if old:
            self.run_dir.remove(*old["files"])
        if checkpoint:
            self.run_dir.remove(*checkpoint["files"])
        if self.chief:
            summaries.write_job(self.run_dir.file("tensorboard"), row, records)
            drawn = self._last_of_round(row) and self._plots_due()
            report.write_reports(
                self.run_dir, list(self.run_dir.progress["done"].values()), plots=drawn
            )
            self._plots_stale = not drawn
        if self.verbose:
            print(report.job_line(row), flush=True)

    def _plots_due(self):
        """Plots cost 0.3-1 s: drawn every `PLOT_SECONDS` at most, and at the end."""
        now = time.monotonic()
        if now - self._plotted_at < PLOT_SECONDS:
            return False
        self._plotted_at = now
        return True

    def _job_start(self, job):
        """The start kernels of `job` if it was started before (a resume), else `None`."""
        entry = self.run_dir.progress.get("start")
        if not entry or entry["job"] != job:
            return None
        return self.run_dir.load_npz(entry["file"])

    def _save_start(self, job, kernels):
        name = f"checkpoints/{job}-start.npz"
        digest = self.run_dir.save_npz(name, kernels, compress=False)
        self.run_dir.commit(files={name: digest}, start={"job": job, "file": name})

    def _keeps_trained_tickets(self):
        return any(ARMS.get(name).needs_trained() for name in self.config.controls)

    def _last_of_round(self, row):
        config, round_ = self.config, row["round"]
        if round_ == 0 or (config.control_rounds and round_ not in config.control_rounds):
            return True
        return row["kind"] == (config.controls[-1] if config.controls else "ticket")

    def _load_round_end(self, round_):
        if self._state_round == round_:
            return
        end = self.run_dir.progress["round_end"]
        if end["round"] != round_:
            raise RuntimeError(f"Expected the end state of round {round_}, found {end['round']}.")
        self.state.load(end, self.model, pruner=True)
        self._state_round = round_


class _Placement:
    """Where models are built and trained: a tf.distribute strategy, or nothing.

    On the TensorFlow backend this wraps the strategy (the default one when
    none is given); on other backends there is none, and Keras' own
    `keras.distribution` (if set) places the model.
    """

    def __init__(self, strategy):
        self.strategy = None
        if keras.backend.backend() == "tensorflow":
            from lth_keras.tensorflow import distribute

            self._distribute = distribute
            self.strategy = strategy or tf.distribute.get_strategy()

    def chief(self):
        return self.strategy is None or self._distribute.is_chief(self.strategy)

    def _multi_worker(self):
        return isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def steps_per_execution(self, config):
        """The config's, except under MultiWorkerMirroredStrategy and on PyTorch: 1 unless set.

        Keras 3.15's multi-step train function fails under that strategy
        ("You must feed a value for placeholder tensor ..."), so the default
        of up to 100 steps per call applies to the other strategies only.
        """
        if config.steps_per_execution is None and (
            self._multi_worker() or keras.backend.backend() == "torch"
        ):
            return 1  # Keras' torch trainer refuses more than one step per call
        return config.execution_steps

    def jit_compile(self, config):
        """The config's; unset, XLA except under MultiWorkerMirroredStrategy.

        TensorFlow 2.21 with XLA under that strategy aborts ("double free or
        corruption" while collecting garbage).
        """
        if config.jit_compile is not None:
            return config.jit_compile
        return not self._multi_worker()

    def build_scope(self):
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    def fit_scope(self, model):
        if self.strategy is None:
            return contextlib.nullcontext()
        return self._distribute.fit_scope(model, self.strategy)


def _trained_ticket(round_):
    return f"tickets/round_{round_:02d}.ticket.npz"


def _job(kind, round_):
    return f"{kind}-r{round_:02d}"
