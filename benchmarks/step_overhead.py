"""Cost of masks in one compiled train step, without `fit`; and the time `prunable()` takes.

`train_overhead.py` times whole epochs, whose wall-clock and CPU times move
by several percent between epochs on a small VM. This script times Keras'
own `train_step` on one fixed batch, a plain Keras 3 model against the same
model made `prunable` (Adam, in alternating blocks of `--steps` steps, which
model goes first alternating too) and prints the median CPU time per step
of each and their ratio, so drift of the machine's speed hits both alike.

Models (`--model`):
- `lenet`: LeNet-300-100, batch 60 (the paper's);
- `bert`: a small KerasHub BERT (BERT-Tiny's shape: vocabulary 30,522, 2
  layers, hidden 128, 2 heads, intermediate 512), sequences of 128, batch 8,
  with a 2-class head;
- `resnet`: keras.applications ResNet50, 64x64 images, batch 8, 10 classes.

On JAX the step is `jax.jit(model.train_step)`, as Keras' JAX trainer
compiles it, and the script also prints XLA's count of the bytes each
compiled step accesses (`cost_analysis()`), which does not depend on the
machine's noise. On TensorFlow the step is a `tf.function` of
`model.train_step`, with XLA (`--jit_compile`) or as a TensorFlow graph
(`--nojit_compile`), and the script also prints the number of ops traced.

`--prunable` instead times `lth_keras.prunable()` on freshly built
keras.applications ResNet50 and DenseNet121 (64x64 inputs, random weights),
the median of `--repeats` builds.

    KERAS_BACKEND=jax python benchmarks/step_overhead.py --model=bert
    KERAS_BACKEND=tensorflow python benchmarks/step_overhead.py --model=resnet --jit_compile
    KERAS_BACKEND=jax python benchmarks/step_overhead.py --prunable
"""

import statistics
import time
import warnings

from absl import app, flags

flags.DEFINE_enum("model", "lenet", ["lenet", "bert", "resnet"], "The model to time.")
flags.DEFINE_integer("blocks", 30, "Timed blocks per model.")
flags.DEFINE_integer("steps", 300, "Train steps per block.")
flags.DEFINE_bool("jit_compile", True, "XLA (TensorFlow only; JAX always compiles).")
flags.DEFINE_bool("prunable", False, "Time prunable() on ResNet50 and DenseNet121 instead.")
flags.DEFINE_integer("repeats", 5, "With --prunable: builds timed per model.")
FLAGS = flags.FLAGS


def _lenet():
    import keras
    import numpy as np

    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    rng = np.random.default_rng(0)
    return model, rng.random((60, 784), dtype=np.float32), rng.integers(0, 10, 60), 1.2e-3


def _bert():
    import keras
    import keras_hub
    import numpy as np

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=30522,
        num_layers=2,
        num_heads=2,
        hidden_dim=128,
        intermediate_dim=512,
        max_sequence_length=128,
    )
    head = keras.layers.Dense(2, name="head")(backbone.output["pooled_output"])
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 30522, (8, 128)).astype("int32")
    x = {
        "token_ids": tokens,
        "segment_ids": np.zeros_like(tokens),
        "padding_mask": np.ones_like(tokens),
    }
    return keras.Model(backbone.input, head), x, rng.integers(0, 2, 8), 1e-4


def _resnet():
    import keras
    import numpy as np

    model = keras.applications.ResNet50(
        weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None
    )
    rng = np.random.default_rng(0)
    return model, rng.random((8, 64, 64, 3), dtype=np.float32), rng.integers(0, 10, 8), 1e-3


def _model(masked, jit_compile):
    """The model, plain or prunable, compiled and trained one step; and its batch."""
    import keras

    import lth_keras

    keras.utils.set_random_seed(0)
    model, x, y, lr = {"lenet": _lenet, "bert": _bert, "resnet": _resnet}[FLAGS.model]()
    if masked:
        lth_keras.prunable(model)
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    model.fit(x, y, batch_size=len(y), epochs=1, verbose=0)  # builds the optimizer and metrics
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
        self.batch = (jax.tree.map(jax.numpy.asarray, x), jax.numpy.asarray(y))
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
        self.batch = (tf.nest.map_structure(tf.constant, x), tf.constant(y))
        self.step = tf.function(
            lambda x, y: model.train_step((x, y, None)), jit_compile=FLAGS.jit_compile
        )
        graph = self.step.get_concrete_function(*self.batch).graph
        self.size = f"{len(graph.get_operations())} ops traced"
        self.step(*self.batch)

    def run(self, steps):
        for _ in range(steps):
            self.step(*self.batch)


def _time_prunable():
    import keras

    import lth_keras

    warnings.simplefilter("ignore")  # Keras' notes about input shapes
    for name in ("ResNet50", "DenseNet121"):
        times = []
        for _ in range(FLAGS.repeats):
            model = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3))
            start = time.perf_counter()
            lth_keras.prunable(model)
            times.append(time.perf_counter() - start)
            masked = len(lth_keras.get_masks(model))
        print(
            f"prunable({name}): median {statistics.median(times):.3f} s, range "
            f"{min(times):.3f}-{max(times):.3f} s over {FLAGS.repeats} builds ({masked} kernels)"
        )


def main(argv):
    del argv
    import keras

    backend = keras.backend.backend()
    if FLAGS.prunable:
        print(f"Keras {keras.__version__} on {backend}")
        _time_prunable()
        return
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
    print(f"Keras {keras.__version__} on {backend} ({mode}), {FLAGS.model} train step")
    print(
        f"CPU time per step: keras {plain * 1e6:.1f} us, lth_keras {masked * 1e6:.1f} us, "
        f"ratio {masked / plain:.3f} (medians of {FLAGS.blocks} blocks of {FLAGS.steps})"
    )
    print(f"per step: keras {runs['keras'].size}, lth_keras {runs['lth_keras'].size}")


if __name__ == "__main__":
    app.run(main)
