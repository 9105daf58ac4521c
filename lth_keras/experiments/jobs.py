"""One job of a run: its start, its training, its result row and its bookkeeping.

`Jobs` serves the runner (`lth_keras.experiments.runner`). It sets up a
control job (the rewind point, the arm's mask, the optimizer reset) and
fits a job's model with its callbacks: evaluations
(`training.EvalRecorder`), checkpoints on the run's policy, the overlap
ratios of its weights (`OverlapTracker`) and live progress. It writes a
ticket round's end (masks, state, tickets), turns the trained model into the
job's result row and finishes the job: records and row committed to
`progress.json`, superseded files removed, TensorBoard and the reports
(plots at most every `plot_seconds`) brought up to date.
"""

import time

import numpy as np

from lth_keras import masks as masks_lib
from lth_keras import pruning
from lth_keras.experiments import early_bird, report, summaries
from lth_keras.experiments import training as training_lib
from lth_keras.experiments.arms import ARMS, AT_INIT_EXAMPLES_PER_CLASS, schedule
from lth_keras.experiments.overlap import OverlapTracker
from lth_keras.experiments.progress import Progress
from lth_keras.experiments.state import slot_of, with_slot
from lth_keras.tickets import load_ticket, save_ticket

__all__ = ["Jobs", "Training", "trained_rounds", "trained_ticket_file"]


class Jobs:
    """Trains the jobs of one run and records each in its run directory.

    Args:
        config: The `ExperimentConfig`.
        run_dir: The `RunDir`.
        state: The run's `RunState`, which writes the checkpoints.
        splits: The data (`lth_keras.experiments.data.load`).
        pruner: The run's `LotteryPruner`, a callback of the ticket's jobs.
        scope: `scope(model)`, the context in which to fit and evaluate.
        chief: Whether this worker writes TensorBoard files and reports.
        verbose: As for `run`.
        checkpoint_every: Evaluation periods between checkpoints, or `None`
            for one at the first period end after each `checkpoint_seconds`
            of a job's training (none after its last period).
        checkpoint_seconds: See `checkpoint_every`.
        plot_seconds: The least seconds between two plot updates.
        started: The `time.monotonic()` the plot clock starts from.
        run_progress: The run's `RunProgress` ("job k of n", the run's
            ETA). Defaults to `None`: job lines without them.

    Example:

    ```python
    records, wall, overlaps = jobs.train(model, "ticket-r00", arm, 0, 0, [], 0.0, pruner=True)
    row = jobs.row(arm, 0, records, wall, model, overlaps)
    jobs.finish("ticket-r00", row, records, files)
    ```
    """

    def __init__(
        self,
        config,
        run_dir,
        state,
        splits,
        pruner,
        scope,
        *,
        chief,
        verbose,
        checkpoint_every,
        checkpoint_seconds,
        plot_seconds,
        started,
        run_progress=None,
    ):
        self.config = config
        self.run_dir = run_dir
        self.state = state
        self.splits = splits
        self.pruner = pruner
        self.scope = scope
        self.chief = chief
        self.verbose = verbose
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.plot_seconds = plot_seconds
        self._plotted_at = started  # of the last plots drawn (or the start)
        self.plots_stale = True  # some finished job is not in the plots yet
        self._rewind = None  # the rewind point as a Ticket, read once per process
        self._batch = None  # the training batch of scores at initialisation
        self.run_progress = run_progress
        self._trained = {}  # iterations trained in this process, by job

    def start_control(self, arm, round_, model, reset):
        """Sets `model` up for a new control job of `arm` at `round_` (its optimizer by `reset`).

        Returns:
            `(start_period, records, wall)` of the job's start, for `train`.
        """
        ticket = self.run_dir.load_npz(f"masks/round_{round_:02d}.npz")
        # The rewind point, every weight of it, with round 0's (full) masks.
        if self._rewind is None:
            self._rewind = load_ticket(self.run_dir.verified("rewind.ticket.npz"))
        self._rewind.apply(model, weights="rewind")
        needs = {}
        if arm.needs_trained():
            name = trained_ticket_file(arm.trained_round(self.config, round_))
            needs["trained"] = load_ticket(self.run_dir.verified(name))
        if arm.needs_batch():
            needs["batch"] = self._score_batch()
        arm.prepare(model, ticket, self.config, round_, **needs)
        start = arm.start_period(self.config, round_)
        reset.reset(iterations=start * self.config.eval_every)
        return (start, [], 0.0)

    def _score_batch(self):
        """The first examples of the training stream, for SNIP and GraSP: 10 per class."""
        if self._batch is None:
            count = AT_INIT_EXAMPLES_PER_CLASS * self.splits.num_classes
            batches = -(-count // self.config.batch_size)
            stream = self.splits.train(start_step=0).take(batches).as_numpy_iterator()
            xs, ys = zip(*stream, strict=True)
            self._batch = (np.concatenate(xs)[:count], np.concatenate(ys)[:count])
        return self._batch

    def training(
        self,
        model,
        job,
        arm,
        round_,
        start_period,
        records,
        wall,
        pruner=False,
        start_job=None,
        slot=False,
    ):
        """What fitting `model` for `job` from `start_period` to its round's end needs.

        The end is the round's last period, or the early-bird draw. With
        `slot`, the job trains fused beside the next job of the schedule (a
        later control of the same round): its checkpoints and start kernels
        go to its slot of `progress["fused"]`.

        Returns:
            A `Training`: run it alone with `fit`, or with others by
            `lth_keras.experiments.fused.Fuser.fit_together`; then `result()`.
        """
        config = self.config
        periods = config.iterations // config.eval_every
        if pruner and early_bird.drawn(self.pruner, round_):
            periods = start_period  # resumed after the draw: no epoch, just the round's end
        training = Training(self, model, job, start_period, periods, wall)
        saved = [None]

        def on_period(period, so_far):
            now = time.perf_counter()
            saved[0] = saved[0] or training.began
            if self.checkpoint_every is None:
                due = period < periods and now - saved[0] >= self.checkpoint_seconds
            else:
                due = period % self.checkpoint_every == 0 or period == periods
            if due:
                recorder.flush()  # the records saved hold the test accuracy of their best period
                self.state.save_checkpoint(
                    job, model, period, so_far, training.wall(), pruner, slot=slot
                )
                saved[0] = time.perf_counter()

        recorder = training.recorder = training_lib.EvalRecorder(
            self.splits.test,
            config.eval_every,
            records,
            on_period,
            early_stopping_from=arm.early_stopping_from(config, round_),
        )
        tracker = training.tracker = self._tracker(start_job or job, slot)
        callbacks = [self.pruner, tracker, recorder] if pruner else [tracker, recorder]
        if not pruner and arm.needs_callbacks(config):
            ticket = self.run_dir.load_npz(f"masks/round_{round_:02d}.npz")
            callbacks = arm.callbacks(ticket, config, round_) + callbacks
        progress = self._progress(arm, round_, start_period, job) if self.verbose else None
        training.progress = progress
        training.base = start_job or job
        training.callbacks = callbacks + ([progress] if progress else [])
        return training

    def train(
        self, model, job, arm, round_, start_period, records, wall, pruner=False, start_job=None
    ):
        """Fits `model` for `job` from `start_period` to the round's end (or the draw), alone.

        Returns:
            `(records, wall seconds so far, overlaps)`.
        """
        training = self.training(
            model, job, arm, round_, start_period, records, wall, pruner, start_job
        )
        self.fit(training)
        return training.result()

    def fit(self, training):
        """Fits one `Training` alone (the sequential runner's way)."""
        config = self.config
        training.start()
        with self.scope(training.model):
            training.model.fit(
                training.stream(),
                epochs=training.periods,
                initial_epoch=training.start_period,
                steps_per_epoch=config.eval_every,
                validation_data=self.splits.validation,
                callbacks=training.callbacks,
                shuffle=False,
                verbose=0,
            )

    def _tracker(self, start_job, slot=False):
        return OverlapTracker(
            self.config.overlap_ps,
            self._job_start(start_job),
            lambda kernels: self._save_start(start_job, kernels, slot),
        )

    def _progress(self, arm, round_, start_period, job):
        config = self.config
        label = f"{arm.name:>6} round {round_:2d}"
        start = start_period * config.eval_every
        tty = False if self.verbose >= 2 else None
        run = (self.run_progress, job) if self.run_progress is not None else None
        return Progress(label, config.iterations, start, config.eval_every, tty=tty, run=run)

    def row(self, arm, round_, records, wall, model, overlaps, **extra):
        """The result row of a trained job (`lth_keras.experiments.report`), with `extra`."""
        total, per_kernel = pruning.fraction_remaining(masks_lib.get_masks(model))
        with self.scope(model):
            train = model.evaluate(self.splits.train_eval, verbose=0, return_dict=True)
        first = arm.start_period(self.config, round_) * self.config.eval_every
        return {
            "round": round_,
            "kind": arm.name,
            "weights_remaining": total,
            "layers": per_kernel,
            "iterations": records[-1]["iteration"] - first,
            **training_lib.early_stopping(records, arm.early_stopping_from(self.config, round_)),
            "train_accuracy": float(train["accuracy"]),
            "wall_seconds": wall,
            **overlaps,
            **extra,
        }

    def finish(self, job, row, records, files, **replace):
        """Commits `job` as done with its row, records and `files`; updates the reports."""
        self.finish_together([(job, row, records)], files, **replace)

    def finish_together(self, finished, files, **replace):
        """Commits jobs trained together as done, in one commit; updates the reports.

        Args:
            finished: `(job, row, records)` triples, in schedule order.
            files: Files written for them, `{name: SHA-256}`.
            **replace: Further top-level entries of `progress.json` to set.
        """
        for job, _, records in finished:
            name = f"records/{job}.json"
            files[name] = self.run_dir.write_json(name, records)
        entries = ["checkpoint", "start", *(["round_end"] if "round_end" in replace else [])]
        old = self._superseded(entries)
        progress = self.run_dir.progress
        for job, _, _ in finished:
            slot = slot_of(progress, job)
            old += list((slot.get("checkpoint") or {}).get("files", ()))
            old += [slot["start"]] if "start" in slot else []
        names = {job for job, _, _ in finished}
        kept = {job: s for job, s in (progress.get("fused") or {}).items() if job not in names}
        self.run_dir.commit(
            done={job: row for job, row, _ in finished},
            files=files,
            checkpoint=None,
            start=None,
            fused=kept or None,
            forget=old,
            **replace,
        )
        self.run_dir.remove(*old)
        if self.chief:
            for _, row, records in finished:
                summaries.write_job(self.run_dir.file("tensorboard"), row, records)
            drawn = self._last_of_round(finished[-1][1]) and self._plots_due()
            report.write_reports(
                self.run_dir, list(self.run_dir.progress["done"].values()), plots=drawn
            )
            self.plots_stale = not drawn
        for job, row, _ in finished:
            if self.run_progress is not None:
                self.run_progress.end_job(job, self._trained.pop(job, 0))
            if self.verbose:
                position = f"{self.run_progress.position(job)} | " if self.run_progress else ""
                print(position + report.job_line(row), flush=True)

    def save_round_end(self, round_, model):
        """Writes the end of ticket round `round_`: its masks and state, and the tickets needed.

        Round 0 also writes `rewind.ticket.npz` (the rewind point of every
        round), and a round its trained ticket when a later control reads it
        (`trained_rounds`).

        Returns:
            `(files, end)`: the files written with their SHA-256, and the
            round-end entry of `progress.json`.
        """
        name = f"masks/round_{round_:02d}.npz"
        files = {name: self.run_dir.save_npz(name, masks_lib.get_masks(model))}
        if round_ in trained_rounds(self.config):
            name = trained_ticket_file(round_)
            files[name] = self.run_dir.save_with(
                name, lambda path: save_ticket(model, path, pruner=self.pruner)
            )
        if round_ == 0:
            files["rewind.ticket.npz"] = self.run_dir.save_with(
                "rewind.ticket.npz",
                lambda path: save_ticket(
                    model, path, pruner=self.pruner, config=self.config.to_dict()
                ),
            )
        end = {"round": round_, **self.state.save(f"state/round_{round_:02d}", model, True)}
        files.update(end["files"])
        return files, end

    def commit_round_end(self, files, end, drawn):
        """Records a round end (its mask drawn) before the round's job is finished."""
        old = self._superseded(["round_end", "checkpoint"])
        self.run_dir.commit(files=files, round_end=end, checkpoint=None, drawn=drawn, forget=old)
        self.run_dir.remove(*old)

    def _superseded(self, entries):
        """The files of these entries of `progress.json` (`start` has one, the others several)."""
        names = []
        for key in entries:
            entry = self.run_dir.progress.get(key) or {}
            names += [entry["file"]] if "file" in entry else list(entry.get("files", ()))
        return names

    def _plots_due(self):
        """Plots cost 0.3-1 s: drawn every `plot_seconds` at most, and at the end."""
        now = time.monotonic()
        if now - self._plotted_at < self.plot_seconds:
            return False
        self._plotted_at = now
        return True

    def _job_start(self, job):
        """The start kernels of `job` if it was started before (a resume), else `None`."""
        progress = self.run_dir.progress
        entry = progress.get("start")
        if entry and entry["job"] == job:
            return self.run_dir.load_npz(entry["file"])
        name = slot_of(progress, job).get("start")
        return None if name is None else self.run_dir.load_npz(name)

    def _save_start(self, job, kernels, slot=False):
        name = f"checkpoints/{job}-start.npz"
        digest = self.run_dir.save_npz(name, kernels, compress=False)
        progress = self.run_dir.progress
        if slot:
            self.run_dir.commit(files={name: digest}, fused=with_slot(progress, job, start=name))
        else:
            # A job first trained fused and now alone takes its start from its slot.
            self.run_dir.commit(
                files={name: digest},
                start={"job": job, "file": name},
                fused=with_slot(progress, job, start=None),
            )

    def _last_of_round(self, row):
        config, round_ = self.config, row["round"]
        if round_ == 0 or (config.control_rounds and round_ not in config.control_rounds):
            return True
        return row["kind"] == (config.controls[-1] if config.controls else "ticket")


class Training:
    """One job's fit, described: its model, callbacks, data stream and periods.

    Made by `Jobs.training`; `Jobs.fit` runs it alone and
    `lth_keras.experiments.fused.Fuser.fit_together` runs several at once. Its
    wall time counts from `start()`; a job fused with others counts its
    share (`share`, 1 / the number of networks trained together).

    Attributes:
        model: The model to fit (its own compiled optimizer).
        job: The job's name.
        start_period, periods: Keras' `initial_epoch` and `epochs`.
        callbacks: Its callbacks, in order.
        splits: The run's data (the stream's seed is the run's).
    """

    def __init__(self, jobs, model, job, start_period, periods, wall):
        self.jobs = jobs
        self.splits = jobs.splits
        self.model = model
        self.job = job
        self.start_period = start_period
        self.periods = periods
        self.wall_before = wall
        self.share = 1.0
        self.began = None
        self.callbacks = []
        self.recorder = self.tracker = self.progress = None
        self.base = job

    def stream(self):
        """The training stream of batches from this job's first step."""
        return self.splits.train(start_step=self.start_period * self.jobs.config.eval_every)

    def start(self, share=1.0):
        self.began = time.perf_counter()
        self.share = share

    def wall(self):
        """Wall seconds of the job so far (its share while fused)."""
        return self.wall_before + (time.perf_counter() - self.began) * self.share

    def result(self):
        """`(records, wall seconds so far, overlaps)` once fitted."""
        if self.progress is not None:
            trained = self.jobs._trained
            trained[self.base] = trained.get(self.base, 0) + self.progress.trained
        return self.recorder.records, self.wall(), self.tracker.overlaps(self.model)


def trained_rounds(config):
    """The rounds whose trained ticket a control of the run reads (`Arm.trained_round`).

    Example:

    ```python
    trained_rounds(preset("lenet", rounds=3, controls=("pft",)))  # {0, 1, 2}
    ```
    """
    return {
        ARMS.get(name).trained_round(config, round_)
        for name, round_ in schedule(config)
        if name != "ticket" and ARMS.get(name).needs_trained()
    }


def trained_ticket_file(round_):
    """The run directory's file of the ticket trained in `round_`, for the controls that need it."""
    return f"tickets/round_{round_:02d}.ticket.npz"
