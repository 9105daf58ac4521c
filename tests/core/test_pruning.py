"""Exact invariants of the pure pruning maths."""

import numpy as np
import pytest

from lth_keras import pruning


@pytest.mark.parametrize(
    "remaining, rate, expected",
    [
        (10, 0.2, 2),  # the LTH reference code prunes 3 here; we do not
        (10, 0.25, 3),  # 2.5 rounds half up
        (10, 0.05, 1),  # 0.5 rounds half up
        (10, 0.04, 0),  # 0.4 rounds down: nothing pruned
        (1, 0.5, 1),
        (0, 0.5, 0),  # an empty (fully pruned) layer stays empty
        (3, 0.999, 3),  # a rate near 1 may prune everything
        (7, 1e-9, 0),  # a rate near 0 prunes nothing
        (5, 0.3, 2),  # 1.5 up, although 0.3 * 5 < 1.5 in binary floating point
        (266200, 0.2, 53240),
    ],
    ids=[
        "lth-ref",
        "half-up",
        "half-up-small",
        "down",
        "one",
        "empty",
        "near-1",
        "near-0",
        "float-edge",
        "lenet",
    ],
)
def test_prune_count(remaining, rate, expected):
    assert pruning.prune_count(remaining, rate) == expected


@pytest.mark.parametrize(
    "rate, error, match",
    [
        (1.0, ValueError, r"expected a float in \[0, 1\). Received: rate=1.0"),
        (-0.1, ValueError, "Received: rate=-0.1"),
        ("0.2", TypeError, "expected a float"),
        (True, TypeError, "expected a float"),
    ],
    ids=["one", "negative", "string", "bool"],
)
def test_prune_count_rejects_bad_rates(rate, error, match):
    with pytest.raises(error, match=match):
        pruning.prune_count(10, rate)


def test_prune_count_rejects_negative_remaining():
    with pytest.raises(ValueError, match="remaining=-1"):
        pruning.prune_count(-1, 0.2)


def _random_case(seed, shape=(20, 30)):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=shape)
    mask = rng.random(shape) > 0.3
    return weight, mask


@pytest.mark.parametrize("rate", [0.01, 0.2, 0.5, 0.99])
def test_magnitude_prune_count_threshold_and_shrinking(rate):
    weight, mask = _random_case(1)
    before = {"w": mask.copy()}
    new = pruning.magnitude_prune({"w": weight}, {"w": mask}, {"w": rate})["w"]
    np.testing.assert_array_equal(mask, before["w"])  # input untouched
    assert not np.any(new & ~mask)  # masks only shrink
    pruned_now = mask & ~new
    assert pruned_now.sum() == pruning.prune_count(int(mask.sum()), rate)
    if pruned_now.any() and new.any():
        # The threshold separates pruned from kept weights.
        assert np.abs(weight[pruned_now]).max() <= np.abs(weight[new]).min()


def test_magnitude_prune_ties_go_to_lower_index():
    weight = np.ones(10)
    mask = np.ones(10, dtype=bool)
    new = pruning.magnitude_prune({"w": weight}, {"w": mask}, {"w": 0.3})["w"]
    np.testing.assert_array_equal(new, [False] * 3 + [True] * 7)


def test_magnitude_prune_ignores_already_pruned_weights():
    # The smallest magnitudes are already pruned; they must not be counted.
    weight = np.array([0.0, 0.0, 0.1, 0.2, 0.3, 0.4])
    mask = np.array([False, False, True, True, True, True])
    new = pruning.magnitude_prune({"w": weight}, {"w": mask}, {"w": 0.5})["w"]
    np.testing.assert_array_equal(new, [False, False, False, False, True, True])


def test_magnitude_prune_fully_pruned_layer_and_untouched_names():
    masks = {"a": np.zeros((3, 3), dtype=bool), "b": np.ones(4, dtype=bool)}
    weights = {"a": np.ones((3, 3)), "b": np.arange(4.0)}
    new = pruning.magnitude_prune(weights, masks, {"a": 0.5})
    assert not new["a"].any()
    np.testing.assert_array_equal(new["b"], masks["b"])
    assert new["b"] is not masks["b"]


def test_iterated_counts_follow_the_documented_recurrence():
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(40, 25))
    mask = np.ones_like(weight, dtype=bool)
    remaining = mask.size
    for _ in range(12):
        mask = pruning.magnitude_prune({"w": weight}, {"w": mask}, {"w": 0.2})["w"]
        remaining -= pruning.prune_count(remaining, 0.2)
        assert mask.sum() == remaining
    assert remaining == 69  # 1000 * 0.8 ** 12 = 68.7


@pytest.mark.parametrize(
    "weights, masks, error, match",
    [
        ({"w": np.ones(3)}, {"w": np.ones(4, dtype=bool)}, ValueError, "shapes differ"),
        ({"w": np.ones(3)}, {"w": np.ones(3)}, TypeError, "boolean"),
        ({"w": np.ones(3)}, {"v": np.ones(3, dtype=bool)}, KeyError, "no mask"),
    ],
    ids=["shape", "dtype", "name"],
)
def test_magnitude_prune_rejects_bad_input(weights, masks, error, match):
    with pytest.raises(error, match=match):
        pruning.magnitude_prune(weights, masks, {"w": 0.2})


def test_global_prune_pools_weights():
    weights = {"a": np.array([0.9, 0.1, 0.5]), "b": np.array([0.2, 0.8, 0.3, 0.05])}
    masks = {k: np.ones(v.shape, dtype=bool) for k, v in weights.items()}
    new = pruning.global_magnitude_prune(weights, masks, 0.4)  # 3 of 7
    np.testing.assert_array_equal(new["a"], [True, False, True])
    np.testing.assert_array_equal(new["b"], [False, True, True, False])


def test_global_prune_threshold_and_count_over_random_layers():
    rng = np.random.default_rng(3)
    weights = {
        k: rng.normal(size=s) * scale
        for k, s, scale in [("a", (30, 20), 1.0), ("b", (50,), 0.1), ("c", (4, 5, 6), 3.0)]
    }
    masks = {k: rng.random(w.shape) > 0.2 for k, w in weights.items()}
    new = pruning.global_magnitude_prune(weights, masks, 0.3)
    alive = sum(int(m.sum()) for m in masks.values())
    pruned = {k: masks[k] & ~new[k] for k in masks}
    assert sum(int(p.sum()) for p in pruned.values()) == pruning.prune_count(alive, 0.3)
    top_pruned = max(np.abs(weights[k][pruned[k]]).max(initial=0) for k in masks)
    low_kept = min(np.abs(weights[k][new[k]]).min(initial=np.inf) for k in masks)
    assert top_pruned <= low_kept


def test_global_prune_ties_follow_name_order_then_index():
    weights = {"a": np.ones(3), "b": np.ones(3)}
    masks = {k: np.ones(3, dtype=bool) for k in weights}
    new = pruning.global_magnitude_prune(weights, masks, 0.5, names=["b", "a"])
    np.testing.assert_array_equal(new["b"], [False, False, False])
    np.testing.assert_array_equal(new["a"], [True, True, True])


def test_global_prune_leaves_unlisted_names_alone():
    weights = {"a": np.arange(4.0), "b": np.zeros(4)}
    masks = {k: np.ones(4, dtype=bool) for k in weights}
    new = pruning.global_magnitude_prune(weights, masks, 0.5, names=["a"])
    np.testing.assert_array_equal(new["a"], [False, False, True, True])
    assert new["b"].all()


def test_random_prune_exact_counts_among_alive_and_seeded():
    _, mask = _random_case(4)
    masks = {"w": mask}
    one = pruning.random_prune(masks, {"w": 50}, np.random.default_rng(7))["w"]
    two = pruning.random_prune(masks, {"w": 50}, np.random.default_rng(7))["w"]
    np.testing.assert_array_equal(one, two)
    assert not np.any(one & ~mask)
    assert mask.sum() - one.sum() == 50


def test_random_prune_rejects_too_many():
    with pytest.raises(ValueError, match=r"expected an int in \[0, 2\]. Received: count=3"):
        pruning.random_prune(
            {"w": np.array([True, True, False])}, {"w": 3}, np.random.default_rng(0)
        )


def test_random_masks_like_keeps_counts():
    _, mask = _random_case(5)
    new = pruning.random_masks_like({"w": mask}, np.random.default_rng(1))["w"]
    assert new.sum() == mask.sum()
    assert not np.array_equal(new, mask)


def test_pruned_counts_and_growth_error():
    old = {"w": np.array([True, True, False])}
    assert pruning.pruned_counts(old, {"w": np.array([True, False, False])}) == {"w": 1}
    with pytest.raises(ValueError, match="can only shrink"):
        pruning.pruned_counts(old, {"w": np.array([True, True, True])})


def test_fraction_remaining():
    total, per = pruning.fraction_remaining(
        {"a": np.array([True, False, False, False]), "b": np.ones((2, 2), dtype=bool)}
    )
    assert total == 5 / 8
    assert per == {"a": 0.25, "b": 1.0}
    assert pruning.fraction_remaining({}) == (1.0, {})


LAYERS = [
    ("conv1", ("MaskedConv2D", "Conv2D")),
    ("conv2", ("MaskedConv2D", "Conv2D")),
    ("fc1", ("MaskedDense", "Dense")),
    ("out", ("MaskedDense", "Dense")),
]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, {"conv1": 0.2, "conv2": 0.2, "fc1": 0.2, "out": 0.1}),
        ({"output_rate": 0.2}, {"conv1": 0.2, "conv2": 0.2, "fc1": 0.2, "out": 0.2}),
        ({"layer_rates": {"Conv2D": 0.15}}, {"conv1": 0.15, "conv2": 0.15, "fc1": 0.2, "out": 0.1}),
        ({"layer_rates": {"Dense": 0.3}}, {"conv1": 0.2, "conv2": 0.2, "fc1": 0.3, "out": 0.1}),
        (
            {"layer_rates": {"Dense": 0.3, "out": 0.05}},
            {"conv1": 0.2, "conv2": 0.2, "fc1": 0.3, "out": 0.05},
        ),
        ({"exclude": ["out", "conv1"]}, {"conv2": 0.2, "fc1": 0.2}),
        ({"exclude": "Conv2D"}, {"fc1": 0.2, "out": 0.1}),
    ],
    ids=[
        "default",
        "output",
        "type",
        "type-not-output",
        "name-beats-output",
        "exclude",
        "exclude-type",
    ],
)
def test_resolve_rates(kwargs, expected):
    assert pruning.resolve_rates(LAYERS, 0.2, **kwargs) == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layer_rates": {"fc9": 0.1}}, "matches no masked layer"),
        ({"exclude": ["Conv3D"]}, "matches no masked layer"),
        ({"output_rate": 1.5}, "output_rate=1.5"),
        ({"layer_rates": {"fc1": -0.5}}, r"layer_rates\['fc1'\]=-0.5"),
    ],
    ids=["unknown-name", "unknown-type", "output", "layer-rate"],
)
def test_resolve_rates_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pruning.resolve_rates(LAYERS, 0.2, **kwargs)
