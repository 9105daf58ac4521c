"""Every private Keras and TensorFlow API lth_keras touches, in one place.

Each helper says why the public API does not suffice, and checks that the
private name still exists, so a Keras or TensorFlow release that moves it
fails here with a message naming the versions instead of deep inside a run.
Tested with Keras 3.15 and TensorFlow 2.21.
"""

import contextlib
import threading

import keras

__all__ = [
    "NOT_OPTIMIZER_STATE",
    "flatten_layers",
    "multi_worker_reduce_fix",
    "op_determinism",
    "unpinned_strategy",
]

TESTED = "Keras 3.15 / TensorFlow 2.21"


def _missing(what, error=None):
    return RuntimeError(
        f"lth_keras relies on {what}, which this installation lacks (keras "
        f"{keras.__version__}; tested with {TESTED}). Please report it with your "
        f"versions.{f' Cause: {error}' if error else ''}"
    )


def flatten_layers(model, include_self=True, recursive=True):
    """Every layer of `model`, nested ones included, in model order.

    Keras has no public recursive layer iterator; `Layer._flatten_layers` is
    the one Keras itself uses for `Model.layers` and weight collection.
    """
    method = getattr(model, "_flatten_layers", None)
    if method is None:
        raise _missing("keras.layers.Layer._flatten_layers")
    return list(method(include_self=include_self, recursive=recursive))


#: Optimizer variables that are not per-weight state, by the names Keras 3
#: optimizers give them: the step counter, a learning rate held as a
#: variable, and the loss scale of mixed precision. Keras has no public list.
NOT_OPTIMIZER_STATE = frozenset({"iteration", "learning_rate", "step_counter", "dynamic_scale"})


@contextlib.contextmanager
def op_determinism(enable):
    """TensorFlow op determinism inside the context, restored afterwards.

    TensorFlow has no public way to read or undo
    `tf.config.experimental.enable_op_determinism()`; Keras itself reads the
    setting through `tensorflow.python.framework.config`.
    """
    if not enable:
        yield
        return
    try:
        from tensorflow.python.framework import config as tf_config

        before = tf_config.is_op_determinism_enabled()
    except (ImportError, AttributeError) as error:
        raise _missing(
            "tensorflow.python.framework.config.is_op_determinism_enabled", error
        ) from error
    if not before:
        tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if not before:
            tf_config.disable_op_determinism()


_patch_lock = threading.Lock()
_patch_depth = 0
_patch_original = None


@contextlib.contextmanager
def multi_worker_reduce_fix():
    """Fixes the reduction of scalar logs across workers, inside the context.

    Keras 3's TensorFlow trainer reduces every log with `axis=0`, which
    fails for scalars under `MultiWorkerMirroredStrategy`
    (keras-team/keras#20585). Inside the context its private
    `reduce_per_replica` is replaced by one that reduces scalars without an
    axis; the original is put back when the outermost context exits. Train
    functions traced inside the context keep the fix.
    """
    global _patch_depth, _patch_original
    try:
        from keras.src.backend.tensorflow import trainer
    except ImportError as error:
        raise _missing("keras.src.backend.tensorflow.trainer", error) from error
    for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker"):
        if not hasattr(trainer, name):
            raise _missing(f"keras.src.backend.tensorflow.trainer.{name}")
    with _patch_lock:
        if _patch_depth == 0:
            _patch_original = trainer.reduce_per_replica
            trainer.reduce_per_replica = _fixed_reduce(trainer, _patch_original)
        _patch_depth += 1
    try:
        yield
    finally:
        with _patch_lock:
            _patch_depth -= 1
            if _patch_depth == 0:
                trainer.reduce_per_replica = _patch_original
                _patch_original = None


def _fixed_reduce(trainer, original):
    import tensorflow as tf

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):

            def mean(value):
                if not trainer._is_per_replica_instance(value):
                    return value
                return strategy.reduce("MEAN", value, axis=0 if value.shape.rank else None)

            return tf.nest.map_structure(mean, values)
        return original(values, strategy, reduction)

    return reduce_per_replica


@contextlib.contextmanager
def unpinned_strategy(model):
    """The model stops pinning its distribution strategy inside the context.

    A Keras model built under a strategy keeps it in the private
    `_distribute_strategy` and runs a symbolic build under it that fails
    with `MultiWorkerMirroredStrategy` (keras-team/keras#20585); unpinned,
    Keras takes the strategy from the surrounding scope. Restored on exit.
    """
    if not hasattr(model, "_distribute_strategy"):
        raise _missing("keras.Model._distribute_strategy")
    pinned = model._distribute_strategy
    model._distribute_strategy = None
    try:
        yield
    finally:
        model._distribute_strategy = pinned
