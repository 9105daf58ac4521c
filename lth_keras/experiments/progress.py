"""What a run prints: its first line, each job's progress with the run's ETA, its last line.

`RunProgress` speaks for the whole run: a first line as soon as the run
directory is open (what runs, where its directory is, whether and from
where it resumes), "job k of n" and the ETA of the whole run on every
job's lines, and a closing line with the wall time before the result table.
`Progress`, a Keras callback, shows one job's iterations, latest validation
accuracy, elapsed time and ETAs: on a terminal the line updates in place
after every evaluation; otherwise (a log file, a pipe) a line is written
per evaluation. Nothing happens between evaluations, so training is not
slowed: the callback only overrides `on_epoch_end` (one epoch is one
evaluation period in the runner), and Keras keeps dispatching batches
asynchronously.
"""

import sys
import time

import keras

from lth_keras.experiments.arms import ARMS, schedule

__all__ = ["Progress", "RunProgress", "format_seconds", "job_name"]


def format_seconds(seconds):
    """`h:mm:ss` or `m:ss`.

    Example:

    ```python
    format_seconds(3725)  # '1:02:05'
    ```
    """
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def job_name(kind, round_):
    """The name of a job in the run directory: `"ticket-r03"`, `"reinit-r01"`.

    Example:

    ```python
    job_name("reinit", 3)  # 'reinit-r03'
    ```
    """
    return f"{kind}-r{round_:02d}"


def _described(job):
    kind, _, round_ = job.partition("-r")
    return f"{kind} round {int(round_)}"


class RunProgress:
    """The run's own lines: the first, "job k of n" with the run's ETA, the last.

    The ETA of the run is the iterations its unfinished jobs still have to
    train, at the seconds per iteration this process has taken so far
    (evaluations and bookkeeping included). Jobs that stop early (early-bird
    rounds) make it an upper bound.

    Args:
        config: The run's `ExperimentConfig`.
        run_dir: The run directory as given (printed as it is).
        progress: The run directory's `progress.json` contents (`done`, and
            `checkpoint` when a job was interrupted).
        stream: Where to write. Defaults to `None`, meaning `sys.stdout`.

    Example:

    ```python
    run_progress = RunProgress(config, "runs/lenet", run_dir.progress)
    print(run_progress.first_line())
    ```
    """

    def __init__(self, config, run_dir, progress, stream=None):
        self.config = config
        self.run_dir = run_dir
        self.stream = stream or sys.stdout
        self.jobs = [job_name(kind, round_) for kind, round_ in schedule(config)]
        self._left = {job: self._iterations(job) for job in self.jobs}
        self.done_before = [job for job in self.jobs if job in progress["done"]]
        for job in self.done_before:
            del self._left[job]
        checkpoint = progress.get("checkpoint") or {}
        self.checkpoint = checkpoint.get("job"), checkpoint.get("period")
        self._began = time.perf_counter()
        self._training_began = None  # of this process's first job
        self._trained = 0  # iterations this process trained in finished jobs

    def _iterations(self, job):
        kind, _, round_ = job.partition("-r")
        start = ARMS.get(kind).start_period(self.config, int(round_)) * self.config.eval_every
        return self.config.iterations - start

    def first_line(self):
        """What runs, where its directory is, and whether (from where) it resumes."""
        config, total = self.config, len(self.jobs)
        controls = f", controls {','.join(config.controls)}" if config.controls else ""
        rounds = f"{config.rounds} pruning round{'s' if config.rounds != 1 else ''}"
        what = (
            f"{config.model} on {config.dataset}: {total} job{'s' if total != 1 else ''} "
            f"({rounds}{controls}) of up to {config.iterations:,} iterations; "
            f"run directory {self.run_dir}"
        )
        done = len(self.done_before)
        if done == total:
            return f"{what}; finished already ({done} of {total} jobs), reporting"
        if not done and self.checkpoint[0] is None:
            return f"{what}; a new run"
        where = f"resuming: {done} of {total} jobs done"
        job, period = self.checkpoint
        if job is not None:
            iteration = period * config.eval_every
            where += f", {_described(job)} from its checkpoint at iteration {iteration:,}"
        return f"{what}; {where}"

    def position(self, job):
        """`"job k of n"` of `job` (an early-bird evaluation round counts as its round)."""
        base = job.removesuffix("-full")
        return f"job {self.jobs.index(base) + 1} of {len(self.jobs)}"

    def begin_job(self):
        """Starts the run's training clock at the first job this process trains."""
        if self._training_began is None:
            self._training_began = time.perf_counter()

    def eta(self, job, done_in_job, left_in_job):
        """Seconds the whole run still needs, or `None` before any iteration is timed.

        Args:
            job: The job training now.
            done_in_job: Iterations it has trained in this process.
            left_in_job: Iterations it has left.
        """
        trained = self._trained + done_in_job
        if self._training_began is None or trained <= 0:
            return None
        seconds_per_iteration = (time.perf_counter() - self._training_began) / trained
        base = job.removesuffix("-full")
        later = sum(left for name, left in self._left.items() if name != base)
        return seconds_per_iteration * (left_in_job + later)

    def end_job(self, job, trained):
        """Records that `job` finished after training `trained` iterations in this process."""
        self._trained += trained
        self._left.pop(job, None)

    def closing_line(self):
        """The wall time of this process's run, and where the results are."""
        before = len(self.done_before)
        earlier = f" ({before} finished before this run)" if before else ""
        return (
            f"finished {len(self.jobs)} jobs in {format_seconds(time.perf_counter() - self._began)}"
            f"{earlier}; results in {self.run_dir} (metrics.csv, summary.txt, plots/)"
        )

    def write(self, line):
        """Writes one line and flushes."""
        self.stream.write(line + "\n")
        self.stream.flush()


class StatusLine(keras.callbacks.Callback):
    """A callback that writes one status line: rewritten in place on a terminal.

    Args:
        stream: Where to write. Defaults to `None`, meaning `sys.stdout`.
        tty: Whether `stream` is a terminal. Defaults to `None`, meaning
            `stream.isatty()`.
    """

    def __init__(self, stream=None, tty=None):
        super().__init__()
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self._width = 0
        self.silent = False  # counts on, shows nothing (a job fused with others)

    def _show(self, parts):
        if self.silent:
            return
        line = " | ".join(parts)
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def on_train_end(self, logs=None):
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


class Progress(StatusLine):
    """Reports a job's progress after every evaluation period.

    Args:
        label: What is training, e.g. `"ticket round 3"`.
        total: The iteration the job ends at.
        start: The iteration it starts (or resumes) at.
        eval_every: Iterations per period (one Keras epoch).
        stream: Where to write. Defaults to `None`, meaning `sys.stdout`.
        tty: Whether `stream` is a terminal. Defaults to `None`, meaning
            `stream.isatty()`.
        run: The run's `RunProgress` and this job's name, `(run_progress,
            job)`: the line then starts with "job k of n" and ends with the
            ETA of the whole run. Defaults to `None`.

    Example:

    ```python
    model.fit(..., steps_per_epoch=1000, callbacks=[Progress("ticket round 1", 5000, 0, 1000)])
    ```
    """

    def __init__(self, label, total, start, eval_every, stream=None, tty=None, run=None):
        super().__init__(stream, tty)
        self.label = label
        self.total = total
        self.start = start
        self.eval_every = eval_every
        self.run = run
        self.trained = 0  # iterations trained by this fit
        self._began = None

    def on_train_begin(self, logs=None):
        self._began = time.perf_counter()
        self.trained = 0
        if self.run is not None:
            self.run[0].begin_job()
        if self.tty:  # something to look at while the first period traces and compiles
            self._show([*self._head(), f"{self.start}/{self.total} it", "starting"])

    def _head(self):
        return [self.run[0].position(self.run[1]), self.label] if self.run else [self.label]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        iteration = (epoch + 1) * self.eval_every
        elapsed = time.perf_counter() - self._began
        self.trained = iteration - self.start
        eta = elapsed / self.trained * (self.total - iteration) if self.trained > 0 else 0.0
        accuracy = logs.get("val_accuracy")
        parts = [
            *self._head(),
            f"{iteration:>{len(str(self.total))}}/{self.total} it",
            "val acc " + (f"{float(accuracy):.4f}" if accuracy is not None else "-"),
            f"{format_seconds(elapsed)} elapsed",
            f"ETA {format_seconds(eta)}",
        ]
        if self.run is not None:
            run_eta = self.run[0].eta(self.run[1], self.trained, self.total - iteration)
            parts.append("run ETA " + (format_seconds(run_eta) if run_eta is not None else "-"))
        self._show(parts)
