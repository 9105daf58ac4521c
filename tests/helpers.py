"""Helpers shared by the tests: tiny models, compile settings, a state probe."""

import json
import os
import signal
import subprocess
import sys
import time

import keras

import lth_keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Real MNIST, offline (tests/conftest.py and .ci/run set the same default).
MNIST_DIR = os.environ.setdefault(
    "TFDS_DATA_DIR", os.path.join(REPO, "..", "shared", "data", "tensorflow_datasets")
)


def mlp(batch_norm=False, name=None):
    """A tiny prunable MLP: 12 -> 16 -> 8 -> 3 (optionally with BatchNorm)."""
    layers = [keras.Input((12,)), keras.layers.Dense(16, activation="relu", name="fc1")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers += [
        keras.layers.Dense(8, activation="relu", name="fc2"),
        keras.layers.Dense(3, name="out"),
    ]
    return lth_keras.prunable(keras.Sequential(layers, name=name))


def compile_model(model, optimizer=None, **kwargs):
    model.compile(
        optimizer or keras.optimizers.SGD(0.1, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs,
    )
    return model


def layerwise_counts(sizes, rates, rounds):
    """Weights left per kernel after `rounds` layerwise rounds: `prune_count` each round."""
    from lth_keras.pruning import prune_count

    counts = dict(sizes)
    for _ in range(rounds):
        counts = {k: n - prune_count(n, rates[k]) for k, n in counts.items()}
    return counts


# The LeNet-300-100 preset's kernels and layerwise rates (output layer at half).
LENET_SIZES = {"fc1/kernel": 784 * 300, "fc2/kernel": 300 * 100, "output/kernel": 100 * 10}
LENET_RATES = {"fc1/kernel": 0.2, "fc2/kernel": 0.2, "output/kernel": 0.1}


def lenet_counts(rounds):
    """Weights left per kernel of the LeNet preset after `rounds` rounds."""
    return layerwise_counts(LENET_SIZES, LENET_RATES, rounds)


def numpy(value):
    """A variable or tensor of any backend as a NumPy array."""
    return keras.ops.convert_to_numpy(value)


class Probe(keras.callbacks.Callback):
    """Records model state when training starts and at every epoch start.

    Placed after a `LotteryPruner` in the callback list, it sees the model
    right after the pruner's round transition.
    """

    def __init__(self):
        super().__init__()
        self.states = []

    def _record(self, where):
        optimizer = self.model.optimizer
        self.states.append(
            {
                "where": where,
                "weights": {w.path: numpy(w).copy() for w in self.model.weights},
                "masks": lth_keras.get_masks(self.model),
                "iterations": int(numpy(optimizer.iterations)),
                "slots": [
                    numpy(v).copy()
                    for v in optimizer.variables
                    if v.name not in ("iteration", "learning_rate")
                ],
            }
        )

    def on_train_begin(self, logs=None):
        self._record("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self._record(f"epoch_begin_{epoch}")


def stored(layer, attr="kernel"):
    """The stored variable of a masked layer's prunable kernel `attr`."""
    return next(w.variable for w in layer.get_prunable_weights() if w.name == attr)


def kernel_gradients(layer, x):
    """Gradients of `sum(layer(x) ** 2)` for each prunable kernel, on any backend."""
    import numpy as np

    kernels = [w.variable for w in layer.get_prunable_weights()]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.cast(layer(x), "float32")))
        grads = tape.gradient(loss, [v.value for v in kernels])
        return [np.asarray(tf.convert_to_tensor(g)) for g in grads]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        others = [v.value for v in layer.non_trainable_variables]

        def loss(values):
            out, _ = layer.stateless_call(values, others, x)
            return jnp.sum(jnp.square(out.astype("float32")))

        grads = jax.grad(loss)(trainable)
        index = {id(v): i for i, v in enumerate(layer.trainable_variables)}
        return [np.asarray(grads[index[id(v)]]) for v in kernels]
    if backend == "torch":
        import torch

        loss = torch.sum(torch.square(layer(x).float()))
        grads = torch.autograd.grad(loss, [v.value for v in kernels])
        return [g.detach().cpu().numpy() for g in grads]
    raise NotImplementedError(f"No gradient helper for the {backend} backend.")


def pythonpath():
    """PYTHONPATH for child processes: this checkout first, then the caller's."""
    return os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)


def run_until(script, run_dir, stop):
    """Runs `python -c script run_dir` in a child; SIGKILLs it once `stop(progress)` holds.

    `progress` is the run directory's `progress.json`, polled every 5 ms;
    `stop=None` lets the child finish. Returns `(returncode, stderr)`.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=pythonpath())
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(run_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    while child.poll() is None:
        try:
            with open(os.path.join(run_dir, "progress.json")) as f:
                progress = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            progress = None
        if stop is not None and progress is not None and stop(progress):
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    _, err = child.communicate()
    return child.returncode, err
