"""Exact values and invariants of the overlap ratio R_p (Liu et al., ICML 2021)."""

import keras
import numpy as np
import pytest

import lth_keras
from lth_keras.analysis import overlap_ratio, overlap_ratios
from lth_keras.masks import get_kernels


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def pair(rng):
    """Two independent random weight dicts with kernels of different sizes."""

    def draw():
        return {"fc1/kernel": rng.normal(size=(6, 5)), "out/kernel": rng.normal(size=(5, 3))}

    return draw(), draw()


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 1.0], ids=["p0.1", "p0.3", "p0.5", "p1"])
def test_identity_and_sign_flip_give_one(pair, p):
    a, _ = pair
    flipped = {name: -w for name, w in a.items()}
    assert overlap_ratio(a, a, p) == 1.0
    assert overlap_ratio(a, flipped, p) == 1.0


@pytest.mark.parametrize("factor", [2.0, 1e-3, 37.5], ids=["x2", "x1e-3", "x37.5"])
def test_scaling_one_layer_changes_nothing(pair, factor):
    a, b = pair
    scaled = {**a, "fc1/kernel": a["fc1/kernel"] * factor}
    assert overlap_ratio(scaled, b, 0.3, per_layer=True) == overlap_ratio(a, b, 0.3, per_layer=True)
    assert overlap_ratio(scaled, b, 0.3) == overlap_ratio(a, b, 0.3)


@pytest.mark.parametrize(
    "p, expected",
    [
        (0.4, 0.0),  # count 2: T(a) = {0, 4}, T(b) = {1, 2}
        (0.6, 2 / 3),  # count 3: T(a) = {0, 4, 2}, T(b) = {1, 2, 4}, shared {2, 4}
        (1.0, 1.0),  # count 5: everything
    ],
    ids=["p0.4", "p0.6", "p1"],
)
def test_single_kernel_by_hand(p, expected):
    a = {"k": np.array([0.9, -0.1, 0.5, 0.3, -0.7])}
    b = {"k": np.array([0.2, 0.8, -0.6, 0.1, 0.4])}
    assert overlap_ratio(a, b, p) == expected


def test_network_wide_aggregation_by_hand():
    # p = 0.5. fc1 (10 entries): count 5; T(a) = {0..4}, T(b) = {0, 1, 2, 8, 9}, shared 3.
    # out (4 entries): count 2; T(a) = T(b) = {0, 1}, shared 2.
    # Per layer: 3/5 = 0.6 and 2/2 = 1.0 (mean 0.8); network: (3 + 2) / (5 + 2) = 5/7.
    a = {
        "fc1/kernel": np.array([[10, -9, 8, 7, -6], [5, 4, -3, 2, 1]], dtype="float32"),
        "out/kernel": np.array([[4], [-3], [2], [1]], dtype="float32"),
    }
    b = {
        "fc1/kernel": np.array([[-10, 9, 8, 1, 2], [3, -4, 5, 6, 7]], dtype="float32"),
        "out/kernel": np.array([[-4], [3], [2], [-1]], dtype="float32"),
    }
    assert overlap_ratio(a, b, 0.5) == 5 / 7
    assert overlap_ratio(a, b, 0.5, per_layer=True) == {"fc1/kernel": 0.6, "out/kernel": 1.0}


@pytest.mark.parametrize(
    "b, expected",
    [
        ([0.1, 0.2, 0.5, 0.5], 0.0),  # T(b) = {2, 3}
        ([0.5, 0.1, -0.5, 0.1], 0.5),  # T(b) = {0, 2}: ties again go to the lower index
        ([0.5, 0.5, 0.1, 0.1], 1.0),  # T(b) = {0, 1}
    ],
    ids=["disjoint", "half", "same"],
)
def test_ties_go_to_lower_index(b, expected):
    # All four magnitudes of `a` tie; count(0.5, 4) = 2, so T(a) = {0, 1}.
    a = {"k": np.array([0.5, -0.5, 0.5, -0.5])}
    assert overlap_ratio(a, {"k": np.array(b)}, 0.5) == expected


def test_count_rounds_half_up():
    # count(0.25, 10) = 2.5 rounded half up = 3: T(a) = {0, 1, 2}, T(b) = {0, 1, 9}.
    # Rounding half to even would give count 2 and a ratio of 1.0.
    a = {"k": np.arange(10.0, 0.0, -1.0)}
    b = {"k": np.array([10.0, 9.0, 1, 1, 1, 1, 1, 1, 1, 8.0])}
    assert overlap_ratio(a, b, 0.25) == 2 / 3


def test_pruned_entries_never_counted():
    # Entry 0 of `a` is huge but pruned. Survivors {1, 2, 3}: count(0.5, 3) = 2,
    # T(a) = T(b) = {3, 2}. Unmasked, count(0.5, 4) = 2: T(a) = {0, 3}, T(b) = {3, 2}.
    a = {"k": np.array([1000.0, 1.0, 2.0, 3.0])}
    b = {"k": np.array([0.0, 1.0, 2.0, 3.0])}
    masks = {"k": np.array([False, True, True, True])}
    assert overlap_ratio(a, b, 0.5, masks=masks) == 1.0
    assert overlap_ratio(a, b, 0.5) == 0.5
    # Both huge and pruned: count(1/3, 3) = 1, T(a) = {3}, T(b) = {1}.
    a = {"k": np.array([100.0, 1.0, 2.0, 3.0])}
    b = {"k": np.array([100.0, 3.0, 2.0, 1.0])}
    assert overlap_ratio(a, b, 1 / 3, masks=masks) == 0.0
    assert overlap_ratio(a, b, 1 / 3) == 1.0


def test_zero_count_kernel_skipped_and_reported_as_one():
    # "dead" is fully pruned: count 0, ratio 1.0, nothing added to the sums.
    # "k": count(0.5, 4) = 2, T(a) = {0, 1}, T(b) = {0, 2}, ratio 1/2.
    a = {"dead": np.array([5.0, 4.0]), "k": np.array([4.0, 3.0, 2.0, 1.0])}
    b = {"dead": np.array([-4.0, 5.0]), "k": np.array([4.0, 1.0, 2.0, 0.0])}
    masks = {"dead": np.zeros(2, dtype=bool), "k": np.ones(4, dtype=bool)}
    assert overlap_ratio(a, b, 0.5, masks=masks) == 0.5
    assert overlap_ratio(a, b, 0.5, masks=masks, per_layer=True) == {"dead": 1.0, "k": 0.5}
    # count(0.04, 10) = 0 for every kernel: the total is 1.0 too.
    ten = {"k": np.arange(10.0)}
    assert overlap_ratio(ten, {"k": -np.arange(10.0)[::-1]}, 0.04) == 1.0


def test_independent_weights_give_about_p(rng):
    a = {"k": rng.normal(size=200_000)}
    b = {"k": rng.normal(size=200_000)}
    assert abs(overlap_ratio(a, b, 0.3) - 0.3) < 0.01


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
def test_p_one_gives_one(pair, rng, masked):
    a, b = pair
    masks = {name: rng.random(w.shape) < 0.5 for name, w in a.items()} if masked else None
    assert overlap_ratio(a, b, 1.0, masks=masks) == 1.0
    assert overlap_ratio(a, b, 1, masks=masks, per_layer=True) == dict.fromkeys(a, 1.0)


def test_inputs_unchanged(pair, rng):
    a, b = pair
    masks = {name: rng.random(w.shape) < 0.5 for name, w in a.items()}
    copies = [{name: w.copy() for name, w in d.items()} for d in (a, b, masks)]
    overlap_ratio(a, b, 0.3, masks=masks, per_layer=True)
    for original, copy in zip((a, b, masks), copies, strict=True):
        assert list(original) == list(copy)
        for name in copy:
            np.testing.assert_array_equal(original[name], copy[name])


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5], ids=["zero", "negative", "above-one"])
def test_p_out_of_range(pair, p):
    a, b = pair
    with pytest.raises(ValueError, match=rf"expected a float in \(0, 1\]. Received: p={p}"):
        overlap_ratio(a, b, p)


@pytest.mark.parametrize("p", [True, "0.5", None], ids=["bool", "str", "none"])
def test_p_not_a_number(pair, p):
    a, b = pair
    with pytest.raises(TypeError, match="invalid type for `p`"):
        overlap_ratio(a, b, p)


def test_names_differ(pair):
    a, b = pair
    b = {"fc1/kernel": b["fc1/kernel"], "extra/kernel": b["out/kernel"]}
    with pytest.raises(
        ValueError, match=r"Missing from `b`: \['out/kernel'\]; extra in `b`: \['extra/kernel'\]"
    ):
        overlap_ratio(a, b, 0.5)


def test_shapes_differ(pair):
    a, b = pair
    b = {**b, "out/kernel": b["out/kernel"].T}
    with pytest.raises(ValueError, match=r"shapes differ for 'out/kernel'.*b.shape=\(3, 5\)"):
        overlap_ratio(a, b, 0.5)


def test_mask_missing(pair):
    a, b = pair
    masks = {"fc1/kernel": np.ones((6, 5), dtype=bool)}
    with pytest.raises(ValueError, match=r"no mask for kernels: \['out/kernel'\]"):
        overlap_ratio(a, b, 0.5, masks=masks)


def test_mask_shape_differs(pair):
    a, b = pair
    masks = {name: np.ones(w.shape, dtype=bool) for name, w in a.items()}
    masks["fc1/kernel"] = np.ones((5, 6), dtype=bool)
    with pytest.raises(ValueError, match=r"mask shapes differ for 'fc1/kernel'"):
        overlap_ratio(a, b, 0.5, masks=masks)


def test_mask_not_boolean(pair):
    a, b = pair
    masks = {name: np.ones(w.shape, dtype="float32") for name, w in a.items()}
    with pytest.raises(TypeError, match="Masks must be boolean arrays.*dtype=float32"):
        overlap_ratio(a, b, 0.5, masks=masks)


def test_neither_dict_nor_model(pair):
    a, _ = pair
    with pytest.raises(TypeError, match="invalid type for `b`"):
        overlap_ratio(a, [np.ones(3)], 0.5)


def _model(seed):
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Dense(5, name="fc1"), keras.layers.Dense(3, name="out")]
    return lth_keras.prunable(keras.Sequential([keras.Input((6,)), *layers]))


@pytest.mark.parametrize("p", [0.2, 0.5, 1.0], ids=["p0.2", "p0.5", "p1"])
def test_models_match_dict_computation(p):
    model_a, model_b = _model(0), _model(1)
    masks = lth_keras.get_masks(model_a)
    masks["fc1/kernel"][:3] = False  # 15 of 30 entries pruned
    lth_keras.set_masks(model_a, masks)
    kernels_a, kernels_b = get_kernels(model_a), get_kernels(model_b)
    masks = lth_keras.get_masks(model_a)
    for per_layer in (False, True):
        expected = overlap_ratio(kernels_a, kernels_b, p, masks=masks, per_layer=per_layer)
        assert overlap_ratio(model_a, model_b, p, per_layer=per_layer) == expected
    # Explicit masks replace those of `a`; a dict and a model mix.
    full = {name: np.ones(w.shape, dtype=bool) for name, w in kernels_a.items()}
    assert overlap_ratio(model_a, model_b, p, masks=full) == overlap_ratio(kernels_a, kernels_b, p)
    assert overlap_ratio(kernels_a, model_b, p) == overlap_ratio(kernels_a, kernels_b, p)


def test_model_without_masked_layers():
    plain = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match=r"no masked layers.*lth_keras.prunable\(model\)"):
        overlap_ratio(plain, plain, 0.5)


def test_overlap_ratios_match_overlap_ratio_for_each_p():
    rng = np.random.default_rng(3)
    a = {"k1": rng.normal(size=(20, 7)), "k2": rng.normal(size=(9,))}
    b = {"k1": rng.normal(size=(20, 7)), "k2": rng.normal(size=(9,))}
    masks = {"k1": rng.random((20, 7)) < 0.6, "k2": np.ones(9, bool)}
    ps = (0.1, 0.25, 0.5, 1.0)
    for per_layer in (False, True):
        many = overlap_ratios(a, b, ps, masks=masks, per_layer=per_layer)
        assert list(many) == list(ps)
        for p in ps:
            assert many[p] == overlap_ratio(a, b, p, masks=masks, per_layer=per_layer)
    with pytest.raises(ValueError, match="p"):
        overlap_ratios(a, b, (0.2, 1.5))
