"""Size on disk and CPU latency of exported LeNet-300-100 tickets.

For 100%, 21.1%, 7.0%, 3.6% and 1.9% of weights remaining (the paper's
LeNet pruning levels: 0, 7, 12, 15 and 18 rounds of 20% per hidden layer and
10% for the output layer, applied by magnitude to a LeNet trained for one
epoch on MNIST), measures in one run:

- size on disk, raw and gzip: dense SavedModel (the baseline), compact
  SavedModel (`sparse=True`), TFLite without and with the sparsity
  optimisation, and the portable ticket file;
- latency of one prediction at batch 1 and batch 256: the SavedModel
  `serving_default` signatures and the TFLite interpreter (default XNNPACK
  delegate), medians over many calls, variants interleaved.

Every figure is printed as a ratio to the dense SavedModel of the same level.

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python benchmarks/export_size_latency.py
"""

import gzip
import io
import json
import os
import statistics
import tarfile
import tempfile
import time
import warnings

from absl import app, flags

flags.DEFINE_integer("calls", 300, "Timed calls per variant and batch size.")
flags.DEFINE_string("json_out", "", "Optional path for the results as JSON.")
FLAGS = flags.FLAGS

LEVELS = {"100%": 0, "21.1%": 7, "7.0%": 12, "3.6%": 15, "1.9%": 18}
VARIANTS = ("savedmodel", "savedmodel_sparse", "tflite", "tflite_sparse", "ticket")


def size(path):
    """(raw bytes, gzip bytes) of a file or a folder (as a tar.gz)."""
    buffer = io.BytesIO()
    if os.path.isdir(path):
        raw = sum(
            os.path.getsize(os.path.join(root, f))
            for root, _, files in os.walk(path)
            for f in files
        )
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            archive.add(path, arcname=".")
        return raw, len(buffer.getvalue())
    with open(path, "rb") as f:
        data = f.read()
    return len(data), len(gzip.compress(data))


def trained_lenet():
    import keras
    import tensorflow_datasets as tfds

    import lth_keras
    from lth_keras.experiments.models import build_model

    images, labels = tfds.as_numpy(
        tfds.load("mnist", split="train", batch_size=-1, as_supervised=True)
    )
    keras.utils.set_random_seed(0)
    model = lth_keras.prunable(build_model("lenet", (28, 28, 1)))
    model.compile(
        keras.optimizers.Adam(1.2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(images.astype("float32") / 255.0, labels, batch_size=60, epochs=1, verbose=0)
    return model, images[:256].astype("float32") / 255.0


def prune_to(model, rounds):
    import lth_keras
    from lth_keras import pruning

    masks = {k: m | True for k, m in lth_keras.get_masks(model).items()}
    kernels = lth_keras.masks.get_kernels(model)
    rates = {k: 0.1 if k.startswith("output") else 0.2 for k in masks}
    for _ in range(rounds):
        masks = pruning.magnitude_prune(kernels, masks, rates)
    lth_keras.set_masks(model, masks)
    return lth_keras.weights_remaining(model)[0]


def runners(folder):
    """Callables `run(x)` for each servable variant in `folder`."""
    import tensorflow as tf

    found = {}
    for name in ("savedmodel", "savedmodel_sparse"):
        serve = tf.saved_model.load(os.path.join(folder, name, "1")).signatures["serving_default"]
        found[name] = lambda x, serve=serve: serve(inputs=tf.constant(x))["outputs"].numpy()
    for name in ("tflite", "tflite_sparse"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter is deprecated for LiteRT
            interpreter = tf.lite.Interpreter(model_path=os.path.join(folder, f"{name}.tflite"))
        interpreter.allocate_tensors()
        found[name] = lambda x, it=interpreter: _invoke(it, x)
    return found


def _invoke(interpreter, x):
    detail = interpreter.get_input_details()[0]
    if tuple(detail["shape"]) != x.shape:
        interpreter.resize_tensor_input(detail["index"], x.shape)
        interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def latencies(run, batch, calls):
    """Median seconds per call of every runner, calls interleaved."""
    for f in run.values():
        f(batch)
        f(batch)
    times = {name: [] for name in run}
    for _ in range(calls):
        for name, f in run.items():
            start = time.perf_counter()
            f(batch)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv):
    del argv
    import numpy as np

    import lth_keras
    from lth_keras.tensorflow import export

    model, images = trained_lenet()
    results = {}
    for level, rounds in LEVELS.items():
        remaining = prune_to(model, rounds)
        with tempfile.TemporaryDirectory() as folder:
            export.export_ticket(model, os.path.join(folder, "savedmodel"), version=1)
            export.export_ticket(
                model, os.path.join(folder, "savedmodel_sparse"), version=1, sparse=True
            )
            export.export_tflite(model, os.path.join(folder, "tflite.tflite"), sparse=False)
            export.export_tflite(model, os.path.join(folder, "tflite_sparse.tflite"))
            lth_keras.save_ticket(model, os.path.join(folder, "ticket.npz"))
            paths = {
                "savedmodel": "savedmodel/1",
                "savedmodel_sparse": "savedmodel_sparse/1",
                "tflite": "tflite.tflite",
                "tflite_sparse": "tflite_sparse.tflite",
                "ticket": "ticket.npz",
            }
            sizes = {name: size(os.path.join(folder, path)) for name, path in paths.items()}
            run = runners(folder)
            expected = model.predict(images, verbose=0)
            for name, f in run.items():
                np.testing.assert_allclose(f(images), expected, rtol=1e-4, atol=1e-4, err_msg=name)
            timing = {b: latencies(run, images[:b], FLAGS.calls // (1 + b // 64)) for b in (1, 256)}
        results[level] = {"weights_remaining": remaining, "bytes": sizes, "latency_s": timing}
    print_table(results)
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(results, f, indent=2)


def print_table(results):
    print(
        "\nLeNet-300-100 exports; every cell is a ratio to the dense SavedModel of the "
        "same level (its absolute value in the first row of each level)"
    )
    header = (
        f"{'level':<7}{'variant':<19}{'raw size':>10}{'gzip':>9}{'batch 1':>10}{'batch 256':>11}"
    )
    print(header)
    print("-" * len(header))
    for level, entry in results.items():
        base_raw, base_gz = entry["bytes"]["savedmodel"]
        lat = entry["latency_s"]
        print(
            f"{level:<7}{'savedmodel (abs)':<19}{base_raw / 1e6:>8.3f}MB{base_gz / 1e6:>7.3f}MB"
            f"{lat[1]['savedmodel'] * 1e6:>8.0f}us{lat[256]['savedmodel'] * 1e6:>9.0f}us"
        )
        for name in VARIANTS:
            raw, gz = entry["bytes"][name]
            row = f"{'':<7}{name:<19}{raw / base_raw:>10.3f}{gz / base_gz:>9.3f}"
            if name in lat[1]:
                row += (
                    f"{lat[1][name] / lat[1]['savedmodel']:>10.3f}"
                    f"{lat[256][name] / lat[256]['savedmodel']:>11.3f}"
                )
            print(row)
        print(f"{'':<7}({100 * entry['weights_remaining']:.2f}% of weights remaining)")


if __name__ == "__main__":
    app.run(main)
