"""Pruned weights stay exactly zero under every Keras optimizer (issue 26).

Every optimizer class `keras.optimizers` exports is discovered (so a new
Keras optimizer is covered) and trained on a pruned model in float32 and
under mixed precision, across a round change (prune, rewind, optimizer
reset), checking after every batch that every pruned weight is exactly
zero. On TensorFlow and PyTorch a constraint masks after every update, so
all of them pass; on JAX an optimizer that mixes the entries of an update
(Muon) is refused with an error naming it.
"""

import inspect

import keras
import numpy as np
import pytest
from helpers import numpy

import lth_keras
from lth_keras.exactness import moves_pruned_weights

_WRAPPERS = {"LossScaleOptimizer", "MultiOptimizer", "Optimizer"}


def _discovered():
    return sorted(
        name
        for name, cls in vars(keras.optimizers).items()
        if inspect.isclass(cls)
        and issubclass(cls, keras.optimizers.Optimizer)
        and name not in _WRAPPERS
    )


class MixingSGD(keras.optimizers.SGD):
    """A user's optimizer whose update mixes entries: every weight gets the mean gradient too."""

    def update_step(self, gradient, variable, learning_rate):
        lr = keras.ops.cast(learning_rate, variable.dtype)
        gradient = keras.ops.cast(gradient, variable.dtype)
        self.assign_sub(variable, lr * (gradient + keras.ops.mean(gradient)))


def _make(name):
    if name == "MixingSGD":
        return MixingSGD(0.05)
    if name == "LossScaleOptimizer":
        return keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2))
    return getattr(keras.optimizers, name)()


class ZeroCheck(keras.callbacks.Callback):
    """After every batch: pruned weights exactly zero, in storage and in the forward pass."""

    def __init__(self, masks, x):
        super().__init__()
        self.masks, self.x, self.batches, self.bad = masks, x, 0, []

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        for key, _, weight in lth_keras.masks.prunable_entries(self.model):
            value = numpy(weight.variable)
            if np.any(value[~self.masks[key]] != 0):
                self.bad.append((self.batches, key, float(np.abs(value[~self.masks[key]]).max())))


def _train(optimizer, policy, x, y):
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((12,)),
                keras.layers.Dense(16, activation="relu", name="fc1"),
                keras.layers.Dense(8, activation="relu", name="fc2"),
                keras.layers.Dense(3, name="out"),
            ]
        )
        lth_keras.prunable(model)
        rng = np.random.default_rng(1)
        masks = {k: rng.random(m.shape) < 0.5 for k, m in lth_keras.get_masks(model).items()}
        lth_keras.set_masks(model, masks)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        pruner = lth_keras.LotteryPruner(rate=0.3)
        check = ZeroCheck(masks, x)
        model.fit(x, y, batch_size=16, epochs=2, callbacks=[pruner, check], verbose=0)
        check.masks = lth_keras.get_masks(model)  # unchanged so far
        model.fit(x, y, batch_size=16, epochs=0, callbacks=[pruner], verbose=0)  # next round
        check.masks = lth_keras.get_masks(model)
        model.fit(x, y, batch_size=16, epochs=1, callbacks=[pruner, check], verbose=0)
        return model, check
    finally:
        keras.config.set_dtype_policy("float32")


CASES = [(name, policy) for name in _discovered() for policy in ("float32", "mixed_float16")]
CASES += [("LossScaleOptimizer", "float32"), ("MixingSGD", "float32")]


@pytest.mark.parametrize("name, policy", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_pruned_weights_stay_zero_after_every_batch(name, policy, data):
    x, y = data
    optimizer = _make(name)
    if keras.backend.backend() == "jax" and moves_pruned_weights(optimizer):
        refused = rf"{type(optimizer).__name__}\)? moves pruned weights"
        with pytest.raises(ValueError, match=refused):
            _train(optimizer, policy, x, y)
        return
    model, check = _train(optimizer, policy, x, y)
    assert check.batches == 18  # 96 samples, batch 16: 12 batches, then 6 after the round change
    assert check.bad == []
    if name != "Adafactor":  # see test_adafactor_divergence_is_reported
        for _, _, weight in lth_keras.masks.prunable_entries(model):
            assert np.isfinite(numpy(weight.variable)).all()
    remaining = lth_keras.weights_remaining(model)[0]
    assert remaining < 0.5  # the round change pruned


def test_the_probe_finds_the_optimizers_that_mix():
    mixing = {name for name in _discovered() if moves_pruned_weights(_make(name))}
    assert mixing == {"Adafactor", "Muon"}
    assert moves_pruned_weights(MixingSGD())
    assert not moves_pruned_weights(_make("LossScaleOptimizer"))


def _select(variable):
    return keras.optimizers.Adam(1e-2) if "fc2" in variable.path else keras.optimizers.SGD(0.1)


def test_multi_optimizer_keeps_zeros(data):
    x, y = data
    model, check = _train(keras.optimizers.MultiOptimizer(_select), "float32", x, y)
    assert check.batches == 18 and check.bad == []


class NaNSGD(keras.optimizers.SGD):
    """Turns every update into NaN, as Keras' Adafactor does where it divides 0 by 0."""

    def update_step(self, gradient, variable, learning_rate):
        self.assign(variable, variable * float("nan"))


def test_nan_weights_after_training_are_reported(data):
    x, y = data
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(3, name="fc")])
    lth_keras.prunable(model)
    model.compile(NaNSGD(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if keras.backend.backend() == "jax":  # refused before training, as it moves pruned weights
        with pytest.raises(ValueError, match="NaNSGD moves pruned weights"):
            model.fit(x, y, epochs=1, callbacks=[lth_keras.LotteryPruner()], verbose=0)
        return
    with pytest.warns(UserWarning, match="fc/kernel holds NaN or infinite weights after training"):
        model.fit(x, y, epochs=1, callbacks=[lth_keras.LotteryPruner()], verbose=0)
