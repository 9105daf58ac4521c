"""The shuffle control: each kernel's mask permuted, its count kept."""

import types

import numpy as np
import pytest
from helpers import mlp

import lth_keras
from lth_keras import pruning
from lth_keras.experiments import arms


@pytest.fixture
def ticket():
    rng = np.random.default_rng(3)
    return {
        "a": rng.random((6, 5)) < 0.3,
        "b": rng.random(40) < 0.5,
        "full": np.ones((2, 3), bool),
        "empty": np.zeros(4, bool),
    }


def test_shuffle_keeps_counts_and_moves_positions(ticket):
    before = {k: m.copy() for k, m in ticket.items()}
    shuffled = pruning.shuffle_masks(ticket, np.random.default_rng(0))
    for key, mask in ticket.items():
        assert shuffled[key].dtype == bool and shuffled[key].shape == mask.shape
        assert shuffled[key].sum() == mask.sum()
        np.testing.assert_array_equal(mask, before[key])  # inputs untouched
    assert not np.array_equal(shuffled["a"], ticket["a"])
    assert not np.array_equal(shuffled["b"], ticket["b"])
    assert shuffled["full"].all() and not shuffled["empty"].any()
    again = pruning.shuffle_masks(ticket, np.random.default_rng(0))
    assert all(np.array_equal(again[k], shuffled[k]) for k in ticket)


def test_shuffle_arm_shuffles_the_ticket_within_each_layer():
    arm = arms.ARMS.get("shuffle")
    assert isinstance(arm, arms.Shuffle) and arm.key() == 3 and "shuffle" in arms.CONTROLS
    model = mlp()
    rng = np.random.default_rng(1)
    ticket = {k: rng.random(m.shape) < 0.4 for k, m in lth_keras.get_masks(model).items()}
    config = types.SimpleNamespace(seed=7)
    arm.prepare(model, ticket, config, round_=2)
    masks = lth_keras.get_masks(model)
    for key, mask in ticket.items():
        assert masks[key].sum() == mask.sum()
        assert not np.array_equal(masks[key], mask)
    other = mlp()
    arm.prepare(other, ticket, config, round_=2)  # same seed, same masks
    assert all(np.array_equal(lth_keras.get_masks(other)[k], masks[k]) for k in masks)
