"""Training overhead of lth_keras masked layers vs plain Keras layers and vs tfmot.

LeNet-300-100 on MNIST (batch 60, Adam 1.2e-3). Seconds per epoch are measured
for plain Keras 3 layers and for lth_keras masked layers with a LotteryPruner
attached, in the same process, epochs interleaved, medians reported; once with
default `compile()` settings and once with `jit_compile=True` and
`steps_per_execution`. A second process (TF_USE_LEGACY_KERAS=1, tf_keras) times
tfmot's `prune_low_magnitude` against plain tf_keras layers the same way. The
round transition (prune + rewind + optimizer reset) is timed separately.

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python benchmarks/train_overhead.py

Needs `pip install -e ".[bench]"` for the tfmot baseline (or --notfmot).
`--backend=jax` (or torch) times Keras 3 on that backend, from NumPy arrays;
`--mnist_npz=FILE` reads MNIST from an `.npz` (keys `x`, `y`) where TensorFlow
Datasets is not installed (the GPU machine).
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_integer("repeats", 10, "Timed epochs per configuration (after one warm-up epoch).")
flags.DEFINE_integer("train_examples", 60000, "Training images per epoch.")
flags.DEFINE_integer("steps_per_execution", 50, "steps_per_execution of the jit setting.")
flags.DEFINE_bool("tfmot", True, "Also time tfmot prune_low_magnitude in a tf_keras process.")
flags.DEFINE_string("worker", "", "Internal: 'tfmot' runs the tf_keras measurement only.")
flags.DEFINE_string("json_out", "", "Optional path for the results as JSON.")
flags.DEFINE_enum("backend", "tensorflow", ["tensorflow", "jax", "torch"], "Keras backend.")
flags.DEFINE_string(
    "mnist_npz", "", "MNIST train images/labels as .npz (keys x, y), instead of TFDS."
)
FLAGS = flags.FLAGS

BATCH, LEARNING_RATE = 60, 1.2e-3


def mnist(limit):
    if FLAGS.mnist_npz:
        import numpy as np

        with np.load(FLAGS.mnist_npz) as arrays:
            images, labels = arrays["x"], arrays["y"]
        images = images.reshape(len(images), -1).astype("float32") / 255.0
        return images[:limit], labels[:limit]
    import tensorflow_datasets as tfds

    images, labels = tfds.as_numpy(
        tfds.load("mnist", split="train", batch_size=-1, as_supervised=True)
    )
    images = images.reshape(len(images), -1).astype("float32") / 255.0
    return images[:limit], labels[:limit]


def dataset(x, y):
    """`fit` arguments for one epoch: a tf.data pipeline on TensorFlow, arrays elsewhere."""
    if FLAGS.backend != "tensorflow":
        return {"x": x, "y": y, "batch_size": BATCH, "shuffle": False}
    import tensorflow as tf

    # No autotuning: its thread's doubling sleeps end every epoch on a 5.12 s
    # or 10.24 s boundary (see BUILD.md), which would swamp the ratios.
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache().prefetch(2)
    return {"x": dataset.with_options(options)}


def lenet(layers):
    return [
        layers.Dense(300, activation="relu"),
        layers.Dense(100, activation="relu"),
        layers.Dense(10),
    ]


def time_interleaved(runs, repeats):
    """Times one epoch of each run, `repeats` times, alternating the order.

    Every run first trains one untimed epoch (tracing, compilation). The order
    alternates (A B, B A, ...) so drift of the machine hits both alike. Both
    wall-clock and CPU seconds (all threads of this process) are recorded: on
    the 2-core VMs this was developed on, many epochs take exactly 10.23 ms
    (or 5.11 ms) per step whichever model runs, plain Keras and tf_keras
    included, a wake-up latency of the VM during which the process sleeps;
    CPU time does not count that sleep and is the stable measure there.

    Returns:
        A dict from run name to `{"wall": [...], "cpu": [...]}` seconds.
    """
    for fit in runs.values():
        fit()
    names = list(runs)
    times = {name: {"wall": [], "cpu": []} for name in runs}
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            wall, cpu = time.perf_counter(), time.process_time()
            runs[name]()
            times[name]["wall"].append(time.perf_counter() - wall)
            times[name]["cpu"].append(time.process_time() - cpu)
    return times


def keras3_runs(data, settings):
    import keras

    import lth_keras

    def build(masked):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((784,)), *lenet(keras.layers)])
        model = lth_keras.prunable(model) if masked else model
        model.compile(
            keras.optimizers.Adam(LEARNING_RATE),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            **settings,
        )
        return model

    plain, masked = build(False), build(True)
    # epochs_per_round far beyond the benchmark: the pruner is attached but no
    # round ends inside the timed epochs (transitions are timed separately).
    pruner = lth_keras.LotteryPruner(rate=0.2, epochs_per_round=10**6)
    return {
        "keras": lambda: plain.fit(**data, epochs=1, verbose=0),
        "lth_keras": lambda: masked.fit(**data, epochs=1, verbose=0, callbacks=[pruner]),
    }


def round_transition_ms(data):
    """Milliseconds for one prune + rewind + optimizer reset of LeNet-300-100."""
    import keras

    import lth_keras

    model = lth_keras.prunable(keras.Sequential([keras.Input((784,)), *lenet(keras.layers)]))
    model.compile(
        keras.optimizers.Adam(LEARNING_RATE),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    pruner = lth_keras.LotteryPruner(rate=0.2)
    model.fit(**data, epochs=1, steps_per_epoch=10, verbose=0, callbacks=[pruner])
    times = []
    for _ in range(5):
        pruner.on_train_end()  # the round's fit() ended...
        start = time.perf_counter()
        pruner.on_train_begin()  # ...and the next fit() starts by pruning
        times.append((time.perf_counter() - start) * 1000)
    assert pruner.round == 5, pruner.round
    return statistics.median(times)


def tfmot_runs(data, settings):
    import tensorflow_model_optimization as tfmot
    import tf_keras

    def build(pruned):
        tf_keras.utils.set_random_seed(0)
        model = tf_keras.Sequential([tf_keras.Input((784,)), *lenet(tf_keras.layers)])
        if pruned:
            schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=100)
            model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        model.compile(
            tf_keras.optimizers.Adam(LEARNING_RATE),
            tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            **settings,
        )
        return model

    plain, pruned = build(False), build(True)
    step = tfmot.sparsity.keras.UpdatePruningStep()
    return {
        "tf_keras": lambda: plain.fit(**data, epochs=1, verbose=0),
        "tfmot": lambda: pruned.fit(**data, epochs=1, verbose=0, callbacks=[step]),
    }


def tfmot_worker(data):
    results = {}
    for label, settings in SETTINGS.items():
        try:
            results[label] = time_interleaved(tfmot_runs(data, settings), FLAGS.repeats)
        except Exception as error:  # report a setting tfmot cannot run, keep the others
            results[label] = {"error": f"{type(error).__name__}: {str(error)[:200]}"}
    return results


def run_tfmot_process():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    command = [
        sys.executable,
        __file__,
        "--worker=tfmot",
        f"--repeats={FLAGS.repeats}",
        f"--train_examples={FLAGS.train_examples}",
        f"--steps_per_execution={FLAGS.steps_per_execution}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


SETTINGS = {}


def main(argv):
    del argv
    os.environ["KERAS_BACKEND"] = FLAGS.backend  # before Keras is imported
    SETTINGS.update(
        {
            "default": {},
            f"jit+spe{FLAGS.steps_per_execution}": {
                "jit_compile": True,
                "steps_per_execution": FLAGS.steps_per_execution,
            },
        }
    )
    data = dataset(*mnist(FLAGS.train_examples))
    if FLAGS.worker == "tfmot":
        print(json.dumps(tfmot_worker(data)))
        return
    results = {"settings": {k: str(v) for k, v in SETTINGS.items()}, "keras3": {}}
    for label, settings in SETTINGS.items():
        results["keras3"][label] = time_interleaved(keras3_runs(data, settings), FLAGS.repeats)
    results["round_transition_ms"] = round_transition_ms(data)
    if FLAGS.backend != "tensorflow":
        results["tfmot"] = {"error": f"not on {FLAGS.backend} (tfmot is tf_keras only)"}
    elif FLAGS.tfmot:
        results["tfmot"] = run_tfmot_process()
    else:
        results["tfmot"] = {"error": "skipped (--notfmot)"}
    print_table(results)
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(results, f, indent=2)


def _cells(times, base, other):
    """Median s/epoch of both runs and their ratio, wall clock then CPU."""
    if "error" in times:
        return f"  {times['error']}"
    cells = ""
    for clock in ("wall", "cpu"):
        a = statistics.median(times[base][clock])
        b = statistics.median(times[other][clock])
        cells += f"{a:>7.2f}{b:>7.2f}{b / a:>7.3f}"
    return cells


def print_table(results):
    import keras

    print(
        f"\nKeras {keras.__version__} on {keras.backend.backend()}; "
        f"LeNet-300-100, MNIST, batch {BATCH}, {FLAGS.train_examples} images/epoch; "
        f"medians of {FLAGS.repeats} epochs in seconds, wall clock and CPU (all threads)"
    )
    ours = "".join(f"{name:>7}" for name in ("keras", "lth", "ratio") * 2)
    theirs = "".join(f"{name:>7}" for name in ("tf_ker", "tfmot", "ratio") * 2)
    clocks = f"{'---- wall ----':>21}{'---- cpu -----':>21}"
    print(f"{'':<14}{clocks}  |{clocks}")
    print(f"{'setting':<14}{ours}  |{theirs}")
    for label in SETTINGS:
        theirs = results["tfmot"].get(label, results["tfmot"])
        print(
            f"{label:<14}{_cells(results['keras3'][label], 'keras', 'lth_keras')}  |"
            f"{_cells(theirs, 'tf_keras', 'tfmot')}"
        )
    print(
        "round transition (prune + rewind + optimizer reset): "
        f"{results['round_transition_ms']:.0f} ms"
    )


if __name__ == "__main__":
    app.run(main)
