"""Linear mode connectivity: the error along the line between two trained networks.

Frankle, Dziugaite, Roy and Carbin (ICML 2020, arXiv 1912.05671) train two
copies of a network from the same weights `W_k` (iteration `k`) with
different data orders, and evaluate the error of `(1 - alpha) * W1 + alpha *
W2` at evenly spaced `alpha`. The network is *stable* at `k` when the error
barrier, the largest error along the line minus the mean of the two end
points' errors, is near zero (they use 2%). `interpolation` computes that
curve and barrier for any two Keras models of the same architecture, masked
or not; `lth_keras.experiments.instability` runs the whole analysis for the
tickets of a run.

Backend-neutral: NumPy and `Model.predict` only.
"""

import dataclasses

import numpy as np

from lth_keras import masks as masks_lib

__all__ = ["Interpolation", "barrier", "interpolate_weights", "interpolation"]


@dataclasses.dataclass(frozen=True)
class Interpolation:
    """The error along the line from one model (`alpha = 0`) to another (`alpha = 1`).

    Attributes:
        alphas: The interpolation weights, a tuple of floats.
        errors: The error (1 - accuracy) at each `alpha`, a tuple of floats.
        barrier: `barrier(errors)`: the instability.

    Example:

    ```python
    curve = lth_keras.connectivity.interpolation(copy_a, copy_b, x_test, y_test)
    curve.errors[0], curve.errors[-1]  # the two trained copies' own errors
    ```
    """

    alphas: tuple
    errors: tuple
    barrier: float


def barrier(errors):
    """The error barrier (instability) of an interpolation curve.

    The largest error along the line minus the mean of the errors at its two
    ends (Frankle et al. 2020): 0 when the line never rises above its ends,
    rounded to 12 decimals so that it is exactly 0 for a flat line.

    Args:
        errors: Errors at evenly spaced `alpha`, the two ends included.

    Returns:
        A float.

    Raises:
        ValueError: If fewer than two errors are given.

    Example:

    >>> barrier([0.02, 0.05, 0.02])
    0.03
    """
    errors = [float(e) for e in errors]
    if len(errors) < 2:
        raise ValueError(
            "Received an invalid value for `errors`, expected at least the two end points. "
            f"Received: errors={errors}"
        )
    return round(max(errors) - (errors[0] + errors[-1]) / 2, 12)


def interpolate_weights(model_a, model_b, alpha):
    """The weights of `(1 - alpha) * model_a + alpha * model_b`, as a list of arrays.

    Every floating-point weight is interpolated (in float64, then cast back
    to its dtype); the other weights, the boolean masks of masked layers
    among them, are `model_a`'s. The two models must share their masks (as
    two copies trained from the same pruned weights do), so a pruned weight,
    exactly zero in both, stays exactly zero along the line. At `alpha = 0`
    the weights are `model_a`'s and at `alpha = 1` `model_b`'s, bit for bit.

    Args:
        model_a: A Keras model (`alpha = 0`).
        model_b: A model of the same architecture (`alpha = 1`).
        alpha: The interpolation weight, a float.

    Returns:
        A list of NumPy arrays for `model_a.set_weights`.

    Raises:
        ValueError: If the models' weights differ in number or shapes, or
            their masks differ.

    Example:

    ```python
    scratch.set_weights(lth_keras.connectivity.interpolate_weights(copy_a, copy_b, 0.5))
    ```
    """
    return _mix(*_weights_of(model_a, model_b), alpha)


def _weights_of(model_a, model_b):
    """The two models' weights, after checking their shapes and then their masks."""
    weights_a, weights_b = model_a.get_weights(), model_b.get_weights()
    if len(weights_a) != len(weights_b) or any(
        a.shape != b.shape for a, b in zip(weights_a, weights_b, strict=True)
    ):
        raise ValueError(
            "Received models of different architectures: their weights differ in number or "
            f"shape ({len(weights_a)} and {len(weights_b)} weights). Interpolate copies of one "
            "network."
        )
    masks_a, masks_b = masks_lib.get_masks(model_a), masks_lib.get_masks(model_b)
    differ = sorted(
        key
        for key in masks_a.keys() | masks_b.keys()
        if key not in masks_a
        or key not in masks_b
        or masks_a[key].shape != masks_b[key].shape
        or not np.array_equal(masks_a[key], masks_b[key])
    )
    if differ:
        raise ValueError(
            "Received models with different masks (at "
            f"{', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''}). Interpolate copies "
            "of one network that share their masks: set one's masks on the other with "
            "lth_keras.set_masks."
        )
    return weights_a, weights_b


def _mix(weights_a, weights_b, alpha):
    mixed = []
    for a, b in zip(weights_a, weights_b, strict=True):
        if not np.issubdtype(a.dtype, np.floating) or alpha == 0:
            mixed.append(np.array(a))
        elif alpha == 1:
            mixed.append(np.array(b))
        else:
            value = (1 - alpha) * a.astype(np.float64) + alpha * b.astype(np.float64)
            mixed.append(value.astype(a.dtype))
    return mixed


def interpolation(model_a, model_b, x, y, alphas=30, batch_size=1000):
    """Evaluates the error of the models on the line between two models.

    `model_a` is evaluated at every point (its own weights are put back at
    the end, even after an error), so it needs no compiling: the error is
    the fraction of examples whose largest output is not the label.

    Args:
        model_a: A Keras classifier (`alpha = 0`).
        model_b: The same architecture with the same masks, trained
            otherwise (`alpha = 1`).
        x: Inputs, a NumPy array.
        y: Integer labels, a NumPy array.
        alphas: The number of evenly spaced points from 0 to 1 (both
            included), or the sequence of `alpha` values. Defaults to `30`,
            as the paper.
        batch_size: Examples per forward pass. Defaults to `1000`.

    Returns:
        An `Interpolation`.

    Raises:
        ValueError: If the models differ in architecture or masks, or fewer
            than two points are asked for.

    Example:

    ```python
    curve = lth_keras.connectivity.interpolation(copy_a, copy_b, x_test, y_test)
    curve.barrier  # below 0.02: stable
    ```
    """
    count = alphas if isinstance(alphas, (int, np.integer)) else len(alphas)
    if count < 2:
        raise ValueError(
            "Received an invalid value for `alphas`, expected at least 2 points. "
            f"Received: alphas={alphas}"
        )
    if isinstance(alphas, (int, np.integer)):
        alphas = np.linspace(0.0, 1.0, alphas)
    alphas = tuple(float(a) for a in alphas)
    saved, weights_b = _weights_of(model_a, model_b)
    labels = np.asarray(y).reshape(-1)
    errors = []
    try:
        for alpha in alphas:
            model_a.set_weights(_mix(saved, weights_b, alpha))
            logits = model_a.predict(x, batch_size=batch_size, verbose=0)
            errors.append(float(np.mean(np.argmax(logits, axis=-1) != labels)))
    finally:
        model_a.set_weights(saved)
    return Interpolation(alphas, tuple(errors), barrier(errors))
