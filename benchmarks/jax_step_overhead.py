"""Cost of the masked layers in JAX's compiled train step, without `fit`.

`train_overhead.py --backend=jax` times whole epochs, whose wall-clock and
CPU times move by several percent between epochs on a small VM. This script
times the jitted `train_step` of Keras' JAX trainer itself, plain Keras 3
LeNet-300-100 against the same network made `prunable` (Adam 1.2e-3, batch
60, one fixed batch), in blocks of `--steps` steps, alternating the order,
and prints the medians and their ratio. It also prints XLA's count of the
bytes each compiled step accesses (`cost_analysis()`), which does not
depend on the machine's noise.

    KERAS_BACKEND=jax python benchmarks/jax_step_overhead.py
"""

import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("blocks", 30, "Timed blocks per model.")
flags.DEFINE_integer("steps", 300, "Train steps per block.")
FLAGS = flags.FLAGS


def compiled_step(masked):
    """`(jitted train_step, state, bytes accessed per step)` of LeNet-300-100."""
    import jax
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
        jit_compile=True,
    )
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 784), dtype=np.float32), rng.integers(0, 10, 60)
    model.fit(x, y, batch_size=60, epochs=1, verbose=0)  # builds the optimizer and metrics
    state = tuple(
        [v.value for v in variables]
        for variables in (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        )
    )
    step = jax.jit(model.train_step, donate_argnums=0)  # as Keras' JAX trainer compiles it
    batch = (jax.numpy.asarray(x), jax.numpy.asarray(y))
    cost = step.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return step, state, batch, cost["bytes accessed"]


def main(argv):
    del argv
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise app.UsageError(f"Needs KERAS_BACKEND=jax. Received: {keras.backend.backend()}")
    runs = {name: list(compiled_step(name == "lth_keras")) for name in ("keras", "lth_keras")}
    times = {name: [] for name in runs}
    for block in range(FLAGS.blocks):
        for name in list(runs) if block % 2 == 0 else list(runs)[::-1]:
            step, state, batch, _ = runs[name]
            start = time.process_time()
            for _ in range(FLAGS.steps):
                _, state = step(state, batch)
            jax.block_until_ready(state)
            times[name].append((time.process_time() - start) / FLAGS.steps)
            runs[name][1] = state
    plain, masked = (statistics.median(times[n]) for n in runs)
    print(f"Keras {keras.__version__}, jax {jax.__version__}, {jax.devices()[0].platform}")
    print(
        f"CPU time per step: keras {plain * 1e6:.1f} us, lth_keras {masked * 1e6:.1f} us, "
        f"ratio {masked / plain:.3f} (medians of {FLAGS.blocks} blocks of {FLAGS.steps})"
    )
    b_plain, b_masked = runs["keras"][3], runs["lth_keras"][3]
    print(
        f"bytes accessed per step (XLA): keras {b_plain / 1e6:.2f} MB, lth_keras "
        f"{b_masked / 1e6:.2f} MB, ratio {b_masked / b_plain:.3f}"
    )


if __name__ == "__main__":
    app.run(main)
