"""tfmot's "Pruning in Keras" example both ways: tfmot on tf_keras, lth_keras.tfmot on Keras 3.

The guide's MNIST CNN (Conv2D 12 3x3, max-pool, Dense 10) is trained as the
guide does (Adam, `--baseline_epochs` epochs, 10% held out) once, on Keras 3;
its weights then start every run, which fine-tunes them for `--epochs`
epochs at batch 128 on the first 90% of the training images with
`PolynomialDecay(0.50 -> 0.80, begin_step=0, end_step=ceil(n / 128) *
epochs)` and `UpdatePruningStep`, as the guide does. Each library runs in
its own process: tfmot on tf_keras from the Python of another virtual
environment (`--tfmot_python`, with tensorflow, tf-keras and
tensorflow-model-optimization), lth_keras on Keras 3's TensorFlow backend
(graph and XLA) and on JAX. Each setting times the pruned model against the
same model unpruned, epochs alternating (plain, pruned, pruned, plain), wall
and CPU seconds (all threads of the process); the tables give the second
(compiled) epoch and both ratios. Then: test accuracy, each kernel's final
sparsity, and the guide's TFLite file (stripped model, default converter)
raw and gzipped.

    nice -n 5 python benchmarks/tfmot_side_by_side.py --tfmot_python=/tmp/tfmot_venv/bin/python
"""

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_integer("train_examples", 60000, "MNIST training images (the guide: all 60,000).")
flags.DEFINE_integer("baseline_epochs", 4, "Epochs of the dense baseline (the guide: 4).")
flags.DEFINE_integer("epochs", 2, "Epochs of pruning (the guide: 2).")
flags.DEFINE_string("tfmot_python", "", "Python of a venv with tf-keras and tfmot; empty: skip.")
flags.DEFINE_string("worker", "", "Internal: 'keras3' or 'tfmot' runs one process's part.")
flags.DEFINE_string("settings", "graph,xla", "Internal: the worker's settings.")
flags.DEFINE_string("folder", "", "Internal: the folder holding data, weights and results.")
flags.DEFINE_string("json_out", "", "Optional path for all results as JSON.")
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


def run_setting(keras, sparsity, data, weights, jit):
    """Plain and pruned epochs alternating; accuracy, per-kernel sparsity and the models."""
    import numpy as np

    x, y = data["x_train"][: len(data["x_train"]) * 9 // 10], data["y_train"]
    end_step = int(np.ceil(len(x) / BATCH)) * FLAGS.epochs
    schedule = sparsity.PolynomialDecay(0.50, 0.80, begin_step=0, end_step=end_step)
    models = {}
    for name in ("plain", "pruned"):
        model = build(keras)
        model.set_weights(weights)
        if name == "pruned":
            model = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
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
    with np.load(weights_file) as saved:
        weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    for setting in FLAGS.settings.split(","):
        jit = {"graph": False, "xla": True, "jax": "auto"}[setting]
        result, stripped = run_setting(keras, sparsity, data, weights, jit)
        if backend == "tensorflow" and setting == "graph":
            result["tflite"] = tflite_sizes(stripped, _keras3_tflite)
        results[setting] = result
    return results


def _keras3_tflite(model):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def worker_tfmot(data):
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    results = {"versions": {"tensorflow": tf.__version__, "tfmot": tfmot.__version__}}
    with np.load(os.path.join(FLAGS.folder, "baseline.npz")) as saved:
        weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    for setting in FLAGS.settings.split(","):
        try:
            jit = setting == "xla"
            result, stripped = run_setting(tf_keras, tfmot.sparsity.keras, data, weights, jit)
        except Exception as error:  # a setting tfmot cannot run: say so, keep the others
            results[setting] = {"error": f"{type(error).__name__}: {str(error).strip()[:300]}"}
            continue
        if setting == "graph":
            convert = lambda m: tf.lite.TFLiteConverter.from_keras_model(m).convert()  # noqa: E731
            result["tflite"] = tflite_sizes(stripped, convert)
        results[setting] = result
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
    command = [python, __file__, f"--worker={worker}", f"--settings={settings}"]
    command += [f"--folder={FLAGS.folder}", f"--epochs={FLAGS.epochs}"]
    command += [f"--baseline_epochs={FLAGS.baseline_epochs}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:] if done.stderr else ["failed"]
        return {"error": " | ".join(tail)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _epoch(result, name, clock):
    return result["times"][name][-1][clock]  # the last epoch: compiled, pruning included


def _rows(results):
    for setting in ("graph", "xla", "jax"):
        for lib, part in (
            ("tfmot", "tfmot"),
            ("lth_keras", "keras3_tf"),
            ("lth_keras", "keras3_jax"),
        ):
            result = results.get(part, {}).get(setting)
            if result is not None:
                yield setting, lib, result


def print_report(results):
    print(
        f"\ntfmot's pruning guide, MNIST CNN, {results['train_examples']} training images "
        f"(90% trained on), {results['epochs']} epochs, batch {BATCH}; seconds of the last "
        "epoch, wall and CPU (all threads), plain Keras vs pruned, same process, alternating"
    )
    for part in ("keras3_tf", "keras3_jax", "tfmot"):
        if "error" in results.get(part, {}):
            print(f"{part}: {results[part]['error']}")
    print(f"{'':<18}{'plain':>14}{'pruned':>14}{'pruned/plain':>14}  test accuracy")
    head = f"{'setting':<8}{'library':<10}" + f"{'wall':>7}{'cpu':>7}" * 3
    print(head + f"{'plain':>10}{'pruned':>8}  sparsity (conv2d, dense)   tflite (gzip)")
    best = {}
    for setting, lib, result in _rows(results):
        if "error" in result:
            print(f"{setting:<8}{lib:<10}{result['error']}")
            continue
        cells = ""
        for name in ("plain", "pruned"):
            cells += f"{_epoch(result, name, 'wall'):>7.2f}{_epoch(result, name, 'cpu'):>7.2f}"
        ratio = [_epoch(result, "pruned", c) / _epoch(result, "plain", c) for c in ("wall", "cpu")]
        cells += f"{ratio[0]:>7.3f}{ratio[1]:>7.3f}"
        sparsities = ", ".join(f"{v:.4f}" for v in result["sparsity"].values())
        tflite = result.get("tflite", {})
        tflite = tflite.get(
            "error", f"{tflite['bytes']} ({tflite['gzip_bytes']})" if tflite else ""
        )
        print(
            f"{setting:<8}{lib:<10}{cells}{result['plain_accuracy']:>10.4f}"
            f"{result['pruned_accuracy']:>8.4f}  {sparsities:<26} {tflite}"
        )
        cpu = _epoch(result, "pruned", "cpu")
        best[lib] = min(best.get(lib, (float("inf"), "")), (cpu, setting))
    if len(best) == 2:
        (ours, where), (theirs, their_setting) = best["lth_keras"], best["tfmot"]
        print(
            f"pruned epoch, CPU seconds, best setting each: lth_keras {ours:.2f} ({where}) / "
            f"tfmot {theirs:.2f} ({their_setting}) = {ours / theirs:.3f}"
        )
    print(f"baseline accuracy (Keras 3): {results.get('keras3_tf', {}).get('baseline_accuracy')}")
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
        results = {"train_examples": FLAGS.train_examples, "epochs": FLAGS.epochs}
        results["keras3_tf"] = spawn(sys.executable, "keras3", "graph,xla", {})
        results["keras3_jax"] = spawn(sys.executable, "keras3", "jax", {"KERAS_BACKEND": "jax"})
        if FLAGS.tfmot_python:
            env = {"TF_USE_LEGACY_KERAS": "1"}
            results["tfmot"] = spawn(FLAGS.tfmot_python, "tfmot", "graph,xla", env)
        results["total_seconds"] = time.perf_counter() - start
    print_report(results)
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
