"""Linear mode connectivity: a barrier derived by hand, exact ends, masks kept along the line."""

import keras
import numpy as np
import pytest
from helpers import mlp

import lth_keras
from lth_keras import connectivity
from lth_keras.masks import get_kernels


@pytest.mark.parametrize(
    "errors, expected",
    [
        ([0.02, 0.05, 0.02], 0.03),
        ([0.1, 0.1, 0.1, 0.1], 0.0),
        ([0.1, 0.4, 0.3], 0.2),  # 0.4 - (0.1 + 0.3) / 2
        ([0.3, 0.1, 0.1], 0.1),  # the top is an end: 0.3 - 0.2
        ([0.0, 1.0], 0.5),
    ],
    ids=["bump", "flat", "uneven-ends", "top-at-an-end", "two-points"],
)
def test_barrier_by_hand(errors, expected):
    assert connectivity.barrier(errors) == pytest.approx(expected, abs=1e-12)


def test_barrier_needs_both_ends():
    with pytest.raises(ValueError, match=r"at least the two end points. Received: errors=\[0.1\]"):
        connectivity.barrier([0.1])


def _two_paths(kernel_1, kernel_2):
    """1 -> 2 hidden (ReLU, no bias) -> 2 logits; the second logit's column pruned."""
    model = lth_keras.prunable(
        keras.Sequential(
            [
                keras.Input((1,)),
                keras.layers.Dense(2, activation="relu", use_bias=False, name="hidden"),
                keras.layers.Dense(2, name="out"),
            ]
        )
    )
    lth_keras.set_masks(model, {"out/kernel": np.array([[True, False], [True, False]])})
    model.get_layer("hidden").kernel.assign(np.array(kernel_1, "float32"))
    model.get_layer("out").kernel.assign(np.array(kernel_2, "float32"))
    model.get_layer("out").bias.assign(np.array([0.0, 1.5], "float32"))
    return model


def test_interpolation_curve_and_barrier_by_hand():
    # Model a routes x through hidden unit 0, model b through unit 1. On the
    # line, logit 0 of x > 0 is x * (2(1 - alpha)^2 + 2 alpha^2): 2x at the
    # ends, x at alpha = 0.5, 1.25x at 0.25 and 0.75; logit 1 is 1.5. So
    # x = 1 (label 0) is wrong inside the line only, x = 2 is always right,
    # and x < 0 (ReLU gives 0: label 1) too. Errors 0, 1/4, 1/4, 1/4, 0.
    a = _two_paths([[2.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]])
    b = _two_paths([[0.0, 2.0]], [[0.0, 0.0], [1.0, 0.0]])
    x = np.array([[1.0], [2.0], [-1.0], [-2.0]], "float32")
    y = np.array([0, 0, 1, 1])
    curve = connectivity.interpolation(a, b, x, y, alphas=5)
    assert curve.alphas == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert curve.errors == (0.0, 0.25, 0.25, 0.25, 0.0)
    assert curve.barrier == 0.25
    flat = connectivity.interpolation(a, a, x, y, alphas=[0.0, 0.5, 1.0])
    assert flat.errors == (0.0, 0.0, 0.0) and flat.barrier == 0.0


@pytest.fixture
def copies():
    """Two masked MLPs with the same masks (half of each kernel) and different weights."""
    keras.utils.set_random_seed(0)
    a = mlp()
    keras.utils.set_random_seed(1)
    b = mlp()
    rng = np.random.default_rng(0)
    masks = {key: rng.random(m.shape) < 0.5 for key, m in lth_keras.get_masks(a).items()}
    lth_keras.set_masks(a, masks)
    lth_keras.set_masks(b, masks)
    return a, b, masks


def _bits(weights):
    return [(w.dtype.str, w.shape, w.tobytes()) for w in weights]


@pytest.mark.parametrize("alpha, end", [(0.0, 0), (1.0, 1)], ids=["alpha0", "alpha1"])
def test_the_ends_are_the_models_bit_for_bit(copies, alpha, end):
    a, b, _ = copies
    weights = connectivity.interpolate_weights(a, b, alpha)
    assert _bits(weights) == _bits((a, b)[end].get_weights())


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.9], ids=["alpha0.3", "alpha0.5", "alpha0.9"])
def test_masked_models_interpolate_within_their_masks(copies, alpha):
    a, b, masks = copies
    kernels_a, kernels_b = get_kernels(a), get_kernels(b)
    scratch = mlp()
    scratch.set_weights(connectivity.interpolate_weights(a, b, alpha))
    assert {k: m.tolist() for k, m in lth_keras.get_masks(scratch).items()} == {
        k: m.tolist() for k, m in masks.items()
    }
    for key, kernel in get_kernels(scratch).items():
        mask = masks[key]
        assert np.all(kernel[~mask] == 0)  # pruned weights stay exactly zero
        a64, b64 = kernels_a[key].astype("float64"), kernels_b[key].astype("float64")
        expected = (1 - alpha) * a64 + alpha * b64
        np.testing.assert_array_equal(kernel[mask], expected.astype("float32")[mask])


def test_interpolation_ends_are_the_models_own_errors(copies):
    a, b, _ = copies
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 12)).astype("float32")
    y = rng.integers(0, 3, 64)
    before = _bits(a.get_weights())
    curve = connectivity.interpolation(a, b, x, y, alphas=4, batch_size=32)
    assert _bits(a.get_weights()) == before  # model_a's weights are put back
    for model, error in ((a, curve.errors[0]), (b, curve.errors[-1])):
        predicted = np.argmax(model.predict(x, verbose=0), axis=-1)
        assert error == float(np.mean(predicted != y))
    assert curve.barrier == connectivity.barrier(curve.errors) >= 0


def test_models_with_different_masks_are_refused(copies):
    a, b, masks = copies
    key = sorted(masks)[0]
    lth_keras.set_masks(b, {key: ~masks[key]})
    with pytest.raises(ValueError, match=f"different masks \\(at {key}\\)"):
        connectivity.interpolate_weights(a, b, 0.5)
    with pytest.raises(ValueError, match="different masks"):
        connectivity.interpolation(a, b, np.zeros((2, 12), "float32"), np.zeros(2), alphas=3)


def test_models_of_different_architectures_are_refused():
    small = keras.Sequential([keras.Input((12,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="different architectures"):
        connectivity.interpolate_weights(mlp(), small, 0.5)


@pytest.mark.parametrize("alphas", [1, [0.5]], ids=["count", "sequence"])
def test_interpolation_needs_two_points(copies, alphas):
    a, b, _ = copies
    with pytest.raises(ValueError, match="expected at least 2 points"):
        connectivity.interpolation(a, b, np.zeros((2, 12), "float32"), np.zeros(2), alphas=alphas)
