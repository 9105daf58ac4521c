"""Cost of the masked layers in one compiled train step, without `fit`.

`train_overhead.py` times whole epochs, whose wall-clock and CPU times move
by several percent between epochs on a small VM. This script times Keras'
own `train_step` on one fixed batch, plain Keras 3 LeNet-300-100 against the
same network made `prunable` (Adam 1.2e-3, batch 60), in blocks of
`--steps` steps, alternating which model goes first, and prints the median
CPU time per step of each and their ratio. Drift of the machine's speed
then hits both models alike.

On JAX the step is `jax.jit(model.train_step)`, as Keras' JAX trainer
compiles it, and the script also prints XLA's count of the bytes each
compiled step accesses (`cost_analysis()`), which does not depend on the
machine's noise. On TensorFlow the step is a `tf.function` of
`model.train_step`, with XLA (`--jit_compile`, as the runner trains) or as
a TensorFlow graph (`--nojit_compile`, Keras' default on a CPU-only machine),
and the script also prints the number of ops in each traced step.

    KERAS_BACKEND=jax python benchmarks/step_overhead.py
    KERAS_BACKEND=tensorflow python benchmarks/step_overhead.py --nojit_compile
"""

import statistics
import time

from absl import app, flags

flags.DEFINE_integer("blocks", 30, "Timed blocks per model.")
flags.DEFINE_integer("steps", 300, "Train steps per block.")
flags.DEFINE_bool("jit_compile", True, "XLA (TensorFlow only; JAX always compiles).")
FLAGS = flags.FLAGS


def _model(masked, jit_compile):
    """LeNet-300-100, plain or prunable, compiled and trained one step; and its batch."""
    import keras
    import numpy as np

    import lth_keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((784,)),
            layers.Dense(300, activation="relu"),
            layers.Dense(100, activation="relu"),
            layers.Dense(10),
        ]
    )
    model = lth_keras.prunable(model) if masked else model
    model.compile(
        keras.optimizers.Adam(1.2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 784), dtype=np.float32), rng.integers(0, 10, 60)
    model.fit(x, y, batch_size=60, epochs=1, verbose=0)  # builds the optimizer and metrics
    return model, x, y


class JaxStep:
    """The jitted `train_step` of one model, with its state threaded through."""

    def __init__(self, masked):
        import jax

        model, x, y = _model(masked, True)
        self.state = tuple(
            [v.value for v in variables]
            for variables in (
                model.trainable_variables,
                model.non_trainable_variables,
                model.optimizer.variables,
                model.metrics_variables,
            )
        )
        self.step = jax.jit(model.train_step, donate_argnums=0)
        self.batch = (jax.numpy.asarray(x), jax.numpy.asarray(y))
        cost = self.step.lower(self.state, self.batch).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        self.size = f"{cost['bytes accessed'] / 1e6:.2f} MB accessed"
        self._jax = jax

    def run(self, steps):
        state = self.state
        for _ in range(steps):
            _, state = self.step(state, self.batch)
        self._jax.block_until_ready(state)
        self.state = state


class TensorFlowStep:
    """A `tf.function` of one model's `train_step` on a fixed batch."""

    def __init__(self, masked):
        import tensorflow as tf

        model, x, y = _model(masked, FLAGS.jit_compile)
        self.batch = (tf.constant(x), tf.constant(y))
        self.step = tf.function(
            lambda x, y: model.train_step((x, y, None)), jit_compile=FLAGS.jit_compile
        )
        graph = self.step.get_concrete_function(*self.batch).graph
        self.size = f"{len(graph.get_operations())} ops traced"
        self.step(*self.batch)

    def run(self, steps):
        for _ in range(steps):
            self.step(*self.batch)


def main(argv):
    del argv
    import keras

    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        raise app.UsageError(f"Needs KERAS_BACKEND=jax or tensorflow. Received: {backend!r}")
    make = JaxStep if backend == "jax" else TensorFlowStep
    runs = {name: make(name == "lth_keras") for name in ("keras", "lth_keras")}
    times = {name: [] for name in runs}
    for block in range(FLAGS.blocks):
        for name in list(runs) if block % 2 == 0 else list(runs)[::-1]:
            start = time.process_time()
            runs[name].run(FLAGS.steps)
            times[name].append((time.process_time() - start) / FLAGS.steps)
    plain, masked = (statistics.median(times[name]) for name in runs)
    mode = "XLA" if backend == "jax" or FLAGS.jit_compile else "graph, no XLA"
    print(f"Keras {keras.__version__} on {backend} ({mode}), LeNet-300-100 train step, batch 60")
    print(
        f"CPU time per step: keras {plain * 1e6:.1f} us, lth_keras {masked * 1e6:.1f} us, "
        f"ratio {masked / plain:.3f} (medians of {FLAGS.blocks} blocks of {FLAGS.steps})"
    )
    print(f"per step: keras {runs['keras'].size}, lth_keras {runs['lth_keras'].size}")


if __name__ == "__main__":
    app.run(main)
