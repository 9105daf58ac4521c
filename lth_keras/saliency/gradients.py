"""Gradients for the scores at initialisation: SNIP, GraSP and SynFlow.

Every function
evaluates the model with `stateless_call` in inference mode
(`training=False`), the masked kernels and their masks replaced by given
NumPy values, so the model's variables are never written. Gradients come
from `_value_and_grad`, the one function that dispatches on the Keras
backend; everything else is `keras.ops`. Results are NumPy arrays: turning
them into scores is NumPy maths, in `lth_keras.saliency.scores`.
"""

import keras
import numpy as np
from keras import ops

from lth_keras import _compat
from lth_keras import masks as masks_lib

__all__ = ["loss_gradients", "synaptic_flow"]


def _value_and_grad(fn, values, tangent=None):
    """`fn(values)`, a scalar, and its gradients; or a Hessian-vector product.

    Keras 3 has no gradient op in `keras.ops`, so this is the one place
    that calls each backend's autodiff: `tf.GradientTape` (watching the
    given tensors), `jax.value_and_grad`, or `torch.autograd.grad`. With
    `tangent`, the gradients are those of `∇fn(values) · tangent`, that is
    the Hessian-vector product `H tangent`, by double backpropagation (a
    gradient tape inside another, `jax.grad` of `jax.grad`, or
    `create_graph=True`), as GraSP's reference code computes it.

    Args:
        fn: A function from a list of tensors to a scalar tensor.
        values: A list of NumPy arrays.
        tangent: A list of NumPy arrays shaped like `values`, or `None`.
            Defaults to `None`.

    Returns:
        `(value, gradients)`: `fn(values)` (or `∇fn · tangent`) as a float
        and a list of NumPy arrays shaped like `values` (zeros where there
        is no dependence).
    """

    def dot(grads):  # ∇fn · tangent (tangent as tensors: PyTorch refuses NumPy operands here)
        pairs = zip(grads, tangent, strict=True)
        return sum(ops.sum(g * ops.convert_to_tensor(t)) for g, t in pairs if g is not None)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(v) for v in values]
        with tf.GradientTape() as outer:
            outer.watch(tensors)
            with tf.GradientTape() as inner:
                inner.watch(tensors)
                value = fn(tensors)
            if tangent is not None:
                value = dot(inner.gradient(value, tensors))
        grads = outer.gradient(value, tensors)
    elif backend == "jax":
        import jax

        def objective(arrays):
            return fn(arrays) if tangent is None else dot(jax.grad(fn)(arrays))

        value, grads = jax.value_and_grad(objective)([jax.numpy.asarray(v) for v in values])
    elif backend == "torch":
        import torch

        tensors = [ops.convert_to_tensor(v).detach().requires_grad_() for v in values]
        value = fn(tensors)
        if tangent is not None:
            first = torch.autograd.grad(value, tensors, create_graph=True, allow_unused=True)
            value = dot(first)
        grads = torch.autograd.grad(value, tensors, allow_unused=True)
        value = value.detach()
    else:
        raise NotImplementedError(
            f"Scores that need gradients support the tensorflow, jax and torch "
            f"backends. Received: backend={backend!r}"
        )
    grads = [
        np.zeros_like(v) if g is None else np.asarray(ops.convert_to_numpy(g), dtype=v.dtype)
        for g, v in zip(grads, values, strict=True)
    ]
    return float(ops.convert_to_numpy(value)), grads


def _kernel_function(model, kernels, masks, inputs, head, fixed=None):
    """`fn(kernel values) -> scalar` running `model(inputs)` through `head`.

    Returns `(fn, keys, values)`: `values` are the masked kernels `kernels
    * masks` in the kernels' dtype, in the order of `keys`; `fn` evaluates
    the model with those kernels, the given masks, the variables in `fixed`
    (`{id(variable): value}`) replaced, and every other variable as it is.

    The masked layers multiply kernel gradients by their mask variables
    when the gradient is taken, after `stateless_call` has returned, so by
    the model's own masks: the given masks must be subsets of them, and
    callers multiply the gradients by the given masks.
    """
    entries = {key: weight for key, _, weight in masks_lib.prunable_entries(model)}
    keys = [key for key in entries if key in kernels]
    overrides = dict(fixed or {})
    values = []
    for key in keys:
        dtype = keras.backend.standardize_dtype(entries[key].variable.dtype)
        mask = np.asarray(masks[key]) != 0
        if np.any(mask & ~ops.convert_to_numpy(entries[key].mask)):
            raise ValueError(
                f"The masks to score with must be subsets of the model's masks, but the "
                f"one for {key!r} keeps entries the model has pruned."
            )
        overrides[id(entries[key].mask)] = mask
        values.append(np.asarray(kernels[key], dtype=dtype) * mask)

    def fn(kernel_values):
        replaced = dict(overrides)
        for key, value in zip(keys, kernel_values, strict=True):
            replaced[id(entries[key].variable)] = value
        trainable = [replaced.get(id(v), v.value) for v in model.trainable_variables]
        others = [replaced.get(id(v), v.value) for v in model.non_trainable_variables]
        outputs, _ = model.stateless_call(
            trainable, others, inputs, **_compat.inference_kwargs(model)
        )
        return head(outputs)

    return fn, keys, values


def _loss_function(model, loss):
    loss = getattr(model, "loss", None) if loss is None else loss
    if loss is None:
        raise ValueError(
            "This score needs a loss: compile the model first, or pass `loss=` to "
            "the score (e.g. Snip(data=(x, y), loss='sparse_categorical_crossentropy'))."
        )
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(
            f"Scores on data support a model with one output and one loss. Received: loss={loss!r}"
        )
    return keras.losses.get(loss)


def loss_gradients(model, kernels, masks, data, loss=None, temperature=1.0, tangent=None):
    """The loss on one batch and its gradients with respect to the kernels.

    The model's outputs are divided by `temperature` before the loss (GraSP
    does so with logits); the loss is averaged over the batch. A kernel's
    gradient is zero where its mask is 0. With `tangent`, returns instead
    the Hessian-vector product `H tangent` of the loss with respect to the
    kernels (by double backpropagation).

    Args:
        model: A built Keras model with masked layers.
        kernels: `{key: array}`, the kernel values to evaluate at.
        masks: `{key: bool array}`, the masks to apply.
        data: A batch `(x, y)`.
        loss: A Keras loss (name, instance or function). Defaults to `None`:
            the model's compiled loss.
        temperature: Divides the outputs. Defaults to `1.0`.
        tangent: `{key: array}` shaped like the kernels, or `None`.
            Defaults to `None`.

    Returns:
        `(loss value, {key: gradient})`, the gradients as NumPy arrays; with
        `tangent`, `(∇L · tangent, {key: (H tangent)[key]})`.

    Raises:
        ValueError: If there is no loss, or several, or a mask keeps
            entries the model's mask has pruned.

    Example:

    ```python
    value, grads = loss_gradients(model, get_kernels(model), get_masks(model), (x, y))
    ```
    """
    x, y = data
    loss_fn = _loss_function(model, loss)
    y = ops.convert_to_tensor(y)

    def head(outputs):
        outputs = ops.cast(outputs, "float32") / temperature
        return ops.mean(loss_fn(y, outputs))

    fn, keys, values = _kernel_function(model, kernels, masks, x, head)
    if tangent is not None:
        tangent = [np.asarray(tangent[k], v.dtype) for k, v in zip(keys, values, strict=True)]
    value, grads = _value_and_grad(fn, values, tangent)
    return value, {key: grad * masks[key] for key, grad in zip(keys, grads, strict=True)}


def _synflow_constants(model):
    """Masked layers' biases zero; BatchNorm the identity (up to its epsilon)."""
    fixed = {}
    for layer in masks_lib.masked_layers(model):
        for weight in layer.get_lottery_weights():
            if weight.mask is None:
                fixed[id(weight.variable)] = np.zeros(weight.variable.shape, "float32")
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.built:
            neutral = (("gamma", 1), ("beta", 0), ("moving_mean", 0), ("moving_variance", 1))
            for name, fill in neutral:
                variable = getattr(layer, name, None)
                if variable is not None:
                    fixed[id(variable)] = np.full(variable.shape, fill, "float32")
    return fixed


def _ones_input(model, input_shape):
    if input_shape is None:
        try:
            tensors = list(model.inputs or [])
        except (AttributeError, ValueError):
            tensors = []
        shapes = [tuple(t.shape[1:]) for t in tensors]
        if not shapes or any(d is None for shape in shapes for d in shape):
            raise ValueError(
                "SynFlow feeds an all-ones input, so it needs the model's input shape: "
                "build the model from keras.Input with fixed sizes, or pass "
                "`input_shape=` (without the batch axis) to SynFlow."
            )
    else:
        shapes = [tuple(input_shape)]
    ones = [np.ones((1, *shape), "float32") for shape in shapes]
    return ones[0] if len(ones) == 1 else ones


def synaptic_flow(model, kernels, masks, input_shape=None):
    """SynFlow's R and its gradients with respect to the absolute kernels.

    R = sum of the outputs for an all-ones input (batch of 1) through the
    model with every masked kernel replaced by `abs(kernel) * mask`, the
    masked layers' biases by 0, BatchNormalization by the identity (gamma
    1, beta 0, moving mean 0, moving variance 1; inference mode) and any
    other trainable weight by its absolute value (the reference code's
    `linearize`). For a chain of linear layers (ReLU changes nothing on
    positive values) R = 1ᵀ |W1| |W2| ... |WL| 1.

    Args:
        model: A built Keras model with masked layers, whose outputs come
            before any softmax (a softmax makes R constant).
        kernels: `{key: array}`, the kernel values.
        masks: `{key: bool array}`, the masks to apply.
        input_shape: The input shape without the batch axis. Defaults to
            `None`: read from `model.inputs`.

    Returns:
        `(R, {key: dR/d|kernel|})`, the gradients as NumPy arrays.

    Raises:
        ValueError: If the input shape is unknown, or a mask keeps entries
            the model's mask has pruned.

    Example:

    ```python
    r, grads = synaptic_flow(model, get_kernels(model), get_masks(model))
    ```
    """
    inputs = _ones_input(model, input_shape)
    absolute = {key: np.abs(np.asarray(value)) for key, value in kernels.items()}
    fixed = _synflow_constants(model)
    absolute_others = {
        id(v): ops.abs(v.value) for v in model.trainable_variables if id(v) not in fixed
    }

    def head(outputs):
        return sum(ops.sum(ops.cast(o, "float32")) for o in keras.tree.flatten(outputs))

    fn, keys, values = _kernel_function(
        model, absolute, masks, inputs, head, fixed={**absolute_others, **fixed}
    )
    value, grads = _value_and_grad(fn, values)
    return value, {key: grad * masks[key] for key, grad in zip(keys, grads, strict=True)}
