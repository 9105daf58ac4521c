"""Size, CPU latency and accuracy of exported LeNet-300-100 tickets, by sparsity structure.

A LeNet-300-100 is trained (`--train_epochs`) on MNIST. At each level
(`--rounds`: 7, 12 and 15 rounds of 20% per hidden layer and 10% for the
output layer, the paper's 21.1%, 7.0% and 3.6% of weights remaining) and for
each structure (`--structures`), the trained weights are pruned by magnitude
with that structure (the library's `Structure.select`, as `LotteryPruner`
applies it), then fine-tuned for `--finetune_epochs` with the mask fixed.
Each ticket is exported as a SavedModel and as TFLite:

- `unstructured`, `block:1x4`, `2:4`: the SavedModel holds the dense kernels
  (zeros included); the TFLite file uses the converter's sparsity
  optimisation (`export_tflite`);
- `units`: `compact(model)`, a smaller dense model (`export_ticket(...,
  compact=True)`, and `export_tflite` of the compact model).

Measured in one run, against the dense trained model exported the same two
ways (SavedModel; TFLite without the sparsity optimisation): size on disk
(raw and gzip) and the median latency of one prediction at batch 1 and
batch 256 (SavedModel `serving_default`; TFLite interpreter with its default
XNNPACK delegate), all variants of a level interleaved. Every export's
outputs are checked against the Keras model, and the TFLite file's
FULLY_CONNECTED weights are inspected: `dense`, `densified` (stored sparse,
a DENSIFY op rebuilds the dense kernel) or `sparse 1xK` / `sparse` (the
sparse kernel runs on the sparse weights). Accuracy is on the MNIST test set,
pruned without retraining and after fine-tuning; latencies are of the
fine-tuned models.

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets taskset -c 1 \\
        python benchmarks/export_size_latency.py --json_out=/tmp/latency.json
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

from absl import app, flags, logging

flags.DEFINE_integer("calls", 300, "Timed calls per variant at batch 1 (a fifth at batch 256).")
flags.DEFINE_list("rounds", ["7", "12", "15"], "Pruning levels, in paper rounds (20% and 10%).")
flags.DEFINE_list(
    "structures", ["unstructured", "units", "block:1x4", "2:4"], "Sparsity structures."
)
flags.DEFINE_integer("train_epochs", 1, "Epochs of training of the dense LeNet.")
flags.DEFINE_integer("finetune_epochs", 1, "Epochs of fine-tuning of each ticket (0: none).")
flags.DEFINE_string("json_out", "", "Optional path for the results as JSON.")
FLAGS = flags.FLAGS

_FLAG_NAMES = ("calls", "rounds", "structures", "train_epochs", "finetune_epochs")


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


def mnist(split):
    import tensorflow_datasets as tfds

    images, labels = tfds.as_numpy(
        tfds.load("mnist", split=split, batch_size=-1, as_supervised=True)
    )
    return images.astype("float32") / 255.0, labels


def fit(model, data, epochs):
    import keras

    model.compile(
        keras.optimizers.Adam(1.2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(*data, batch_size=60, epochs=epochs, verbose=0)


def accuracy(model, data):
    images, labels = data
    return float((model.predict(images, batch_size=1000, verbose=0).argmax(-1) == labels).mean())


def prune_to(model, structure, rounds):
    """Prunes the model's kernels `rounds` times by magnitude with `structure`."""
    import lth_keras
    from lth_keras import masks, pruning

    entries = masks.prunable_entries(model)
    layouts = {
        key: pruning.KernelLayout(
            *layer.kernel_axes[weight.name],
            is_output=layer is entries[-1][1],
            layer_type=type(layer).__name__,
        )
        for key, layer, weight in entries
    }
    rates = {key: 0.1 if layer is entries[-1][1] else 0.2 for key, layer, _ in entries}
    targets = pruning.PruneTargets(rates, None, layouts)
    kernels = masks.get_kernels(model)
    new = {key: mask | True for key, mask in lth_keras.get_masks(model).items()}
    for _ in range(rounds):
        new = pruning.Magnitude().prune(
            kernels, new, targets, pruning.get_structure(structure), None
        )
    lth_keras.set_masks(model, new)
    return lth_keras.weights_remaining(model)[0]


def export(model, name, folder, compact):
    """SavedModel and TFLite of `model` (compacted first if `compact`): {variant: path}."""
    import lth_keras
    from lth_keras.tensorflow import export as export_lib

    dense = name.startswith("dense")
    served = lth_keras.compact(model) if compact else model
    export_lib.export_ticket(model, os.path.join(folder, name), version=1, compact=compact)
    tflite = os.path.join(folder, f"{name}.tflite")
    export_lib.export_tflite(served, tflite, sparse=not dense)
    return {f"{name}_savedmodel": os.path.join(folder, name, "1"), f"{name}_tflite": tflite}


def _interpreter(path, delegates=True):
    import tensorflow as tf

    resolver = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter is deprecated for LiteRT
        interpreter = tf.lite.Interpreter(
            model_path=path,
            experimental_op_resolver_type=(
                resolver.AUTO if delegates else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            ),
        )
    interpreter.allocate_tensors()
    return interpreter


def tflite_kernels(path):
    """How each FULLY_CONNECTED op of a TFLite file holds its weights, and if XNNPACK runs any."""
    interpreter = _interpreter(path, delegates=False)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # private, the one Python view of the op graph
    densified = {op["outputs"][0] for op in ops if op["op_name"] == "DENSIFY"}
    formats = []
    for op in ops:
        if op["op_name"] != "FULLY_CONNECTED":
            continue
        weight = op["inputs"][1]
        sparsity = tensors[weight].get("sparsity_parameters") or {}
        if weight in densified:
            formats.append("densified")
        elif not sparsity:
            formats.append("dense")
        elif len(sparsity["block_map"]):
            formats.append(f"sparse 1x{sparsity['dim_metadata'][-1]['dense_size']}")
        else:
            formats.append("sparse")
    delegated = any(op["op_name"] == "DELEGATE" for op in _interpreter(path)._get_ops_details())
    return {"fully_connected": formats, "xnnpack": delegated}


def runners(paths):
    """Callables `run(x)` for each servable variant."""
    import tensorflow as tf

    found = {}
    for name, path in paths.items():
        if name.endswith("savedmodel"):
            serve = tf.saved_model.load(path).signatures["serving_default"]
            found[name] = lambda x, serve=serve: serve(inputs=tf.constant(x))["outputs"].numpy()
        else:
            found[name] = _tflite_runner(path)
    return found


def _tflite_runner(path):
    """`run(x)` on a TFLite interpreter, resized when the batch changes."""
    interpreter = _interpreter(path)
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def run(x):
        if shape[0] != x.shape:
            interpreter.resize_tensor_input(source, x.shape)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        return interpreter.get_tensor(target)

    return run


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


def ticket(model, trained, structure, rounds, train, test):
    """Prunes the trained weights with `structure`, fine-tunes; returns the entry's facts."""
    import numpy as np

    import lth_keras

    model.set_weights(trained)
    remaining = prune_to(model, structure, rounds)
    pruned = accuracy(model, test)
    if FLAGS.finetune_epochs:
        fit(model, train, FLAGS.finetune_epochs)
    entry = {"weights_remaining": remaining, "weights_served": remaining, "accuracy_pruned": pruned}
    entry["accuracy_finetuned"] = accuracy(model, test)
    if structure == "units":
        dense_layers = [layer for layer in lth_keras.compact(model).layers if layer.weights]
        widths = [layer.units for layer in dense_layers]
        kernels = sum(int(np.prod(layer.kernel.shape)) for layer in dense_layers)
        entry["compact"] = {"units": widths, "kernel_weights": kernels}
        total = sum(k.size for k in lth_keras.masks.get_kernels(model).values())
        entry["weights_served"] = kernels / total  # the compact model's kernels
    return entry


def main(argv):
    del argv
    import keras
    import numpy as np

    import lth_keras
    from lth_keras.experiments.models import build_model

    logging.set_verbosity(logging.WARNING)  # the SavedModel writer's INFO lines
    train, test = mnist("train"), mnist("test")
    images = test[0][:256]
    keras.utils.set_random_seed(0)
    model = lth_keras.prunable(build_model("lenet", (28, 28, 1)))
    fit(model, train, FLAGS.train_epochs)
    trained = model.get_weights()
    dense_kernels = sum(int(np.prod(k.shape)) for k in lth_keras.masks.get_kernels(model).values())
    results = {
        "flags": {name: FLAGS[name].value for name in _FLAG_NAMES},
        "dense": {"accuracy": accuracy(model, test), "kernel_weights": dense_kernels},
        "levels": {},
    }
    with tempfile.TemporaryDirectory() as folder:
        paths = export(model, "dense", folder, compact=False)
        expected = {name: model.predict(images, verbose=0) for name in paths}
        for rounds in map(int, FLAGS.rounds):
            level = {}
            for structure in FLAGS.structures:
                name = structure.replace(":", "_")
                level[structure] = ticket(model, trained, structure, rounds, train, test)
                where = os.path.join(folder, f"rounds{rounds}")
                exported = export(model, name, where, compact=structure == "units")
                level[structure]["tflite"] = tflite_kernels(exported[f"{name}_tflite"])
                paths.update(exported)
                expected.update({k: model.predict(images, verbose=0) for k in exported})
            run = runners(paths)
            for name, f in run.items():
                np.testing.assert_allclose(
                    f(images), expected[name], rtol=1e-4, atol=1e-4, err_msg=name
                )
            timing = {b: latencies(run, images[:b], FLAGS.calls // (1 + b // 64)) for b in (1, 256)}
            sizes = {name: size(path) for name, path in paths.items()}
            results["levels"][f"rounds={rounds}"] = {
                "structures": level,
                "bytes": sizes,
                "latency_s": timing,
            }
            for name in list(paths):
                if not name.startswith("dense"):
                    del paths[name]
    print_table(results)
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(results, f, indent=2)


def print_table(results):
    dense = results["dense"]
    print(
        f"\nLeNet-300-100, dense test accuracy {dense['accuracy']:.4f}. Size and latency are "
        "ratios to the dense model exported the same way (absolute values in the 'dense' rows)."
    )
    header = (
        f"{'level':<10}{'structure':<14}{'format':<12}{'raw':>8}{'gzip':>8}{'batch 1':>9}"
        f"{'batch 256':>11}  {'acc pruned/tuned':<17} TFLite FC weights"
    )
    print(header)
    print("-" * len(header))
    for level, entry in results["levels"].items():
        lat, sizes = entry["latency_s"], entry["bytes"]
        for fmt in ("savedmodel", "tflite"):
            base = f"dense_{fmt}"
            print(
                f"{level:<10}{'dense':<14}{fmt:<12}{sizes[base][0] / 1e6:>6.3f}MB"
                f"{sizes[base][1] / 1e6:>6.3f}MB{lat[1][base] * 1e6:>7.0f}us"
                f"{lat[256][base] * 1e6:>9.0f}us"
            )
        for structure, facts in entry["structures"].items():
            for fmt in ("savedmodel", "tflite"):
                name, base = f"{structure.replace(':', '_')}_{fmt}", f"dense_{fmt}"
                row = (
                    f"{'':<10}{structure:<14}{fmt:<12}{sizes[name][0] / sizes[base][0]:>8.3f}"
                    f"{sizes[name][1] / sizes[base][1]:>8.3f}{lat[1][name] / lat[1][base]:>9.3f}"
                    f"{lat[256][name] / lat[256][base]:>11.3f}"
                )
                if fmt == "tflite":
                    tfl = facts["tflite"]
                    row += f"  {'':<17} {', '.join(tfl['fully_connected'])}"
                    row += " (XNNPACK)" if tfl["xnnpack"] else ""
                else:
                    row += (
                        f"  {facts['accuracy_pruned']:.4f}/{facts['accuracy_finetuned']:.4f}"
                        f"  {100 * facts['weights_remaining']:.2f}% remaining"
                    )
                    if "compact" in facts:
                        row += (
                            f", compact {facts['compact']['units']}: "
                            f"{100 * facts['weights_served']:.2f}%"
                        )
                print(row)
    print(goal(results))


def goal(results):
    """Which structures serve at <= 7% remaining in <= 0.5x the dense batch-1 latency."""
    met = {"savedmodel": [], "tflite": []}
    for level, entry in results["levels"].items():
        lat = entry["latency_s"][1]
        for structure, facts in entry["structures"].items():
            if facts["weights_served"] > 0.07:
                continue
            for fmt, names in met.items():
                ratio = lat[f"{structure.replace(':', '_')}_{fmt}"] / lat[f"dense_{fmt}"]
                if ratio <= 0.5:
                    names.append(f"{structure} at {level} ({ratio:.2f}x)")
    return "\nGoal (<= 7% of weights, batch 1, <= 0.5x dense): " + "; ".join(
        f"{fmt}: {', '.join(names) or 'none'}" for fmt, names in met.items()
    )


if __name__ == "__main__":
    app.run(main)
