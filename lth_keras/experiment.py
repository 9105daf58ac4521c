"""Finding winning tickets end to end: rounds, controls, run directories, resume.

`run(config, run_dir)` trains round 0 (dense), then `config.rounds` rounds of
pruning with `LotteryPruner` (one `fit` per round), and after every pruned
round the requested controls at the same sparsity. Every job is evaluated on
the validation and test sets every `eval_every` steps.

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
from lth_keras import data as data_lib
from lth_keras import distribute, pruning, report, summaries, training
from lth_keras import masks as masks_lib
from lth_keras.callbacks import LotteryPruner
from lth_keras.convert import prunable
from lth_keras.models import build_model
from lth_keras.rewind import OptimizerReset
from lth_keras.rundir import RunDir
from lth_keras.tickets import load_ticket, save_ticket

__all__ = ["default_run_dir", "run"]


def default_run_dir(config, base="runs"):
    """`<base>/<model>-<config hash>`: a directory per distinct config.

    Example:

    ```python
    default_run_dir(preset("lenet"))  # 'runs/lenet-3f2a...'
    ```
    """
    return os.path.join(base, f"{config.model}-{config.hash()}")


def run(config, run_dir=None, *, strategy=None, verbose=1, checkpoint_every=1, flag_values=None):
    """Runs (or resumes) an iterative-magnitude-pruning experiment.

    Args:
        config: An `ExperimentConfig`.
        run_dir: The run directory. Defaults to `None`, meaning
            `default_run_dir(config)`.
        strategy: A `tf.distribute.Strategy` (see `lth_keras.distribute`);
            under a multi-worker strategy every worker runs this same call
            and only the chief writes the run directory. Defaults to `None`
            (the default strategy).
        verbose: `0` silent, `1` a line per job and the final table.
            Defaults to `1`.
        checkpoint_every: Evaluation periods between checkpoints inside a
            job. Defaults to `1`.
        flag_values: Command-line flag values to save as `flags.json`.
            Defaults to `None`.

    Returns:
        The result rows of all jobs (see `lth_keras.report`).

    Raises:
        ValueError: If `run_dir` holds a run with a different config.
        lth_keras.rundir.CorruptRunError: If a file of the run directory
            is truncated or altered.

    Example:

    ```python
    from lth_keras import experiment, preset

    rows = experiment.run(preset("lenet", rounds=5), "runs/lenet")
    ```
    """
    with _determinism(not config.jit_compile):
        experiment = _Experiment(
            config,
            run_dir or default_run_dir(config),
            strategy or tf.distribute.get_strategy(),
            verbose,
            checkpoint_every,
        )
        if flag_values is not None:
            experiment.run_dir.write_json("flags.json", flag_values)
        try:
            return experiment.run()
        finally:
            if not experiment.chief:
                shutil.rmtree(experiment.run_dir.write_path, ignore_errors=True)


@contextlib.contextmanager
def _determinism(enable):
    """TensorFlow op determinism for the run, restored afterwards.

    Keras turns XLA off when op determinism is on, so runs with
    `jit_compile=True` rely on XLA's own determinism on CPUs instead.
    """
    # TensorFlow has no public way to read or undo the setting; Keras itself
    # reads it through this module.
    from tensorflow.python.framework import config as tf_config

    before = tf_config.is_op_determinism_enabled()
    if enable and not before:
        tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if enable and not before:
            tf_config.disable_op_determinism()


class _Experiment:
    def __init__(self, config, run_dir, strategy, verbose, checkpoint_every):
        self.config = config
        self.strategy = strategy
        self.chief = distribute.is_chief(strategy)
        self.verbose = verbose if self.chief else 0
        self.checkpoint_every = checkpoint_every
        versions = {
            "lth_keras": lth_keras.__version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        }
        # Other workers read the run but write their copies somewhere private.
        write_to = None if self.chief else tempfile.mkdtemp(prefix="lth_keras-worker-")
        try:
            self.run_dir = RunDir(
                run_dir,
                config.to_dict(),
                extra={"hash": config.hash(), "versions": versions},
                write_to=write_to,
            )
        except BaseException:
            if write_to:
                shutil.rmtree(write_to, ignore_errors=True)
            raise
        keras.utils.set_random_seed(config.seed)
        self.splits = data_lib.load(
            config.dataset,
            batch_size=config.batch_size,
            validation_examples=config.validation_examples,
            train_examples=config.train_examples,
            test_examples=config.test_examples,
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
            reset=config.reset,
            rewind_iteration=config.rewind_iteration,
            seed=config.seed,
        )
        self._state_round = -1  # the round whose end state self.model holds
        self._control = None
        self._rewind = None  # the rewind point as a Ticket, read once per process

    def _new_model(self):
        with self.strategy.scope():
            model = prunable(
                build_model(self.config.model, self.splits.input_shape, self.splits.num_classes)
            )
            return training.compile_for(model, self.config)

    def _scope(self, model):
        return distribute.fit_scope(model, self.strategy)

    # Jobs ------------------------------------------------------------------

    def run(self):
        for kind, round_ in self._jobs():
            if _job(kind, round_) not in self.run_dir.progress["done"]:
                if kind == "ticket":
                    self._ticket(round_)
                else:
                    self._control_job(kind, round_)
        if "final" not in self.run_dir.progress:
            self._load_round_end(self.config.rounds)
            digest = self.run_dir.save_with("ticket.keras", self.model.save)
            self.run_dir.commit(files={"ticket.keras": digest}, final=True)
        rows = list(self.run_dir.progress["done"].values())
        if self.chief:
            self._write_reports(rows)
        if self.verbose:
            print(report.table(report.sort_rows(rows)), end="")
        return report.sort_rows(rows)

    def _jobs(self):
        for round_ in range(self.config.rounds + 1):
            yield "ticket", round_
            if round_ > 0:
                for kind in self.config.controls:
                    yield kind, round_

    def _start_period(self, kind, round_):
        rewinds = self.config.reset in ("rewind", "lr_rewind") and kind != "reinit"
        if round_ > 0 and rewinds:
            return self.config.rewind_iteration // self.config.eval_every
        return 0

    def _ticket(self, round_):
        job = _job("ticket", round_)
        resumed = self._load_checkpoint(job, self.model, pruner=True)
        if resumed is None:
            if round_ > 0:
                self._load_round_end(round_ - 1)
            resumed = (self._start_period("ticket", round_), [], 0.0)
        records, wall = self._train(self.model, job, *resumed, pruner=True)
        masks = masks_lib.get_masks(self.model)
        row = self._row("ticket", round_, records, wall, masks, self.model)
        files = {
            f"masks/round_{round_:02d}.npz": self.run_dir.save_npz(
                f"masks/round_{round_:02d}.npz", masks
            )
        }
        if round_ == 0:
            files["rewind.ticket.npz"] = self.run_dir.save_with(
                "rewind.ticket.npz",
                lambda path: save_ticket(
                    self.model, path, pruner=self.pruner, config=self.config.to_dict()
                ),
            )
        end = {"round": round_, **self._save_state(f"state/round_{round_:02d}", self.model, True)}
        files.update(end["files"])
        self._finish_job(job, row, records, files, round_end=end)
        self._state_round = round_

    def _control_job(self, kind, round_):
        job = _job(kind, round_)
        model, reset = self._control_model()
        resumed = self._load_checkpoint(job, model)
        if resumed is None:
            self._prepare_control(model, kind, round_)
            start = self._start_period(kind, round_)
            reset.reset(iterations=start * self.config.eval_every)
            resumed = (start, [], 0.0)
        records, wall = self._train(model, job, *resumed)
        row = self._row(kind, round_, records, wall, masks_lib.get_masks(model), model)
        self._finish_job(job, row, records, {})

    def _control_model(self):
        if self._control is None:
            model = self._new_model()
            with self._scope(model):
                model.optimizer.build(model.trainable_variables)
                reset = OptimizerReset(model.optimizer, model.trainable_variables)
            self._control = (model, reset)
        return self._control

    def _prepare_control(self, model, kind, round_):
        """Sets a control's masks and weights from the ticket of `round_`."""
        ticket = self.run_dir.load_npz(f"masks/round_{round_:02d}.npz")
        # The rewind point, every weight of it, with round 0's (full) masks.
        if self._rewind is None:
            self._rewind = load_ticket(self.run_dir.verified("rewind.ticket.npz"))
        self._rewind.apply(model, weights="rewind")
        seed = np.random.SeedSequence(
            [self.config.seed, round_, report.KINDS.index(kind)]
        ).generate_state(1)
        if kind == "random":
            rng = np.random.default_rng(seed)
            masks_lib.set_masks(model, pruning.random_masks_like(ticket, rng))
        else:
            masks_lib.set_masks(model, ticket)
            for i, layer in enumerate(masks_lib.masked_layers(model)):
                layer.reinitialize(int(seed[0]) + i)

    def _train(self, model, job, start_period, records, wall, pruner=False):
        config = self.config
        periods = config.iterations // config.eval_every
        began = time.perf_counter()

        def on_period(period, so_far):
            if period % self.checkpoint_every == 0 or period == periods:
                elapsed = wall + time.perf_counter() - began
                self._save_checkpoint(job, model, period, so_far, elapsed, pruner)

        recorder = training.EvalRecorder(self.splits.test, config.eval_every, records, on_period)
        with self._scope(model):
            model.fit(
                self.splits.train(start_step=start_period * config.eval_every),
                epochs=periods,
                initial_epoch=start_period,
                steps_per_epoch=config.eval_every,
                validation_data=self.splits.validation,
                callbacks=[self.pruner, recorder] if pruner else [recorder],
                shuffle=False,
                verbose=0,
            )
        return recorder.records, wall + time.perf_counter() - began

    def _row(self, kind, round_, records, wall, masks, model):
        total, per_kernel = pruning.fraction_remaining(masks)
        with self._scope(model):
            train = model.evaluate(self.splits.train_eval, verbose=0, return_dict=True)
        first = self._start_period(kind, round_) * self.config.eval_every
        return {
            "round": round_,
            "kind": kind,
            "weights_remaining": total,
            "layers": per_kernel,
            "iterations": records[-1]["iteration"] - first,
            **training.early_stopping(records),
            "train_accuracy": float(train["accuracy"]),
            "wall_seconds": wall,
        }

    def _finish_job(self, job, row, records, files, **replace):
        name = f"records/{job}.json"
        files[name] = self.run_dir.write_json(name, records)
        old = self.run_dir.progress.get("round_end") if "round_end" in replace else None
        checkpoint = self.run_dir.progress.get("checkpoint")
        self.run_dir.commit(done={job: row}, files=files, checkpoint=None, **replace)
        if old:
            self.run_dir.remove(*old["files"])
        if checkpoint:
            self.run_dir.remove(*checkpoint["files"])
        if self.chief:
            summaries.write_job(self.run_dir.file("tensorboard"), row, records)
            self._write_reports(list(self.run_dir.progress["done"].values()))
        if self.verbose:
            print(
                f"{row['kind']:>6} round {row['round']:2d} | "
                f"{100 * row['weights_remaining']:6.2f}% remaining | "
                f"test acc {row['test_accuracy_es']:.4f} at ES iteration "
                f"{row['es_iteration']} | {row['test_accuracy_final']:.4f} at the end | "
                f"{row['wall_seconds']:.0f} s",
                flush=True,
            )

    def _write_reports(self, rows):
        self.run_dir.write_bytes("metrics.csv", report.csv_text(rows).encode())
        self.run_dir.write_bytes("metrics.jsonl", report.jsonl_text(rows).encode())
        self.run_dir.write_bytes("summary.txt", report.table(report.sort_rows(rows)).encode())
        for metric, name in (("test_accuracy_es", "accuracy"), ("es_iteration", "early_stopping")):
            self.run_dir.save_with(
                f"plots/{name}.png", lambda path, metric=metric: report.plot(rows, metric, path)
            )

    # State on disk ---------------------------------------------------------

    def _load_round_end(self, round_):
        if self._state_round == round_:
            return
        end = self.run_dir.progress["round_end"]
        if end["round"] != round_:
            raise RuntimeError(f"Expected the end state of round {round_}, found {end['round']}.")
        self._load_state(end, self.model, pruner=True)
        self._state_round = round_

    def _save_state(self, tag, model, pruner):
        """Writes weights (with the optimizer's) and the pruner's state.

        Returns:
            `{"files": {name: sha256}, "pruner": state or None}`.
        """
        files = {
            f"{tag}.weights.h5": self.run_dir.save_with(f"{tag}.weights.h5", model.save_weights)
        }
        state = None
        if pruner:
            state = self.pruner.get_state()
            snapshot = state.pop("snapshot") or {}
            name = f"{tag}-snapshot.npz"
            files[name] = self.run_dir.save_npz(name, snapshot, compress=False)
        return {"files": files, "pruner": state}

    def _load_state(self, entry, model, pruner=False):
        """Restores what `_save_state` wrote, optimizer state included."""
        files = entry["files"]
        if not model.optimizer.built:  # Keras loads optimizer weights only into a built one
            with self._scope(model):
                model.optimizer.build(model.trainable_variables)
        weights = next(name for name in files if name.endswith(".weights.h5"))
        model.load_weights(self.run_dir.verified(weights, files[weights]))
        if pruner:
            name = next(name for name in files if name.endswith("-snapshot.npz"))
            snapshot = self.run_dir.load_npz(name, files[name])
            state = entry["pruner"]
            # The snapshot exists once the rewind point is taken (it may be
            # empty: a model whose weights are all in masked layers).
            taken = state["rewind_step"] is not None
            self.pruner.set_state(dict(state, snapshot=snapshot if taken else None))

    def _save_checkpoint(self, job, model, period, records, wall, pruner):
        entry = {
            "job": job,
            "period": period,
            "records": list(records),
            "wall": wall,
            **self._save_state(f"checkpoints/{job}-p{period:04d}", model, pruner),
        }
        old = self.run_dir.progress.get("checkpoint")
        self.run_dir.commit(checkpoint=entry)
        if old:
            self.run_dir.remove(*old["files"])

    def _load_checkpoint(self, job, model, pruner=False):
        entry = self.run_dir.progress.get("checkpoint")
        if not entry or entry["job"] != job:
            return None
        self._load_state(entry, model, pruner)
        if pruner:
            self._state_round = None
        return entry["period"], entry["records"], entry["wall"]


def _job(kind, round_):
    return f"{kind}-r{round_:02d}"
