"""tf.distribute strategies for finding tickets on many devices (TensorFlow only).

What each strategy needs:

- `MirroredStrategy` (several devices of one machine): build and compile the
  model under `strategy.scope()`; `fit` works as usual. Masks, initial
  weights and optimizer state are mirrored variables; `LotteryPruner` prunes
  and rewinds between steps, in cross-replica context, from the synchronised
  values, so every replica gets the same masks. BatchNormalization keeps
  per-replica batch statistics unless built with `synchronized=True`.
- `MultiWorkerMirroredStrategy` (several processes or machines): set
  `TF_CONFIG` in every worker, create the strategy first, build and compile
  under its scope, and call `fit` inside `fit_scope(model, strategy)`, which
  works around two bugs of Keras 3 with this strategy (keras-team/keras#20585:
  `fit` fails reducing a batch and the logs). Every worker runs the same
  program; all of them prune to the same masks. `LotteryPruner` with
  `seed=None` derives its seed from the model's initial weights, so random
  pruning draws the same masks on every worker. Give datasets the `DATA`
  auto-shard policy (`lth_keras.experiments.data` does) and pass the global batch size.
- `TPUStrategy`: as for MirroredStrategy. The train step holds only dense ops
  (the masks act through a custom gradient), and pruning and rewinding run on
  the host between steps. Not tested here (no TPU).

Only the chief (`is_chief`) should write files; `lth_keras.experiments.run` does
that by itself.
"""

import contextlib
import json
import socket

import tensorflow as tf

from lth_keras import _compat
from lth_keras.options import STRATEGIES

__all__ = ["STRATEGIES", "fit_scope", "get_strategy", "is_chief", "local_cluster"]


def get_strategy(name="default", tpu=None):
    """Creates a strategy by name.

    Args:
        name: `"default"` (no distribution), `"mirrored"` (all local GPUs, or
            all logical CPUs), `"multi_worker"` (reads `TF_CONFIG`) or
            `"tpu"`. Defaults to `"default"`.
        tpu: TPU address or name for `"tpu"` (e.g. `"grpc://10.0.0.2:8470"`
            or `"local"`). Defaults to `None`, meaning the resolver's default.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: If `name` is not one of `STRATEGIES`.

    Example:

    ```python
    from lth_keras.tensorflow import distribute

    strategy = distribute.get_strategy("mirrored")
    with strategy.scope():
        model = lth_keras.prunable(build_model())
        model.compile(...)
    ```
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")
        ]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(
        f"Received an invalid value for `strategy`, expected one of {list(STRATEGIES)}. "
        f"Received: strategy={name!r}"
    )


def local_cluster(num_workers=2):
    """`TF_CONFIG` values for a cluster of workers on this machine.

    The ports are picked by the operating system (bound, read and released
    at once), so several clusters can start side by side; another process
    could take a port before the workers bind it, which on a busy machine
    shows as a worker failing to start.

    Args:
        num_workers: How many workers. Defaults to `2`.

    Returns:
        A list of `num_workers` JSON strings, the `TF_CONFIG` of worker 0
        (the chief), 1, ...

    Raises:
        ValueError: If `num_workers` is not a positive int.

    Example:

    ```python
    import os, subprocess, sys
    from lth_keras.tensorflow import distribute

    workers = [
        subprocess.Popen([sys.executable, "train.py", "--strategy=multi_worker"],
                         env=dict(os.environ, TF_CONFIG=config))
        for config in distribute.local_cluster(2)
    ]
    ```
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(
            f"Received an invalid value for `num_workers`, expected a positive int. "
            f"Received: num_workers={num_workers!r}"
        )
    sockets = [socket.socket() for _ in range(num_workers)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        ports = [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    return [
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        for index in range(num_workers)
    ]


def is_chief(strategy):
    """Whether this process should write files (always true without workers).

    Example:

    ```python
    from lth_keras.tensorflow import distribute

    if distribute.is_chief(strategy):
        model.save("ticket.keras")
    ```
    """
    return bool(strategy.extended.should_checkpoint)


@contextlib.contextmanager
def fit_scope(model, strategy):
    """The context in which to call `fit`/`evaluate` of `model` under `strategy`.

    For most strategies this is `strategy.scope()`. Under
    `MultiWorkerMirroredStrategy` it also works around Keras 3's failures
    there (keras-team/keras#20585): inside the context the model stops
    pinning the strategy (Keras then takes it from the scope and skips the
    symbolic build that fails; the pin is restored on exit), and the
    reduction of scalar logs across workers is fixed; both are undone on
    exit.

    Args:
        model: A model built and compiled under `strategy.scope()`.
        strategy: The strategy.

    Example:

    ```python
    from lth_keras.tensorflow import distribute

    with distribute.fit_scope(model, strategy):
        model.fit(dataset, epochs=2, callbacks=[pruner])
    ```
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        with strategy.scope():
            yield
        return
    with _compat.unpinned_strategy(model), _compat.multi_worker_reduce_fix():
        with strategy.scope():
            yield
