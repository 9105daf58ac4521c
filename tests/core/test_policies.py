"""Scores, structures and resets: serializable policies; strings are shorthands."""

import numpy as np
import pytest
from helpers import compile_model, mlp

import lth_keras
from lth_keras import callbacks, pruning

POLICIES = [
    (pruning.get_score, "magnitude", pruning.Magnitude),
    (pruning.get_score, "random", pruning.Random),
    (pruning.get_structure, "unstructured", pruning.Unstructured),
    (callbacks.get_reset, "rewind", callbacks.Rewind),
    (callbacks.get_reset, "lr_rewind", callbacks.LearningRateRewind),
    (callbacks.get_reset, "finetune", callbacks.FineTune),
    (callbacks.get_reset, "reinit", callbacks.Reinitialize),
]


@pytest.mark.parametrize("get, name, cls", POLICIES, ids=[p[1] for p in POLICIES])
def test_names_instances_and_configs_round_trip(get, name, cls):
    policy = get(name)
    assert type(policy) is cls and policy.name == name
    assert get(policy) is policy
    assert cls.from_config(policy.get_config()) == policy
    assert get({"name": name, "config": policy.get_config()}) == policy


@pytest.mark.parametrize(
    "get, argument",
    [
        (pruning.get_score, "method"),
        (pruning.get_structure, "structure"),
        (callbacks.get_reset, "reset"),
    ],
)
def test_unknown_names_are_refused(get, argument):
    with pytest.raises(
        ValueError, match=f"invalid value for `{argument}`.*Received: {argument}='x'"
    ):
        get("x")


def test_pruner_takes_policy_objects_and_strings():
    by_name = lth_keras.LotteryPruner(method="random", reset="finetune")
    by_object = lth_keras.LotteryPruner(method=pruning.Random(), reset=callbacks.FineTune())
    assert by_name.method == by_object.method == pruning.Random()
    assert by_name.reset == by_object.reset == callbacks.FineTune()
    assert by_name.structure == pruning.Unstructured()


def test_late_resetting_follows_the_reset_policy():
    with pytest.raises(ValueError, match="reset='finetune' does not use a rewind point"):
        lth_keras.LotteryPruner(reset=callbacks.FineTune(), rewind_iteration=10)
    lth_keras.LotteryPruner(reset=callbacks.LearningRateRewind(), rewind_iteration=10)


class LargestPruned(pruning.Score):
    """A test score that keeps the smallest weights (the opposite of magnitude)."""

    def scores(self, kernels, masks):
        return {k: 1.0 / (1e-12 + np.abs(v)) for k, v in kernels.items()}


def test_a_new_score_plugs_into_the_pruner(data):
    x, y = data
    model = compile_model(mlp())
    pruner = lth_keras.LotteryPruner(rate=0.25, method=LargestPruned())
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    trained = lth_keras.masks.get_kernels(model)
    model.fit(x, y, epochs=0, callbacks=[pruner], verbose=0)
    mask = lth_keras.get_masks(model)["fc1/kernel"]
    kept, pruned = np.abs(trained["fc1/kernel"][mask]), np.abs(trained["fc1/kernel"][~mask])
    assert pruned.size == 48  # round_half_up(0.25 * 192)
    assert pruned.min() >= kept.max()


def test_targets_select_layerwise_or_pooled():
    weights = {"a": np.array([0.9, 0.1]), "b": np.array([0.2, 0.8])}
    masks = {k: np.ones(2, bool) for k in weights}
    structure = pruning.Unstructured()
    pooled = structure.select(weights, masks, pruning.PruneTargets({"a": 0.5, "b": 0.5}, 0.5))
    layerwise = structure.select(weights, masks, pruning.PruneTargets({"a": 0.5}))
    assert pooled["a"].tolist() == [True, False] and pooled["b"].tolist() == [False, True]
    assert layerwise["a"].tolist() == [True, False] and layerwise["b"].all()


def test_registry_refuses_duplicate_names():
    with pytest.raises(ValueError, match="already registered"):

        @pruning.SCORES.register("magnitude")
        class Other(pruning.Score):
            pass
