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
    "computing",
    "conv_lstm_cell_class",
    "flatten_layers",
    "has_default_config",
    "input_shape_arg",
    "inference_kwargs",
    "optimizer_slots",
    "own_variables",
    "reset_compiled_functions",
    "trusted_config",
    "unlocked",
    "untrack",
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


def conv_lstm_cell_class():
    """Keras' ConvLSTM cell class, which holds the kernels of ConvLSTM1D/2D/3D.

    The cell is not exported; the public ConvLSTM layers create it.
    """
    try:
        from keras.src.layers.rnn.conv_lstm import ConvLSTMCell
    except ImportError as error:
        raise _missing("keras.src.layers.rnn.conv_lstm.ConvLSTMCell", error) from error
    return ConvLSTMCell


def has_default_config(model):
    """Whether a functional model's `get_config` is Keras' own (not a subclass's).

    `keras.models.clone_model` decides the same way, with the private
    `keras.src.utils.python_utils.is_default`; this compares the function.
    """
    method = getattr(type(model).get_config, "__func__", type(model).get_config)
    try:
        from keras.src.models.functional import Functional

        functional = Functional.get_config
    except ImportError as error:
        raise _missing("keras.src.models.functional.Functional", error) from error
    return method is functional


def computing():
    """Whether code runs inside a layer's call or a stateless scope (a train step).

    Masked weights are read as the gradient-masked tensor there, and as the
    variable itself elsewhere (so `layer.kernel.assign(...)` and
    `layer.kernel.numpy()` work outside a call). Keras keeps the current
    call context in a private global attribute; `in_stateless_scope` is
    public (`keras.StatelessScope`).
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.backend.common.stateless_scope import in_stateless_scope
    except ImportError as error:
        raise _missing("keras.src.backend.common.global_state", error) from error
    return global_state.get_global_attribute("current_call_ctx") is not None or in_stateless_scope()


@contextlib.contextmanager
def trusted_config():
    """Deserialization of a config this process made from a live object (not a file).

    Copying a user's optimizer from its config (`OptimizerReset`) rebuilds
    whatever it holds, Python lambdas included (a `MultiOptimizer`
    selector), which Keras' safe mode refuses. The config comes from the
    object itself, so nothing from outside runs. Keras' `SafeModeScope` is
    private; `keras.config.enable_unsafe_deserialization()` would switch
    safe mode off for good.
    """
    try:
        from keras.src.saving.serialization_lib import SafeModeScope
    except ImportError as error:
        raise _missing("keras.src.saving.serialization_lib.SafeModeScope", error) from error
    with SafeModeScope(False):
        yield


def inference_kwargs(model):
    """`{"training": False}` if the model's `call` takes `training`, else `{}`.

    `Layer.__call__` passes `training` only to a `call` that takes it, but
    `stateless_call` passes its keyword arguments as they are, and a user's
    subclassed model may not take it.
    """
    import inspect

    parameters = inspect.signature(model.call).parameters
    takes = "training" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    return {"training": False} if takes else {}


def optimizer_slots(optimizer, variable):
    """The optimizer's per-weight state variables of `variable` (its momenta, ...).

    Keras names each slot `"<variable.path with / as _>_<slot name>"`
    (`BaseOptimizer.add_variable_from_reference`); there is no public map
    from a variable to its slots. Only slots of the variable's shape are
    returned (Adafactor's factored row and column statistics are not).
    """
    prefix = variable.path.replace("/", "_") + "_"
    shape = tuple(variable.shape)
    return [v for v in optimizer.variables if v.name.startswith(prefix) and tuple(v.shape) == shape]


def own_variables(layer):
    """The variables a layer holds itself (not those of its sublayers), in order.

    Keras keeps them in `_trainable_variables` and `_non_trainable_variables`
    and saves them in that order (`Layer.save_own_variables`); there is no
    public accessor.
    """
    try:
        return list(layer._trainable_variables) + list(layer._non_trainable_variables)
    except AttributeError as error:
        raise _missing("keras.layers.Layer._trainable_variables", error) from error


def reset_compiled_functions(model):
    """Drops a model's traced train, test and predict functions.

    After masks are attached or removed in place, the next `fit` must trace
    the model again (its state has new variables). Keras rebuilds a function
    whose attribute is `None`; `make_train_function(force=True)` is the
    public way for the train function only.
    """
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)


@contextlib.contextmanager
def unlocked(layer):
    """Lets a built layer gain or lose variables inside the context.

    Keras locks a layer's state tracker after `build()`; `Layer.quantize`
    unlocks it the same way to replace weights in place. There is no public
    API for adding weights to a built layer.
    """
    tracker = getattr(layer, "_tracker", None)
    if tracker is None or not hasattr(tracker, "unlock"):
        raise _missing("keras.layers.Layer._tracker.unlock")
    was_locked = tracker.locked
    tracker.unlock()
    try:
        yield
    finally:
        if was_locked:
            tracker.lock()


def untrack(layer, name):
    """Removes the variable `layer.<name>` from the layer (inside `unlocked`).

    `del layer.<name>` does the same through `Layer.__delattr__`, but runs
    `gc.collect()` for every variable: seconds for a large model.
    """
    variable = vars(layer).pop(name, None)
    if variable is None:
        return
    method = getattr(layer, "_untrack_variable", None)
    if method is None:
        raise _missing("keras.layers.Layer._untrack_variable")
    method(variable)


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


def input_shape_arg(layer):
    """The `input_shape=` (or `input_dim=`) a layer was constructed with, or `None`.

    Keras' `Layer.__init__` keeps it in the private `_input_shape_arg`, out of
    `get_config`, and `Sequential` reads it there to add an input;
    `lth_keras.tfmot.prune_low_magnitude` builds such a layer with it (or
    passes it on to a masked twin made from the config). Absent on a layer
    constructed without it, so no check here.
    """
    return getattr(layer, "_input_shape_arg", None)
