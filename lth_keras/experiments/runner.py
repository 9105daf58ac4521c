"""Finding winning tickets end to end: rounds, controls, run directories, resume.

`run(config, run_dir)` trains round 0 (dense), then `config.rounds` rounds of
pruning with `LotteryPruner` (one `fit` per round), and after every pruned
round the requested controls at the same sparsity (one after another, or,
with `fuse`, the controls of a round together in one compiled step, each
its own model; see `lth_keras.experiments.fused`). Every job is evaluated on
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
`checkpoints/` (the unfinished job's last checkpoint, and those of the
controls trained fused beside it), `ticket.keras` (the
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

This module holds `run` and its engine, `Experiment`: the job schedule, the
ticket's rounds (mask found, early-bird draw, evaluation round) and the
round-end states the model moves between. Each job is set up, trained and
recorded by `lth_keras.experiments.jobs.Jobs`; models are built and trained
where `lth_keras.experiments.placement.Placement` says (a tf.distribute
strategy, or none).
"""

import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import lth_keras
from lth_keras import _compat
from lth_keras import masks as masks_lib
from lth_keras.callbacks import LotteryPruner
from lth_keras.experiments import checks, early_bird, report, runfiles
from lth_keras.experiments import data as data_lib
from lth_keras.experiments.arms import ARMS, schedule
from lth_keras.experiments.jobs import Jobs
from lth_keras.experiments.placement import Placement
from lth_keras.experiments.progress import RunProgress
from lth_keras.experiments.rundir import CorruptRunError, RunDir
from lth_keras.experiments.state import RunState
from lth_keras.experiments.verify import verify_run
from lth_keras.options import check_choice
from lth_keras.rewind import OptimizerReset

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


def run(
    config,
    run_dir=None,
    *,
    strategy=None,
    verbose=1,
    checkpoint_every=None,
    flag_values=None,
    fuse="auto",
):
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
        fuse: How the networks of a run that do not depend on each other
            (the trials of `config.trials`; the controls of a round) train:
            `"auto"` together in one compiled step (see
            `lth_keras.experiments.fused`) where that was measured faster
            (small models on a GPU or TPU, never on a CPU:
            `lth_keras.experiments.trials.fuse_reason`), `"on"` together
            wherever it can work, `"off"` one after another. The results
            are the same either way. Defaults to `"auto"`.

    Returns:
        The result rows of all jobs (see `lth_keras.experiments.report`).

    Everything that can be checked before training (the config against the
    data set, the model's layer names, the memory a batch needs) is checked
    before the run directory is created or locked. A rerun first verifies
    every recorded file of the directory (`lth_keras.experiments.verify`):
    what can be made from the rest again is, with a warning. A run that
    fails before its first job is done or checkpointed removes what it
    wrote, so the corrected command starts afresh.

    Raises:
        ValueError: If `run_dir` holds a run with a different config, the
            config does not fit the data or the model, or `fuse="on"` where
            nothing can be fused (one trial and at most one control a round,
            the PyTorch backend, a tf.distribute strategy, early-bird
            rounds).
        lth_keras.experiments.rundir.CorruptRunError: If a file of the run
            directory is truncated, altered or malformed and cannot be made
            again from the others.

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
    check_choice(fuse, "fuse", checks.FUSE_CHOICES)
    placement = Placement(strategy)
    from lth_keras.experiments import trials

    trials.refuse_fuse_on(config, placement, fuse)  # before the run directory is made
    if config.trials > 1:
        if not placement.chief() or placement.multi_worker():
            raise ValueError(
                f"Received trials={config.trials} under a multi-worker strategy, which runs one "
                "trial at a time: start one run per seed instead."
            )

        with _compat.op_determinism(tensorflow and not placement.jit_compile(config)):
            return trials.run_trials(
                config,
                run_dir or default_run_dir(config),
                placement,
                verbose,
                checkpoint_every,
                flag_values,
                fuse,
                make=lambda trial, path: Experiment(trial, path, placement, 0, checkpoint_every),
            )
    with _compat.op_determinism(tensorflow and not placement.jit_compile(config)):
        experiment = Experiment(
            config,
            run_dir or default_run_dir(config),
            placement,
            verbose,
            checkpoint_every,
        )
        try:
            experiment.fuser, _ = trials.fuser_for(config, placement, experiment.model, fuse)
            return experiment.run(flag_values)
        except BaseException:
            if experiment.chief:
                experiment.run_dir.discard()  # only a run that recorded nothing
            raise
        finally:
            experiment.run_dir.close()
            if not experiment.chief:
                shutil.rmtree(experiment.run_dir.write_path, ignore_errors=True)


class Experiment:
    """One run: the job schedule, the model, its round-end states, the run directory.

    `run()` is the entry point; this class is its engine (and what tests
    patch to simulate crashes). It hands each job's start, training, row and
    bookkeeping to `self.jobs` (a `Jobs`).
    """

    def __init__(self, config, run_dir, placement, verbose, checkpoint_every):
        self.config = config
        # With a `Fuser`, the controls of a round train together (`run_jobs`).
        self.fuser = None
        self.placement = placement
        self.chief = placement.chief()
        self.verbose = verbose if self.chief else 0
        self.checkpoint_every = checkpoint_every
        started = time.monotonic()  # the plots' clock
        self._build(config)  # and check it against the data and model: nothing is written yet
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
                check=type(config).from_dict,
            )
        except BaseException:
            if write_to:
                shutil.rmtree(write_to, ignore_errors=True)
            raise
        try:
            self._check_progress(config)
            self.run_progress = RunProgress(config, run_dir, self.run_dir.progress)
            if self.verbose:
                self.run_progress.write(self.run_progress.first_line())
            self._open(config, started)
        except BaseException:
            self.run_dir.close()
            raise

    def _build(self, config):
        """The data, the model and the pruner, checked against the config; nothing written."""
        keras.utils.set_random_seed(config.seed)
        self.splits = data_lib.load_config(config)
        self.model = self.placement.compiled_model(config, self.splits)
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
        checks.check_fit(config, self.splits, self.model)

    def _check_progress(self, config):
        """Checks every field of the run directory's `progress.json` before it is used."""
        masked = sum(int(np.prod(m.shape)) for m in masks_lib.get_masks(self.model).values())
        path = os.path.join(self.run_dir.path, "progress.json")
        runfiles.check_progress(self.run_dir.progress, config, path, masked_weights=masked)

    def _open(self, config, started):
        """Sets up the run's state and jobs on its run directory."""
        self._early_bird = early_bird.rule(config)
        self.state = RunState(self.run_dir, self.pruner, self._scope)
        self._state_round = -1  # the round whose end state self.model holds
        self._controls = []  # (model, optimizer reset) of each control trained at once
        self.jobs = Jobs(
            config,
            self.run_dir,
            self.state,
            self.splits,
            self.pruner,
            self._scope,
            chief=self.chief,
            verbose=self.verbose,
            checkpoint_every=self.checkpoint_every,
            checkpoint_seconds=CHECKPOINT_SECONDS,
            plot_seconds=PLOT_SECONDS,
            started=started,
            run_progress=self.run_progress,
        )

    def _scope(self, model):
        return self.placement.fit_scope(model)

    # Jobs ------------------------------------------------------------------

    def run(self, flag_values=None):
        """Runs every job not done yet (after verifying the run directory); returns the rows."""
        from lth_keras.experiments.fused import run_jobs
        from lth_keras.experiments.trials import fused_jobs

        self.prepare(flag_values)
        if self.fuser is not None and self.verbose:
            print(
                "the controls of a round that start at the same iteration train together, "
                "fused in one compiled step",
                flush=True,
            )
        run_jobs(
            [self.pending_jobs()],
            self.fuser,
            label=lambda pairs: fused_jobs([training for _, training in pairs]),
            verbose=self.verbose,
        )
        return self.finish()

    def prepare(self, flag_values=None):
        """Verifies the run directory (the chief) and saves the flags."""
        if self.chief:
            verify_run(self)
        if flag_values is not None:
            self.run_dir.write_json("flags.json", flag_values)

    def pending_jobs(self):
        """The jobs not done yet, in schedule order, each as a generator of its trainings.

        A job's generator yields each `lth_keras.experiments.jobs.Training`
        it needs and is sent back its result, `(records, wall, overlaps)`
        (see `lth_keras.experiments.fused.run_jobs`); it records the job
        when it ends. With a `fuser`, the consecutive controls of a round
        that start at the same period (all but those that rewind late) and
        are not done yet are one generator, which yields the list of their
        trainings, is sent back the list of their results and records them
        all at once. Whether a job is done is read when the previous one
        has ended.
        """
        jobs = list(schedule(self.config))
        index = 0
        while index < len(jobs):
            name, round_ = jobs[index]
            if name == "ticket":
                index += 1
                if _job(name, round_) not in self.run_dir.progress["done"]:
                    yield self._ticket(round_)
                continue
            # Consecutive controls that start at the same period train together.
            group = [name]
            start = ARMS.get(name).start_period(self.config, round_)
            while self.fuser is not None and index + len(group) < len(jobs):
                following, _ = jobs[index + len(group)]
                if following == "ticket" or (
                    ARMS.get(following).start_period(self.config, round_) != start
                ):
                    break
                group.append(following)
            index += len(group)
            done = self.run_dir.progress["done"]
            arms = [ARMS.get(n) for n in group if _job(n, round_) not in done]
            if arms:
                yield self._control_job(arms, round_)

    def finish(self):
        """Saves the last round's ticket, writes the reports; returns the rows, sorted."""
        if "final" not in self.run_dir.progress:
            self.load_round_end(self.config.rounds)
            digest = self.run_dir.save_with("ticket.keras", self.model.save)
            self.run_dir.commit(files={"ticket.keras": digest}, final=True)
        rows = list(self.run_dir.progress["done"].values())
        if self.chief:
            report.write_reports(self.run_dir, rows, plots=self.jobs.plots_stale)
        if self.verbose:
            self.run_progress.write(self.run_progress.closing_line())
            print(report.table(report.sort_rows(rows)), end="")
        return report.sort_rows(rows)

    def _ticket(self, round_):
        job = _job("ticket", round_)
        arm = ARMS.get("ticket")
        # The last round has no next mask to find: it always trains in full.
        self.pruner.early_bird = self._early_bird if round_ < self.config.rounds else None
        drawn = self.run_dir.progress.get("drawn")
        if drawn is None or drawn["job"] != job:
            records, wall, overlaps, files, end = yield from self._find_mask(job, arm, round_)
            fields = early_bird.row_fields(self.config, self.pruner, round_, records)
            fields["mask_iterations"] = self._mask_iterations(round_)
            if fields.get("early_bird_iteration") is not None:
                fields["early_bird_seconds"] = wall  # the training time to the draw
            if not early_bird.trains_on(self.config, round_, records):
                row = self.jobs.row(arm, round_, records, wall, self.model, overlaps, **fields)
                self.jobs.finish(job, row, records, files, round_end=end)
                self._state_round = round_
                return
            drawn = {"job": job, "records": records, "wall": wall, "fields": fields}
            self.jobs.commit_round_end(files, end, drawn)
            self._state_round = round_
        # An evaluation round: on from the draw to `iterations`, pruner detached.
        records, wall, overlaps = yield from self._train_on(job, arm, round_, drawn)
        row = self.jobs.row(arm, round_, records, wall, self.model, overlaps, **drawn["fields"])
        self.jobs.finish(job, row, records, {}, drawn=None)

    def _find_mask(self, job, arm, round_):
        """Trains the ticket of `round_` (to the early-bird point, if any); saves its round end."""
        resumed = self.state.load_checkpoint(job, self.model, pruner=True)
        if resumed is None:
            if round_ > 0:
                self.load_round_end(round_ - 1)
            resumed = (arm.start_period(self.config, round_), [], 0.0)
        else:
            self._state_round = None
        records, wall, overlaps = yield self.jobs.training(
            self.model, job, arm, round_, *resumed, pruner=True
        )
        early_bird.annotate(records, self.pruner, round_)
        files, end = self.jobs.save_round_end(round_, self.model)
        return records, wall, overlaps, files, end

    def _train_on(self, job, arm, round_, drawn):
        """Trains an evaluation round on from its early-bird point, without the pruner."""
        name = f"{job}-full"
        resumed = self.state.load_checkpoint(name, self.model)
        if resumed is None:
            self.load_round_end(round_)
            period = drawn["records"][-1]["iteration"] // self.config.eval_every
            resumed = (period, list(drawn["records"]), drawn["wall"])
        self._state_round = None  # the model leaves the round-end state
        return (yield self.jobs.training(self.model, name, arm, round_, *resumed, start_job=job))

    def _mask_iterations(self, round_):
        if round_ == 0:
            return 0
        previous = self.run_dir.progress["done"][_job("ticket", round_ - 1)]
        first = ARMS.get("ticket").start_period(self.config, round_ - 1) * self.config.eval_every
        return early_bird.mask_iterations(previous, first)

    def _control_job(self, arms, round_):
        """The control jobs of `arms` at `round_`, trained together (one yield), finished at once.

        The first is the next job of the schedule; the others keep their
        checkpoints in their slots of `progress["fused"]`.
        """
        trainings = []
        for index, (arm, (model, reset)) in enumerate(
            zip(arms, self._control_models(len(arms)), strict=True)
        ):
            job = _job(arm.name, round_)
            resumed = self.state.load_checkpoint(job, model)
            if resumed is None:
                resumed = self.jobs.start_control(arm, round_, model, reset)
            trainings.append(self.jobs.training(model, job, arm, round_, *resumed, slot=index > 0))
        results = yield trainings if len(trainings) > 1 else trainings[0]
        results = results if len(trainings) > 1 else [results]
        ticket_row = self.run_dir.progress["done"][_job("ticket", round_)]
        dense_row = self.run_dir.progress["done"][_job("ticket", 1)]
        finished = []
        for arm, training, (records, wall, overlaps) in zip(arms, trainings, results, strict=True):
            cost = arm.mask_iterations(
                ticket_row.get("mask_iterations"), self.config, dense_row.get("mask_iterations")
            )
            row = self.jobs.row(
                arm, round_, records, wall, training.model, overlaps, mask_iterations=cost
            )
            finished.append((training.job, row, records))
        self.jobs.finish_together(finished, {})

    def _control_models(self, count):
        """The models `count` controls train on at once: the ticket's own model, then copies.

        Each is re-set for each job. One model (per control trained at once)
        means one traced (and XLA-compiled) train step per process; the
        ticket's next round reloads its state from the run directory.
        """
        self._state_round = None
        while len(self._controls) < count:
            if self._controls:
                model = self.placement.compiled_model(self.config, self.splits)
            else:
                model = self.model
            with self._scope(model):
                model.optimizer.build(model.trainable_variables)
                reset = OptimizerReset(model.optimizer, model.trainable_variables)
            self._controls.append((model, reset))
        return self._controls[:count]

    def load_round_end(self, round_):
        """Puts the model and the pruner in the state that ends ticket round `round_`."""
        if self._state_round == round_:
            return
        end = self.run_dir.progress.get("round_end")
        if end is None or end["round"] != round_:
            raise CorruptRunError(
                f"{os.path.join(self.run_dir.path, 'progress.json')} is damaged: field "
                f"`round_end` should hold the end of round {round_}, found "
                f"{'none' if end is None else end['round']}. Delete the run directory to start "
                "over."
            )
        self.state.load(end, self.model, pruner=True)
        self._state_round = round_


def _job(kind, round_):
    return f"{kind}-r{round_:02d}"
