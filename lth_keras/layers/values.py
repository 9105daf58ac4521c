"""How masked weights are read and written: the select, the gradient mask, the constraint.

`kept` is the one masking operation (a select). A masked layer reads each
masked weight through `gradient_masked` (the stored value, already zero
where pruned, with the gradient zeroed there), and on TensorFlow and
PyTorch keeps it zero after every optimizer update with a `MaskConstraint`.
The rest makes masks and initial copies cheaply (`from_host`, `copy_of`).
"""

import keras
from keras import ops

__all__ = [
    "MaskConstraint",
    "constrain",
    "copy",
    "copy_of",
    "from_host",
    "gradient_masked",
    "kept",
    "unconstrain",
]


def kept(mask, value):
    """`value` where the boolean `mask` (of `value`'s shape) is True, exactly 0 elsewhere.

    Unlike `value * mask`, pruned entries are 0 even where `value` is
    infinite or NaN, the mask needs no cast to `value`'s dtype, and the
    gradient with respect to `value` is exactly 0 at pruned entries. A
    select, not a multiply: on TensorFlow without XLA a bool-to-float cast
    costs twice the multiply. There `keras.ops.where` emits `SelectV2`,
    whose CPU kernel takes 103 us on LeNet's first kernel against 72 us for
    `Select` of the same shapes; both lower to the same XLA select, so
    TensorFlow gets `Select`.
    """
    mask, value = ops.convert_to_tensor(mask), ops.convert_to_tensor(value)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # the backend in use

        return tf.raw_ops.Select(condition=mask, x=value, y=tf.zeros_like(value))
    return ops.where(mask, value, ops.zeros_like(value))


def read(variable):
    """The variable's current value as a tensor (on TensorFlow, a read op, not the resource)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # the backend in use

        return tf.identity(ops.convert_to_tensor(variable))
    return ops.convert_to_tensor(variable)


def gradient_masked(kernel, mask):
    """`where(mask, kernel, 0)` for a kernel already zero where `mask` is False.

    The forward value is the stored kernel itself, which is kept exactly
    zero at pruned positions (see the module docstring), so no op runs in
    the forward pass; the gradient is zeroed where the mask is False, as the
    gradient of the select (exactly 0 there, even for a NaN or infinite
    upstream gradient). A select in the forward pass instead costs 8%
    (JAX), 12% (TensorFlow) and 18% (TensorFlow with XLA) of a LeNet-300-100
    train step on a CPU (`benchmarks/step_overhead.py`); this costs 0-2%.
    """

    @ops.custom_gradient
    def masked(value):
        # The mask is read here, not in `grad`: a gradient function that reads
        # a variable fails inside TensorFlow's while loops (recurrent cells).
        mask_value = read(mask)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            if hasattr(upstream, "dense_shape"):
                # A sparse gradient (rows of an embedding lookup, TensorFlow's
                # IndexedSlices) stays sparse. Not tested by `indices`: every
                # PyTorch tensor has an `indices()` method.
                rows = ops.take(mask_value, upstream.indices, axis=0)
                return type(upstream)(
                    kept(rows, upstream.values),
                    upstream.indices,
                    upstream.dense_shape,
                )
            return kept(mask_value, upstream)

        return ops.convert_to_tensor(value), grad

    if keras.backend.backend() == "torch":
        # PyTorch's autograd.Function (Keras' torch custom_gradient) only
        # tracks tensor arguments, not variables.
        kernel = ops.convert_to_tensor(kernel)
    return masked(kernel)


class MaskConstraint:
    """A variable constraint keeping pruned entries zero after every optimizer update.

    Keras applies `variable.constraint` right after the optimizer's update,
    inside the same compiled step, with every optimizer, so the stored
    weight, which the forward pass reads, is exactly zero at pruned
    positions even under an optimizer whose update mixes entries (Muon). A
    constraint the weight had (a layer's `kernel_constraint`) runs first.
    Set on TensorFlow and PyTorch; on JAX, Keras' optimizer cannot read the
    mask inside its compiled update, and `LotteryPruner` refuses optimizers
    that would move pruned weights (see `lth_keras.exactness`).

    Args:
        mask: The boolean mask variable.
        inner: The constraint the weight had, or `None`.
    """

    def __init__(self, mask, inner=None):
        self.mask = mask
        self.inner = inner

    def __call__(self, value):
        if self.inner is not None:
            value = self.inner(value)
        return kept(self.mask, value)


def constrain(variable, mask):
    """Sets a `MaskConstraint` on `variable` where the backend can run it."""
    if keras.backend.backend() == "jax" or isinstance(variable.constraint, MaskConstraint):
        return
    variable.constraint = MaskConstraint(mask, variable.constraint)


def unconstrain(variable):
    """Gives `variable` back the constraint it had before `_constrain`."""
    if isinstance(variable.constraint, MaskConstraint):
        variable.constraint = variable.constraint.inner


def from_host(value):
    """An initializer giving `value`, a NumPy array (a copy on the device, no op compiled).

    Keras' "ones"/"zeros" initializers compile an op per shape on JAX: seconds
    for the masks of a ResNet50. The copy is made when Keras calls the
    initializer: a layer built inside a trace (a subclassed model's first
    call) has its variables initialised after the trace, and a copy made
    inside it would be a tracer.
    """

    def initializer(shape, dtype=None):
        if keras.backend.backend() == "jax":
            import jax  # the backend in use

            with jax.ensure_compile_time_eval():
                return jax.device_put(value)  # jnp.asarray would compile a copy per shape
        return value

    return initializer


def copy_of(variable):
    """An initializer copying `variable`'s value when it is called."""

    def initializer(shape, dtype=None):
        return copy(variable)

    return initializer


def copy(value):
    """A new tensor holding `value`, to assign to another variable.

    On JAX, `a.assign(b)` makes variable `a` hold the very array of variable
    `b`; Keras' JAX trainer donates every variable's buffer to the train
    step, and a buffer held by two variables is donated twice ("Attempt to
    donate the same buffer twice") or deleted under the other variable.
    TensorFlow and PyTorch copy on assign anyway.
    """
    return ops.copy(value)
