"""End-to-end throughput of the experiment runner against a bare `model.fit`.

Runs iterative magnitude pruning with the runner (evaluations, checkpoints,
round transitions, reports and controls included) and counts training
iterations per second of wall time, from `run()` to its return. Beside it,
in the same process and on the same data stream, a bare `model.fit` of a new
LeNet-300-100 with the same compile settings (`training.compile_for`) trains
the same total number of iterations, `eval_every` steps per epoch, without
evaluation; like the runner's, its time includes compiling the train step.
It runs after the runner (`--bare_runs` times; the mean is the reference). Also reported:
the time from the start of this script (before `import keras`) to the end of
the runner's first training step, and both rates by CPU time (iterations per
second of the process's CPU time): on a shared VM, whose speed drifts
between the runner's pass and the bare one, the CPU-time ratio moves less.

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python benchmarks/imp_throughput.py

Flags override the experiment (defaults: the README main job's settings with
3 rounds); `--nojit_compile` measures the graph (non-XLA) path. Like the
example scripts, it keeps compiled XLA programs in a persistent cache
(`lth_keras.tensorflow.compile_cache`): the first run on a machine compiles
(cold start), later runs load them (warm start); `--nocompile_cache` always
compiles.
"""

import time

T0 = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("rounds", 3, "Pruning rounds after round 0.")
flags.DEFINE_integer("iterations", 5000, "Training iterations per round.")
flags.DEFINE_integer("eval_every", 1000, "Iterations between evaluations.")
flags.DEFINE_list("controls", ["reinit"], "Controls per round.")
flags.DEFINE_bool("jit_compile", True, "XLA (the runner's default).")
flags.DEFINE_integer("steps_per_execution", None, "Default: the runner's (up to 100).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_bool(
    "compile_cache", True, "Use the example scripts' persistent XLA cache (run twice: warm)."
)
flags.DEFINE_integer("bare_runs", 1, "Bare fits (each trains as many iterations as the runner).")
flags.DEFINE_string("json_out", "", "Optional path for the results as JSON.")
FLAGS = flags.FLAGS


class FirstStep:
    """Wraps `keras.Model.fit` once, to time the end of the first training step."""

    def __init__(self):
        import keras

        self.at = None
        original = keras.Model.fit
        recorder = self

        class Hook(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if recorder.at is None:
                    recorder.at = time.perf_counter()

        def fit(model, *args, callbacks=None, **kwargs):
            if recorder.at is None:
                callbacks = [*(callbacks or []), Hook()]
            return original(model, *args, callbacks=callbacks, **kwargs)

        keras.Model.fit = fit


def bare_fit(config, splits, total):
    """Iterations per second of `fit` on a new plain model: same settings, stream and work.

    Like the runner's, the time includes tracing and compiling the train
    step, and `total` iterations are trained in calls of `eval_every`
    steps each (`epochs`), so both pay for compilation once.
    """
    from lth_keras.experiments import models, training

    model = training.compile_for(
        models.build_model("lenet", splits.input_shape, splits.num_classes), config
    )
    began, cpu = time.perf_counter(), time.process_time()
    model.fit(
        splits.train(),
        epochs=total // config.eval_every,
        steps_per_epoch=config.eval_every,
        verbose=0,
    )
    return total / (time.perf_counter() - began), total / (time.process_time() - cpu)


def main(argv):
    del argv
    if FLAGS.compile_cache:
        from lth_keras.tensorflow.compile_cache import enable_compile_cache

        enable_compile_cache()
    first = FirstStep()
    from lth_keras.experiments import data, preset, run

    config = preset(
        "lenet",
        rounds=FLAGS.rounds,
        iterations=FLAGS.iterations,
        eval_every=FLAGS.eval_every,
        controls=tuple(c for c in FLAGS.controls if c != "none"),
        jit_compile=FLAGS.jit_compile,
        steps_per_execution=FLAGS.steps_per_execution,
        seed=FLAGS.seed,
    )
    with tempfile.TemporaryDirectory() as folder:
        began, cpu = time.perf_counter(), time.process_time()
        rows = run(config, os.path.join(folder, "run"), verbose=0)
        runner_seconds = time.perf_counter() - began
        runner_cpu = time.process_time() - cpu
    startup = first.at - T0
    trained = sum(row["iterations"] for row in rows)
    runner_rate = trained / runner_seconds
    splits = data.load(
        "mnist", batch_size=config.batch_size, validation_examples=config.validation_examples
    )
    bare_runs = [bare_fit(config, splits, trained) for _ in range(FLAGS.bare_runs)]
    bare = [wall for wall, _ in bare_runs]
    bare_rate = sum(bare) / len(bare)
    bare_cpu_rate = sum(cpu for _, cpu in bare_runs) / len(bare_runs)
    runner_cpu_rate = trained / runner_cpu
    results = {
        "jit_compile": config.jit_compile,
        "steps_per_execution": config.execution_steps,
        "jobs": len(rows),
        "iterations_trained": trained,
        "runner_seconds": runner_seconds,
        "runner_iterations_per_s": runner_rate,
        "bare_fit_iterations_per_s": bare,
        "ratio_runner_to_bare": runner_rate / bare_rate,
        "runner_iterations_per_cpu_s": runner_cpu_rate,
        "bare_fit_iterations_per_cpu_s": bare_cpu_rate,
        "cpu_ratio_runner_to_bare": runner_cpu_rate / bare_cpu_rate,
        "start_to_first_step_s": startup,
    }
    print(f"jobs: {len(rows)}, iterations trained: {trained}, runner wall: {runner_seconds:.1f} s")
    print(f"runner end to end: {runner_rate:.0f} it/s")
    print(f"bare model.fit:    {bare_rate:.0f} it/s ({', '.join(f'{b:.0f}' for b in bare)})")
    print(f"ratio runner/bare: {runner_rate / bare_rate:.3f}")
    print(
        f"by CPU time (iterations per CPU second, both cores): runner {runner_cpu_rate:.0f}, "
        f"bare {bare_cpu_rate:.0f}, ratio {runner_cpu_rate / bare_cpu_rate:.3f}"
    )
    print(f"start to the first training step: {startup:.2f} s")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
