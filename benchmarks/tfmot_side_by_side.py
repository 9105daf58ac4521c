"""tfmot's "Pruning in Keras" example both ways: tfmot on tf_keras, lth_keras.tfmot on Keras 3.

The guide's MNIST CNN (Conv2D 12 3x3, max-pool, Dense 10) is trained as the
guide does (Adam, `--baseline_epochs` epochs, 10% held out) once, on Keras 3
(by the first Keras 3 process: TensorFlow, or JAX when
`--settings_keras3=jax`); its weights then start every run, which fine-tunes
them for `--epochs` epochs at batch 128 on the first 90% of the training
images with `PolynomialDecay(0.50 -> 0.80, begin_step=0, end_step=ceil(n /
128) * epochs)` and `UpdatePruningStep`, as the guide does. Each library runs
in its own process: tfmot on tf_keras from the Python of another virtual
environment (`--tfmot_python`, with tensorflow, tf-keras and
tensorflow-model-optimization), lth_keras on Keras 3's TensorFlow backend
(graph and XLA) and on JAX; `--settings_keras3` (graph, xla, jax) and
`--settings_tfmot` (graph, xla) pick the settings, and the JAX process starts
only for `jax`.

`--variants` picks what is pruned, each with the same arguments and the same
layers in both libraries:

- `unstructured`: `prune_low_magnitude(model, pruning_schedule=...)`, the
  guide's call: the Conv2D and the Dense kernels.
- `block`: `block_size=(4, 1)`, `block_pooling_type="AVG"`, tfmot's blocks
  (4 consecutive inputs of one unit, TFLite's 1x4), on the Dense kernel only,
  wrapped with `keras.models.clone_model(..., clone_function=...)` as tfmot's
  guide does: tfmot pools blocks of rank-2 kernels only (it refuses the
  Conv2D's 4-D kernel), and lth_keras refuses `block_size=(1, 4)` (blocks
  run along the input axis only) and the Conv2D's single input channel.
- `2:4`: `sparsity_m_by_n=(2, 4)` with the same schedule object (tfmot sets
  the 2:4 mask once, at step 1, whatever the schedule says; lth_keras does
  the same), on the layers whose input size is a multiple of 4, the Dense
  kernel only (its 2,028 inputs), wrapped the same way: tfmot leaves the
  Conv2D (1 input channel) dense when asked to prune it, lth_keras refuses it.

Each setting and variant times the pruned model against the same model
unpruned, epochs alternating (plain, pruned, pruned, plain), wall and CPU
seconds (all threads of the process), `--repeats` times, each repeat with
fresh models from the baseline weights. The table gives, per setting,
variant and library, the medians over repeats of the last (compiled) epoch's
seconds and of the pruned/plain ratios (each repeat's own ratio), the range
of the CPU ratio, then the test accuracy (median), each kernel's final
sparsity and, for graph, the guide's TFLite file (stripped model, default
converter) raw and gzipped. Per variant it then compares the pruned epoch's
CPU seconds of both libraries (each at its best setting) and gives each
library's and setting's median pruned/plain CPU ratio against the 1.03 bar.
`--json_out` keeps every repeat's times.

    nice -n 5 python benchmarks/tfmot_side_by_side.py --tfmot_python=/tmp/tfmot_venv/bin/python \
        --variants=unstructured,block,2:4 --repeats=3

The 1.03 bar alone, on the TensorFlow graph setting:

    nice -n 5 python benchmarks/tfmot_side_by_side.py --tfmot_python=/tmp/tfmot_venv/bin/python \
        --settings_keras3=graph --settings_tfmot=graph --repeats=5
"""

import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

#: variant: tfmot's structure arguments of `prune_low_magnitude`, the same in both libraries.
VARIANTS = {
    "unstructured": {},
    "block": {"block_size": (4, 1), "block_pooling_type": "AVG"},
    "2:4": {"sparsity_m_by_n": (2, 4)},
}
SETTINGS_KERAS3 = ("graph", "xla", "jax")
SETTINGS_TFMOT = ("graph", "xla")
BAR = 1.03  # the most pruned/plain CPU time may be, same backend and setting

flags.DEFINE_integer("train_examples", 60000, "MNIST training images (the guide: all 60,000).")
flags.DEFINE_integer("baseline_epochs", 4, "Epochs of the dense baseline (the guide: 4).")
flags.DEFINE_integer("epochs", 2, "Epochs of pruning (the guide: 2).")
flags.DEFINE_list("variants", ["unstructured"], f"Pruning variants, of {', '.join(VARIANTS)}.")
flags.DEFINE_integer("repeats", 1, "Measurements per setting and variant (fresh models each).")
flags.DEFINE_list("settings_keras3", list(SETTINGS_KERAS3), "lth_keras settings: graph, xla, jax.")
flags.DEFINE_list("settings_tfmot", list(SETTINGS_TFMOT), "tfmot settings: graph, xla.")
flags.DEFINE_string("tfmot_python", "", "Python of a venv with tf-keras and tfmot; empty: skip.")
flags.DEFINE_string("worker", "", "Internal: 'keras3' or 'tfmot' runs one process's part.")
flags.DEFINE_string("settings", "graph,xla", "Internal: the worker's settings.")
flags.DEFINE_string("folder", "", "Internal: the folder holding data, weights and results.")
flags.DEFINE_string("json_out", "", "Optional path for all results as JSON.")
flags.register_validator(
    "variants", lambda v: set(v) <= set(VARIANTS), f"--variants: any of {', '.join(VARIANTS)}"
)
flags.register_validator("repeats", lambda v: v >= 1, "--repeats must be at least 1")
flags.register_validator(
    "settings_keras3", lambda v: set(v) <= set(SETTINGS_KERAS3), "--settings_keras3: graph,xla,jax"
)
flags.register_validator(
    "settings_tfmot", lambda v: set(v) <= set(SETTINGS_TFMOT), "--settings_tfmot: graph,xla"
)
FLAGS = flags.FLAGS

BATCH = 128


def build(keras):
    return keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(12, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def compile_model(keras, model, jit):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"], jit_compile=jit)


def timed_epoch(model, x, y, callbacks):
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=callbacks)
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def gzipped(data):
    return len(gzip.compress(data))


def prunes(layer, variant):
    """Whether `variant` prunes `layer`: the same rule for both libraries (module docstring)."""
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return False
    shape = [int(n) for n in kernel.shape]
    if variant == "block":  # tfmot pools blocks of rank-2 kernels only
        return len(shape) == 2
    if variant == "2:4":  # groups of 4 consecutive inputs
        return shape[-2] % 4 == 0
    return True


def prune(keras, sparsity, model, schedule, variant):
    """`model` with `variant`'s pruning: the whole model, or its layers that support it."""
    arguments = dict(VARIANTS[variant], pruning_schedule=schedule)
    if variant == "unstructured":  # the guide's call
        return sparsity.prune_low_magnitude(model, **arguments)

    def clone_function(layer):  # tfmot's guide: wrap only the layers to prune
        if prunes(layer, variant):
            return sparsity.prune_low_magnitude(layer, **arguments)
        return layer

    return keras.models.clone_model(model, clone_function=clone_function)


def run_repeat(keras, sparsity, data, weights, jit, variant):
    """Fresh plain and pruned models, epochs alternating; accuracy, sparsity and the stripped."""
    import numpy as np

    x, y = data["x_train"][: len(data["x_train"]) * 9 // 10], data["y_train"]
    end_step = int(np.ceil(len(x) / BATCH)) * FLAGS.epochs
    schedule = sparsity.PolynomialDecay(0.50, 0.80, begin_step=0, end_step=end_step)
    models = {}
    for name in ("plain", "pruned"):
        model = build(keras)
        model.set_weights(weights)
        if name == "pruned":
            model = prune(keras, sparsity, model, schedule, variant)
        compile_model(keras, model, jit)
        models[name] = model
    step = [sparsity.UpdatePruningStep()]
    times = {"plain": [], "pruned": []}
    for epoch in range(FLAGS.epochs):  # plain, pruned, then pruned, plain, ...
        for name in ("plain", "pruned") if epoch % 2 == 0 else ("pruned", "plain"):
            callbacks = step if name == "pruned" else []
            times[name].append(timed_epoch(models[name], x, y[: len(x)], callbacks))
    result = {"times": times, "end_step": end_step}
    for name, model in models.items():
        result[f"{name}_accuracy"] = float(
            model.evaluate(data["x_test"], data["y_test"], verbose=0, batch_size=1000)[1]
        )
    stripped = sparsity.strip_pruning(models["pruned"])
    result["sparsity"] = {
        layer.name: float(np.mean(np.asarray(layer.kernel) == 0))
        for layer in stripped.layers
        if hasattr(layer, "kernel")
    }
    return result, stripped


def tflite_sizes(stripped, convert):
    try:
        flatbuffer = convert(stripped)
    except Exception as error:  # report it, keep the timings
        return {"error": f"{type(error).__name__}: {str(error).strip()[:200]}"}
    return {"bytes": len(flatbuffer), "gzip_bytes": gzipped(flatbuffer)}


def _error(error):
    return {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"}


def run_cells(keras, sparsity, data, weights, jit_of, convert):
    """`{setting: {variant: {"repeats": [...], "tflite": ...} or {"error": ...}}}`."""
    results = {}
    for setting in [s for s in FLAGS.settings.split(",") if s]:
        results[setting] = {}
        for variant in FLAGS.variants:
            try:  # a cell a library cannot run: say so, keep the others
                repeats = []
                for _ in range(FLAGS.repeats):
                    result, stripped = run_repeat(
                        keras, sparsity, data, weights, jit_of[setting], variant
                    )
                    repeats.append(result)
                cell = {"repeats": repeats}
                if convert is not None and setting == "graph":
                    cell["tflite"] = tflite_sizes(stripped, convert)
            except Exception as error:
                cell = _error(error)
            results[setting][variant] = cell
    return results


def load_weights(folder):
    import numpy as np

    with np.load(os.path.join(folder, "baseline.npz")) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def worker_keras3(folder, data):
    import keras
    import numpy as np

    from lth_keras import tfmot as sparsity

    backend = keras.backend.backend()
    results = {"versions": {"keras": keras.__version__, "backend": backend}}
    weights_file = os.path.join(folder, "baseline.npz")
    if not os.path.exists(weights_file):  # the first worker trains the guide's baseline
        keras.utils.set_random_seed(0)
        model = build(keras)
        compile_model(keras, model, False)
        model.fit(
            data["x_train"],
            data["y_train"],
            epochs=FLAGS.baseline_epochs,
            validation_split=0.1,
            verbose=0,
        )
        results["baseline_accuracy"] = float(
            model.evaluate(data["x_test"], data["y_test"], verbose=0)[1]
        )
        np.savez(weights_file, *model.get_weights())
    jit_of = {"graph": False, "xla": True, "jax": "auto"}
    convert = _keras3_tflite if backend == "tensorflow" else None
    results.update(run_cells(keras, sparsity, data, load_weights(folder), jit_of, convert))
    return results


def _keras3_tflite(model):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def worker_tfmot(data):
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    results = {"versions": {"tensorflow": tf.__version__, "tfmot": tfmot.__version__}}
    convert = lambda m: tf.lite.TFLiteConverter.from_keras_model(m).convert()  # noqa: E731
    jit_of = {"graph": False, "xla": True}
    weights = load_weights(FLAGS.folder)
    results.update(run_cells(tf_keras, tfmot.sparsity.keras, data, weights, jit_of, convert))
    return results


def load_data(folder):
    import numpy as np

    path = os.path.join(folder, "mnist.npz")
    if not os.path.exists(path):
        import tensorflow_datasets as tfds

        arrays = {}
        for split in ("train", "test"):
            images, labels = tfds.as_numpy(
                tfds.load("mnist", split=split, batch_size=-1, as_supervised=True)
            )
            arrays[f"x_{split}"], arrays[f"y_{split}"] = images[..., 0], labels
        arrays["x_train"] = arrays["x_train"][: FLAGS.train_examples]
        arrays["y_train"] = arrays["y_train"][: FLAGS.train_examples]
        np.savez(path, **arrays)
    with np.load(path) as saved:
        data = dict(saved)
    for split in ("train", "test"):
        data[f"x_{split}"] = data[f"x_{split}"].astype("float32") / 255.0
    return data


def spawn(python, worker, settings, env):
    command = [python, __file__, f"--worker={worker}", f"--settings={','.join(settings)}"]
    command += [f"--folder={FLAGS.folder}", f"--epochs={FLAGS.epochs}"]
    command += [f"--baseline_epochs={FLAGS.baseline_epochs}"]
    command += [f"--variants={','.join(FLAGS.variants)}", f"--repeats={FLAGS.repeats}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:] if done.stderr else ["failed"]
        return {"error": " | ".join(tail)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _last(repeat, name, clock):
    return repeat["times"][name][-1][clock]  # the last epoch: compiled, pruning included


def summarize(cell):
    """Medians over repeats of the last epoch's seconds and ratios; the CPU ratio's range."""
    repeats = cell["repeats"]
    summary = {}
    for name in ("plain", "pruned"):
        for clock in ("wall", "cpu"):
            summary[f"{name}_{clock}"] = statistics.median(_last(r, name, clock) for r in repeats)
    for clock in ("wall", "cpu"):
        ratios = [_last(r, "pruned", clock) / _last(r, "plain", clock) for r in repeats]
        summary[f"ratio_{clock}"] = statistics.median(ratios)
        summary[f"ratio_{clock}_range"] = [min(ratios), max(ratios)]
    for name in ("plain", "pruned"):
        summary[f"{name}_accuracy"] = statistics.median(r[f"{name}_accuracy"] for r in repeats)
    summary["sparsity"] = list(repeats[-1]["sparsity"].values())
    return summary


def _rows(results):
    for variant in FLAGS.variants:
        for setting in SETTINGS_KERAS3:
            for lib, part in (
                ("tfmot", "tfmot"),
                ("lth_keras", "keras3_tf"),
                ("lth_keras", "keras3_jax"),
            ):
                cell = results.get(part, {}).get(setting, {}).get(variant)
                if cell is not None:
                    yield variant, setting, lib, cell


def _tflite(cell):
    tflite = cell.get("tflite", {})
    return tflite.get("error", f"{tflite['bytes']} ({tflite['gzip_bytes']})" if tflite else "")


def print_report(results):
    print(
        f"\ntfmot's pruning guide, MNIST CNN, {results['train_examples']} training images "
        f"(90% trained on), {results['epochs']} epochs, batch {BATCH}; seconds of the last "
        "epoch, wall and CPU (all threads), plain Keras vs pruned, same process, alternating; "
        f"medians over {results['repeats']} repeat(s)"
    )
    for part in ("keras3_tf", "keras3_jax", "tfmot"):
        if "error" in results.get(part, {}):
            print(f"{part}: {results[part]['error']}")
    lead = f"{'variant':<13}{'setting':<8}{'library':<10}"
    print(
        f"{'':<31}{'plain':>14}{'pruned':>14}{'pruned/plain':>14}{'cpu ratio':>13}  test accuracy"
    )
    print(
        lead + f"{'wall':>7}{'cpu':>7}" * 3 + f"{'min-max':>13}{'plain':>10}{'pruned':>8}"
        "  sparsity (conv2d, dense)   tflite (gzip)"
    )
    summaries = []
    for variant, setting, lib, cell in _rows(results):
        if "error" in cell:
            print(f"{variant:<13}{setting:<8}{lib:<10}{cell['error']}")
            continue
        s = summarize(cell)
        summaries.append({"variant": variant, "setting": setting, "library": lib, **s})
        cells = "".join(
            f"{s[f'{name}_wall']:>7.2f}{s[f'{name}_cpu']:>7.2f}" for name in ("plain", "pruned")
        )
        cells += f"{s['ratio_wall']:>7.3f}{s['ratio_cpu']:>7.3f}"
        low, high = s["ratio_cpu_range"]
        cells += f"{f'{low:.3f}-{high:.3f}':>13}"
        sparsities = ", ".join(f"{v:.4f}" for v in s["sparsity"])
        print(
            f"{variant:<13}{setting:<8}{lib:<10}{cells}{s['plain_accuracy']:>10.4f}"
            f"{s['pruned_accuracy']:>8.4f}  {sparsities:<26} {_tflite(cell)}"
        )
    results["summary"] = summaries
    for variant in FLAGS.variants:
        rows = [s for s in summaries if s["variant"] == variant]
        if not rows:
            continue
        print(f"\n{variant}:")
        best = {}
        for s in rows:
            key = (s["pruned_cpu"], s["setting"])
            best[s["library"]] = min(best.get(s["library"], key), key)
        if len(best) == 2:
            (ours, where), (theirs, their_setting) = best["lth_keras"], best["tfmot"]
            print(
                f"  pruned epoch, CPU seconds, best setting each: lth_keras {ours:.2f} ({where})"
                f" / tfmot {theirs:.2f} ({their_setting}) = {ours / theirs:.3f}"
            )
        kernels = {(s["library"], tuple(round(v, 4) for v in s["sparsity"])) for s in rows}
        if len({lib for lib, _ in kernels}) == 2:
            same = "same" if len({sparsities for _, sparsities in kernels}) == 1 else "DIFFER"
            print(f"  final sparsity per kernel, lth_keras vs tfmot: {same}")
        for s in rows:
            verdict = "ok" if s["ratio_cpu"] <= BAR else "over"
            print(
                f"  pruned/plain CPU ratio, median over repeats: {s['library']} {s['setting']} "
                f"{s['ratio_cpu']:.3f} (bar {BAR}) {verdict}"
            )
    baseline = [results.get(p, {}).get("baseline_accuracy") for p in ("keras3_tf", "keras3_jax")]
    print(f"\nbaseline accuracy (Keras 3): {next((a for a in baseline if a is not None), None)}")
    print(f"total {results['total_seconds']:.0f} s")


def main(argv):
    del argv
    if FLAGS.worker:
        data = load_data(FLAGS.folder)
        if FLAGS.worker == "tfmot":
            print(json.dumps(worker_tfmot(data)))
        else:
            print(json.dumps(worker_keras3(FLAGS.folder, data)))
        return
    with tempfile.TemporaryDirectory() as folder:
        FLAGS.folder = folder
        load_data(folder)
        start = time.perf_counter()
        results = {
            "train_examples": FLAGS.train_examples,
            "epochs": FLAGS.epochs,
            "repeats": FLAGS.repeats,
            "variants": FLAGS.variants,
        }
        settings_tf = [s for s in SETTINGS_KERAS3 if s in FLAGS.settings_keras3 and s != "jax"]
        if settings_tf or "jax" not in FLAGS.settings_keras3:  # else JAX trains the baseline
            env = {"KERAS_BACKEND": "tensorflow"}
            results["keras3_tf"] = spawn(sys.executable, "keras3", settings_tf, env)
        if "jax" in FLAGS.settings_keras3:
            env = {"KERAS_BACKEND": "jax"}
            results["keras3_jax"] = spawn(sys.executable, "keras3", ["jax"], env)
        settings_tfmot = [s for s in SETTINGS_TFMOT if s in FLAGS.settings_tfmot]
        if FLAGS.tfmot_python and settings_tfmot:
            env = {"TF_USE_LEGACY_KERAS": "1"}
            results["tfmot"] = spawn(FLAGS.tfmot_python, "tfmot", settings_tfmot, env)
        results["total_seconds"] = time.perf_counter() - start
    print_report(results)
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
