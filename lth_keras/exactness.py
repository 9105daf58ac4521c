"""Pruned means zero: which optimizers keep pruned weights zero, and the checks around `fit`.

On TensorFlow and PyTorch a constraint masks after every optimizer update
(`lth_keras.layers.values.MaskConstraint`), so every optimizer keeps pruned
weights exactly zero. On JAX Keras' optimizer cannot read the masks inside
its compiled update: `moves_pruned_weights` probes an optimizer, and
`LotteryPruner` refuses one that would move pruned weights
(`check_optimizer`) and checks the weights when `fit` ends
(`check_weights`).
"""

import warnings
import weakref

import keras
import numpy as np
from keras import ops

from lth_keras import _compat
from lth_keras import masks as masks_lib
from lth_keras.rewind import _leaves

__all__ = ["check_optimizer", "check_weights", "describe", "moves_pruned_weights"]


def describe(optimizer):
    """An optimizer's class name, with the inner one of a loss-scaling wrapper."""
    inner = getattr(optimizer, "inner_optimizer", None)
    name = type(optimizer).__name__
    return name if inner is None else f"{name}({describe(inner)})"


_PROBED = weakref.WeakKeyDictionary()  # optimizer -> whether it moves pruned weights


def moves_pruned_weights(optimizer):
    """Whether an optimizer's update moves weights whose gradient and state are zero.

    A probe: a copy of the optimizer built from its config takes three
    steps on two small weights (a matrix and a 4-D kernel) with zeros at
    "pruned" positions and zero gradients there. Optimizers whose update of
    a weight depends only on that weight's gradient and state (SGD, Adam,
    Lion, ...) leave them at zero; one that mixes the entries of an update
    (Muon orthogonalises it) does not, nor Keras' Adafactor, which divides 0
    by 0 (NaN) where a whole row and a whole column of a kernel get no
    gradient (the probe's matrix has one of each, as pruning makes them).
    The answer is cached per optimizer.

    Args:
        optimizer: A `keras.optimizers.Optimizer`.

    Returns:
        A bool (`False` when a copy cannot be built from its config).

    Example:

    ```python
    moves_pruned_weights(keras.optimizers.Muon())  # True
    ```
    """
    if optimizer in _PROBED:
        return _PROBED[optimizer]
    moved = any(_probe(leaf) for leaf in _leaves(optimizer))
    _PROBED[optimizer] = moved
    return moved


def _probe(optimizer):
    """See `moves_pruned_weights`; one optimizer (not a MultiOptimizer)."""
    try:
        with _compat.trusted_config():
            probe = type(optimizer).from_config(optimizer.get_config())
    except Exception:  # an optimizer whose config does not rebuild it: cannot tell
        return False
    rng = np.random.default_rng(0)
    masks = [rng.random(shape) < 0.5 for shape in ((8, 6), (3, 3, 4, 5))]
    masks[0][0, :] = masks[0][:, 0] = False  # a unit cut off on each side, as pruning does
    variables = [
        keras.Variable(np.where(m, rng.normal(size=m.shape), 0.0).astype("float32"), name="kernel")
        for m in masks
    ]
    probe.build(variables)
    values = [v.value for v in variables]
    state = [v.value for v in probe.variables]
    stateless = keras.backend.backend() == "jax"  # Keras' JAX loss scaling updates only so
    for _ in range(3):
        grads = [
            ops.convert_to_tensor(np.where(m, rng.normal(size=m.shape), 0.0).astype("float32"))
            for m in masks
        ]
        if stateless:
            values, state = probe.stateless_apply(state, grads, values)
        else:  # TensorFlow refuses stateless_apply
            probe.apply(grads, variables)
            values = [v.value for v in variables]
    return any(np.any(ops.convert_to_numpy(v)[~m] != 0) for v, m in zip(values, masks, strict=True))


def check_optimizer(optimizer):
    """Refuses, on JAX, an optimizer whose update would move pruned weights.

    On TensorFlow and PyTorch each masked weight's constraint zeroes pruned
    entries after every update, inside the compiled step; Keras' JAX
    optimizer cannot read the masks there, so an optimizer that mixes the
    entries of an update (Muon) would train another network than the
    sparse one.
    """
    if keras.backend.backend() == "jax" and moves_pruned_weights(optimizer):
        raise ValueError(
            f"{describe(optimizer)} moves pruned weights: its update of a weight depends "
            "on other weights' gradients (Muon orthogonalises each update) or turns a zero "
            "gradient into NaN (Keras' Adafactor, where a row and a column of a kernel get "
            "no gradient), and on the JAX "
            "backend lth_keras cannot mask after the optimizer's update inside the compiled "
            f"step. Received: optimizer={describe(optimizer)}. Use the TensorFlow or "
            "PyTorch backend (where a variable constraint masks after every update), or an "
            "optimizer whose update of a weight depends on that weight's gradient only "
            "(SGD, Adam, AdamW, Lion, ...)."
        )


def check_weights(model):
    """At the end of `fit`: pruned weights still zero (JAX), masked weights finite.

    On JAX an optimizer the probe missed could have moved pruned weights:
    that is an error. A masked weight that became NaN or infinite gets a
    warning: Keras' Adafactor, for one, divides 0 by 0 once a whole row and
    a whole column of a kernel get no gradient (units cut off by pruning),
    on TensorFlow and JAX.
    """
    jax = keras.backend.backend() == "jax"
    for key, _, weight in masks_lib.prunable_entries(model):
        value = weight.variable
        finite = keras.ops.isfinite(value)
        if jax:
            moved = keras.ops.logical_and(keras.ops.logical_not(weight.mask), finite)
            moved = keras.ops.any(keras.ops.logical_and(moved, keras.ops.not_equal(value, 0)))
            if bool(keras.ops.convert_to_numpy(moved)):
                raise RuntimeError(
                    f"Pruned weights of {key} became non-zero during training: the optimizer "
                    f"({type(model.optimizer).__name__}) moved them, so the network trained was "
                    "not the sparse one. On JAX, use an optimizer whose update of a weight "
                    "depends on that weight's gradient only, or the TensorFlow or PyTorch "
                    "backend."
                )
        if not bool(keras.ops.convert_to_numpy(keras.ops.all(finite))):
            name = describe(model.optimizer)
            hint = (
                " Keras' Adafactor divides 0 by 0 where a whole row and a whole column of a "
                "kernel get no gradient (units that pruning cut off); use another optimizer."
                if "Adafactor" in name
                else ""
            )
            warnings.warn(
                f"LotteryPruner: {key} holds NaN or infinite weights after training with "
                f"{name}.{hint}",
                stacklevel=3,
            )
            return
