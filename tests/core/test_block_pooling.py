"""Blocks pooled by RMS, mean or maximum; a sparsity counts whole blocks (tfmot's rule)."""

import keras
import numpy as np
import pytest

import lth_keras
from lth_keras.pruning import Blocks, get_structure


def _model(kernel):
    model = keras.Sequential([keras.Input((kernel.shape[0],)), keras.layers.Dense(1, name="d")])
    model.layers[0].kernel.assign(kernel)
    return lth_keras.prunable(model)


# Two blocks of 4 inputs: A = [1.9, 0, 0, 0], B = [1, 1, 1, 1].
# RMS: A 0.95 < B 1; mean: A 0.475 < B 1; max: A 1.9 > B 1.
_KERNEL = np.array([[1.9], [0], [0], [0], [1], [1], [1], [1]], "float32")


@pytest.mark.parametrize(
    "pooling, kept_block", [("rms", 1), ("avg", 1), ("max", 0)], ids=["rms", "avg", "max"]
)
def test_pooling_decides_which_block_survives(pooling, kept_block):
    model = _model(_KERNEL)
    targets = lth_keras.Targets(structure=Blocks(4, pooling=pooling))
    mask = targets.prune(model, np.random.default_rng(0), sparsity=0.5)["d/kernel"][:, 0]
    expected = np.zeros(8, bool)
    expected[4 * kept_block : 4 * kept_block + 4] = True
    assert mask.tolist() == expected.tolist()


def test_mean_and_rms_differ_where_a_block_has_one_large_entry():
    # A = [3, 0, 0, 0] against B = [1, 1, 1, 1]: RMS 1.5 > 1 keeps A, the mean 0.75 < 1 keeps B.
    kernel = np.array([[3], [0], [0], [0], [1], [1], [1], [1]], "float32")
    kept = {}
    for pooling in ("rms", "avg"):
        targets = lth_keras.Targets(structure=Blocks(4, pooling=pooling))
        mask = targets.prune(_model(kernel), np.random.default_rng(0), sparsity=0.5)
        kept[pooling] = mask["d/kernel"][:, 0].tolist()
    assert kept == {"rms": [True] * 4 + [False] * 4, "avg": [False] * 4 + [True] * 4}


@pytest.mark.parametrize("sparsity, blocks", [(0.25, 8), (0.35, 6), (0.5, 5), (0.95, 1)], ids=str)
def test_a_sparsity_keeps_keep_count_of_the_blocks(sparsity, blocks):
    # 10 blocks of 4: round(10 * 0.75) = 8 (7.5 to even), round(6.5) = 6, at least one.
    kernel = np.arange(1, 41, dtype="float32").reshape(40, 1)
    for scope in ("layerwise", "global"):
        targets = lth_keras.Targets(structure=Blocks(4), scope=scope)
        mask = targets.prune(_model(kernel), np.random.default_rng(0), sparsity=sparsity)
        assert int(mask["d/kernel"].sum()) == 4 * blocks, scope
        assert mask["d/kernel"][-4 * blocks :].all()  # the largest blocks are the last


def test_config_round_trip_and_the_default_config_is_unchanged():
    assert Blocks(4).get_config() == {"size": 4}
    for structure in (Blocks(4), Blocks(16, pooling="max")):
        again = type(structure).from_config(structure.get_config())
        assert (again.size, again.pooling) == (structure.size, structure.pooling)
    config = {"name": "block:1x4", "config": {"size": 4, "pooling": "avg"}}
    assert get_structure(config).pooling == "avg"
    assert get_structure("block:1x8").pooling == "rms"


def test_invalid_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling='AVG'"):
        Blocks(4, pooling="AVG")
