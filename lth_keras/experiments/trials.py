"""Runs of several trials: each its own run directory, trained one after another or fused.

`run(config, run_dir)` with `config.trials = T > 1` runs T trials: trial `t`
is the run of `config.replace(trials=1, seed=config.seed + t)` in
`<run_dir>/trial_<t>`, a run directory like any other (its own
`config.json`, `progress.json`, masks, checkpoints, lock and reports: the
same command resumes it, and a sequential run of that config in that folder
would continue it). `<run_dir>` itself holds the run's `config.json` (with
`trials`), `flags.json`, its lock, and the reports over trials:
`metrics.csv`/`metrics.jsonl` (every trial's rows, with a `trial` field),
`summary.txt` (mean over trials) and `plots/` (mean with min-max bars).

With `fuse` (see `fuse_reason`), the trials train together: the trainings
the trials' jobs need at the same time (trial `t`'s ticket of round `r`
beside trial `u`'s; the controls of a round, of every trial, and so on)
that start and end at the same period are fitted in one fused fit
(`lth_keras.experiments.fused.run_jobs`); each trial's jobs still run in
its schedule's order and record exactly what they record alone. A network
trained fused gets the same numbers as alone, so a fused run's rows equal
a sequential run's (all but `wall_seconds`, which for a fused job is its
share of the fused fit's wall time).
"""

import math
import os
import time

import keras

from lth_keras.experiments import report
from lth_keras.experiments.fused import Fuser, run_jobs
from lth_keras.experiments.progress import format_seconds
from lth_keras.experiments.rundir import RunDir

__all__ = [
    "FUSE_MAX_MACS",
    "cannot_fuse",
    "fuse_reason",
    "refuse_fuse_on",
    "run_trials",
    "trial_config",
    "trial_dir",
]

#: The most multiply-adds per example of a model that `fuse="auto"` fuses on
#: an accelerator. Fusing fills what a small network's step leaves idle: a
#: plain Keras model of N LeNet-300-100s (0.27M) trained 3.6x faster at N = 32
#: on an H100 (issue 25); a Conv-2 at width 0.25 (about 2.9M) was already
#: bound by arithmetic. On a CPU `auto` never fuses: benchmarks/fused_throughput.py
#: measured fused LeNets at 0.56-1.04x of sequential ones (BUILD.md).
FUSE_MAX_MACS = 1_000_000


def _accelerator():
    """The kind of accelerator the backend computes on (`"GPU"`, `"TPU"`), or `None`."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        platform = jax.default_backend()
        return None if platform == "cpu" else platform.upper()
    if backend == "tensorflow":
        import tensorflow as tf

        for kind in ("TPU", "GPU"):
            if tf.config.list_logical_devices(kind):
                return kind
    return None


def trial_config(config, trial):
    """The config of trial `trial`: one trial, seed `config.seed + trial`."""
    return config.replace(trials=1, seed=config.seed + trial)


def trial_dir(run_dir, trial):
    """The run directory of trial `trial`: `<run_dir>/trial_<trial>`."""
    return os.path.join(run_dir, f"trial_{trial}")


def multiply_adds(model):
    """Multiply-adds of one example through the kernels of `model` (dense and convolutions)."""
    total = 0
    for layer in _layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None or not hasattr(layer, "output"):
            continue
        try:
            spatial = layer.output.shape[1:-1]
        except (AttributeError, ValueError):
            spatial = ()
        total += math.prod(kernel.shape) * math.prod(d or 1 for d in spatial)
    return total


def _layers(layer):
    for inner in getattr(layer, "layers", ()):
        yield inner
        yield from _layers(inner)


def cannot_fuse(config, placement):
    """Why the networks of a run cannot be fused at all, or `None`.

    Nothing to fuse (one trial and at most one control a round); a backend
    other than TensorFlow or JAX; a tf.distribute strategy or a
    `keras.distribution` (fused networks train on one device); early-bird
    rounds, which end each network's round at its own time.
    """
    if config.trials < 2 and len(config.controls) < 2:
        return "one trial and at most one control a round"
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        return f"the {backend} backend (fused runs need TensorFlow or JAX)"
    if placement.strategy is not None:
        import tensorflow as tf

        if placement.strategy is not tf.distribute.get_strategy():
            return "a tf.distribute strategy"
    if backend == "jax" and keras.distribution.distribution() is not None:
        return "a keras.distribution (fused networks train on one device)"
    if config.early_bird:
        return "early-bird rounds (each network's round ends at its own time)"
    return None


def refuse_fuse_on(config, placement, fuse):
    """Raises the `ValueError` of `fuse="on"` where the networks cannot be fused."""
    reason = cannot_fuse(config, placement) if fuse == "on" else None
    if reason is not None:
        raise ValueError(
            f"Received fuse='on', but the networks cannot be fused with {reason}. Use "
            "fuse='auto' or 'off'."
        )


def fuse_reason(config, placement, model):
    """Why the networks of a run cannot or should not be fused, or `None` to fuse them.

    The networks fused are the trials of a run and the controls of a round.

    Returns:
        `(reason, hard)`: `hard` when fusing cannot work (`cannot_fuse`);
        otherwise the measured rule speaks: no fusing on a CPU, and on a
        GPU or TPU only models under `FUSE_MAX_MACS`; `(None, False)` to
        fuse.
    """
    reason = cannot_fuse(config, placement)
    if reason is not None:
        return reason, True
    if _accelerator() is None:
        return (
            "a CPU (fused networks were measured no faster than sequential ones on a CPU; "
            "fuse='on' fuses them anyway)",
            False,
        )
    macs = multiply_adds(model)
    if macs > FUSE_MAX_MACS:
        return (
            f"{config.model} takes {macs / 1e6:.1f}M multiply-adds an example, above the "
            f"{FUSE_MAX_MACS / 1e6:.1f}M below which fusing pays on an accelerator",
            False,
        )
    return None, False


def fuser_for(config, placement, model, fuse):
    """`(fuser, reason)`: a `Fuser` where `fuse` says to fuse the run's networks, else `None`.

    `reason` is `fuse_reason`'s (`None` where the measured rule fuses);
    `fuse="on"` where nothing can be fused was refused before
    (`refuse_fuse_on`).
    """
    reason, hard = fuse_reason(config, placement, model)
    if (fuse == "on" and not hard) or (fuse == "auto" and reason is None):
        return Fuser(placement.jit_compile(config), placement.steps_per_execution(config)), reason
    return None, reason


def run_trials(config, run_dir, placement, verbose, checkpoint_every, flag_values, fuse, make):
    """Runs the trials of `config` (see the module docstring); returns every row with `trial`.

    Args:
        make: `make(trial_config, trial_dir)` builds a trial's
            `lth_keras.experiments.runner.Experiment`.
    """
    top = RunDir(
        run_dir,
        config.to_dict(),
        extra={"hash": config.hash()},
        defaults=type(config)().to_dict(),
        check=type(config).from_dict,
    )
    experiments, shown = [], set()
    try:
        for t in range(config.trials):
            experiments.append(make(trial_config(config, t), trial_dir(run_dir, t)))
        fuser, reason = fuser_for(config, placement, experiments[0].model, fuse)
        if flag_values is not None:
            top.write_json("flags.json", flag_values)
        began = time.perf_counter()
        if verbose:
            how = "fused" if fuser else f"one after another ({reason or 'fuse=off'})"
            print(_first_line(config, run_dir, experiments, how), flush=True)
        for experiment in experiments:
            experiment.prepare()
        if fuser:
            _run_fused(experiments, fuser, verbose, shown)
        else:
            for t, experiment in enumerate(experiments):
                run_jobs(
                    [experiment.pending_jobs()],
                    on_fitted=lambda _, t=t, e=experiment: _job_lines(verbose, [(t, e)], shown),
                )
        runs = [experiment.finish() for experiment in experiments]
    except BaseException:
        for experiment in experiments:
            experiment.run_dir.discard()  # only a trial that recorded nothing
        top.discard()
        raise
    finally:
        for experiment in experiments:
            experiment.run_dir.close()
        top.close()
    rows = [dict(row, trial=t) for t, rows_t in enumerate(runs) for row in rows_t]
    _write_reports(top, runs, rows)
    if verbose:
        print(
            f"finished {config.trials} trials in {format_seconds(time.perf_counter() - began)}; "
            f"results in {run_dir} (metrics.csv, summary.txt, plots/, trial_*/)",
            flush=True,
        )
        print(report.table(report.summarize(runs)), end="", flush=True)
    return rows


def _first_line(config, run_dir, experiments, how):
    jobs = len(experiments[0].run_progress.jobs)
    done = sum(len(e.run_dir.progress["done"]) for e in experiments)
    total = jobs * len(experiments)
    state = "a new run" if not done else f"resuming: {done} of {total} jobs done"
    return (
        f"{config.model} on {config.dataset}: {config.trials} trials of {jobs} jobs of up to "
        f"{config.iterations:,} iterations, trained {how}; run directory {run_dir}; {state}"
    )


def _job_lines(verbose, trials, shown):
    """A line per job of `trials` (`(t, experiment)` pairs) finished and not `shown` yet."""
    if not verbose:
        return
    for t, experiment in trials:
        for job, row in experiment.run_dir.progress["done"].items():
            key = (experiment.run_dir.path, job)
            if key not in shown:
                shown.add(key)
                print(f"trial {t} | {report.job_line(row)}", flush=True)


def _write_reports(top, runs, rows):
    """The run's reports over trials, in its top directory."""
    summary = report.summarize(runs)
    top.write_bytes("metrics.csv", report.csv_text(rows, first=("trial",)).encode())
    top.write_bytes("metrics.jsonl", report.jsonl_text(rows).encode())
    top.write_bytes("summary.txt", report.table(summary).encode())
    for metric, name in (("test_accuracy_es", "accuracy"), ("es_iteration", "early_stopping")):
        top.save_with(
            f"plots/{name}.png", lambda path, metric=metric: report.plot(summary, metric, path)
        )


def _run_fused(experiments, fuser, verbose, shown):
    """Drives every trial's jobs, fitting the trainings that can go together in one fit."""
    for experiment in experiments:
        experiment.fuser = fuser  # and so the controls of a round go together too

    def label(pairs):
        trials = ",".join(str(t) for t in sorted({t for t, _ in pairs}))
        return f"trials {trials} | {fused_jobs([training for _, training in pairs])}"

    run_jobs(
        [experiment.pending_jobs() for experiment in experiments],
        fuser,
        label=label,
        verbose=verbose,
        on_fitted=lambda ts: _job_lines(verbose, [(t, experiments[t]) for t in ts], shown),
    )


def fused_jobs(trainings):
    """What a fused fit of `trainings` trains, for its progress line: `reinit,random round 3`."""
    kinds, rounds = [], []
    for training in trainings:
        kind, _, round_ = training.job.partition("-r")
        kinds += [kind] if kind not in kinds else []
        round_ = int(round_.removesuffix("-full"))
        rounds += [round_] if round_ not in rounds else []
    return f"{','.join(kinds)} round {','.join(map(str, rounds))}"
