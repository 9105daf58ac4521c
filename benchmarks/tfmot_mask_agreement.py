"""Does lth_keras.tfmot choose the weights tfmot chooses? Masks of both, on the same weights.

A small model (Dense 32 -> 16 -> 8 and a Conv2D 3x3 over 8 channels, random
normal weights, no ties) is pruned once at step 1 by both libraries, the
learning rate 0 so the weights stay those both saw: unstructured at 0.5
and 0.8, tfmot's `block_size=(4, 1)` with `"AVG"` and `"MAX"` pooling
(rank-2 kernels only, as tfmot allows), and `sparsity_m_by_n=(2, 4)`.
tfmot runs on tf_keras in its own process (`--tfmot_python`). Printed: per
variant and kernel, the weights each keeps and the share of mask entries on
which they agree.

    python benchmarks/tfmot_mask_agreement.py --tfmot_python=/tmp/tfmot_venv/bin/python
"""

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

flags.DEFINE_string("tfmot_python", "/tmp/tfmot_venv/bin/python", "Python with tfmot.")
flags.DEFINE_string("worker", "", "Internal: 'tfmot' computes tfmot's masks.")
flags.DEFINE_string("folder", "", "Internal: the folder holding weights and masks.")
FLAGS = flags.FLAGS

#: name: (prune_low_magnitude arguments, rank-2 kernels only)
VARIANTS = {
    "unstructured 0.5": ({"sparsity": 0.5}, False),
    "unstructured 0.8": ({"sparsity": 0.8}, False),
    "block (4, 1) AVG": ({"sparsity": 0.5, "block_size": (4, 1)}, True),
    "block (4, 1) MAX": (
        {"sparsity": 0.5, "block_size": (4, 1), "block_pooling_type": "MAX"},
        True,
    ),
    "sparsity_m_by_n (2, 4)": ({"sparsity_m_by_n": (2, 4)}, False),
}


def build(keras, dense_only):
    layers = [keras.Input((6, 6, 8))]
    if not dense_only:
        layers.append(keras.layers.Conv2D(8, 3, name="conv"))
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(32, name="fc1"),
        keras.layers.Dense(16, name="fc2"),
        keras.layers.Dense(8, name="out"),
    ]
    return keras.Sequential(layers)


def masks_for(keras, sparsity_api, weights, variant):
    """`{layer name: 0/1 mask}` after one step at learning rate 0."""
    import numpy as np

    arguments, dense_only = VARIANTS[variant]
    arguments = dict(arguments)
    target = arguments.pop("sparsity", 0.5)
    model = build(keras, dense_only)
    model.set_weights(weights)
    schedule = sparsity_api.ConstantSparsity(target, begin_step=0, frequency=1)
    pruned = sparsity_api.prune_low_magnitude(model, pruning_schedule=schedule, **arguments)
    pruned.compile(keras.optimizers.SGD(0.0), "mse")
    x = np.zeros((1, 6, 6, 8), "float32")
    pruned.fit(
        x, np.zeros((1, 8)), epochs=1, verbose=0, callbacks=[sparsity_api.UpdatePruningStep()]
    )
    stripped = sparsity_api.strip_pruning(pruned)
    return {
        layer.name: (np.asarray(layer.kernel) != 0).astype("int8").tolist()
        for layer in stripped.layers
        if hasattr(layer, "kernel")
    }


def weights_for(variant, saved):
    _, dense_only = VARIANTS[variant]
    return saved["dense"] if dense_only else saved["all"]


def run_all(keras, sparsity_api):
    import numpy as np

    with np.load(os.path.join(FLAGS.folder, "weights.npz")) as npz:
        saved = {
            "all": [npz[f"all_{i}"] for i in range(8)],
            "dense": [npz[f"dense_{i}"] for i in range(6)],
        }
    return {v: masks_for(keras, sparsity_api, weights_for(v, saved), v) for v in VARIANTS}


def main(argv):
    del argv
    if FLAGS.worker == "tfmot":
        import tensorflow_model_optimization as tfmot
        import tf_keras

        print(json.dumps(run_all(tf_keras, tfmot.sparsity.keras)))
        return
    import keras
    import numpy as np

    from lth_keras import tfmot

    rng = np.random.default_rng(0)
    arrays = {}
    for kind, dense_only in (("all", False), ("dense", True)):
        shapes = [tuple(w.shape) for w in build(keras, dense_only).get_weights()]
        for i, shape in enumerate(shapes):
            arrays[f"{kind}_{i}"] = rng.normal(size=shape).astype("float32")
    with tempfile.TemporaryDirectory() as folder:
        FLAGS.folder = folder
        np.savez(os.path.join(folder, "weights.npz"), **arrays)
        command = [FLAGS.tfmot_python, __file__, "--worker=tfmot", f"--folder={folder}"]
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.exit(done.stderr[-2000:])
        theirs = json.loads(done.stdout.strip().splitlines()[-1])
        ours = run_all(keras, tfmot)
    print(f"Keras {keras.__version__} on {keras.backend.backend()} against tfmot (tf_keras)")
    print(f"{'variant':<24}{'kernel':<8}{'kept (lth)':>11}{'kept (tfmot)':>13}{'agree':>8}")
    for variant in VARIANTS:
        for name, mask in ours[variant].items():
            a, b = np.array(mask), np.array(theirs[variant][name])
            agree = float((a == b).mean())
            print(f"{variant:<24}{name:<8}{int(a.sum()):>11}{int(b.sum()):>13}{agree:>8.4f}")


if __name__ == "__main__":
    app.run(main)
