"""Training a masked model without `fit`: the loops of each backend (README "Training without fit").

Each loop is the one a Keras 3 user writes on that backend; pruned weights
stay exactly zero after every step and the kept weights train.
"""

import keras
import numpy as np
import pytest
from helpers import numpy

import lth_keras

BACKEND = keras.backend.backend()


def _model_and_masks():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu", name="fc1"),
            keras.layers.Dense(3, name="out"),
        ]
    )
    lth_keras.prunable(model)
    rng = np.random.default_rng(0)
    masks = {k: rng.random(m.shape) < 0.5 for k, m in lth_keras.get_masks(model).items()}
    lth_keras.set_masks(model, masks)
    return model, masks


def _check(model, masks, before):
    for key, value in lth_keras.masks.get_kernels(model).items():
        assert np.all(value[~masks[key]] == 0), key
        assert not np.array_equal(value[masks[key]], before[key][masks[key]]), key


def _batches(data):
    x, y = data
    for start in range(0, 96, 16):
        yield x[start : start + 16], y[start : start + 16]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the tf.GradientTape loop")
def test_gradient_tape_loop(data):
    import tensorflow as tf

    model, masks = _model_and_masks()
    before = lth_keras.masks.get_kernels(model)
    optimizer = keras.optimizers.Muon(learning_rate=0.05)  # mixes entries: the constraint masks
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)

    for x, y in _batches(data):
        step(x, y)
        for key, value in lth_keras.masks.get_kernels(model).items():
            assert np.all(value[~masks[key]] == 0), key
    _check(model, masks, before)


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX stateless loop")
@pytest.mark.parametrize("name", ["Adam", "Muon"])
def test_jax_stateless_loop(data, name):
    import jax

    model, masks = _model_and_masks()
    before = lth_keras.masks.get_kernels(model)
    optimizer = getattr(keras.optimizers, name)(learning_rate=0.05)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss_and_updates(trainable, non_trainable, x, y):
        outputs, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, outputs), non_trainable

    @jax.jit
    def step(state, x, y):
        trainable, non_trainable, optimizer_state = state
        (_, non_trainable), grads = jax.value_and_grad(loss_and_updates, has_aux=True)(
            trainable, non_trainable, x, y
        )
        trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
        # Exact for any optimizer (Muon mixes entries): mask after the update.
        trainable = lth_keras.masks.apply_masks_stateless(model, trainable, non_trainable)
        return trainable, non_trainable, optimizer_state

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    for x, y in _batches(data):
        state = step(state, x, y)
        for key, _, weight in lth_keras.masks.prunable_entries(model):
            value = np.asarray(state[0][index[id(weight.variable)]])
            assert np.all(value[~masks[key]] == 0), key
    for variable, value in zip(model.trainable_variables, state[0], strict=True):
        variable.assign(value)
    _check(model, masks, before)


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch loop")
def test_torch_loop(data):
    import torch

    model, masks = _model_and_masks()
    before = lth_keras.masks.get_kernels(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    for x, y in _batches(data):
        optimizer.zero_grad()
        loss = loss_fn(model(torch.as_tensor(x), training=True), torch.as_tensor(y).long())
        loss.backward()
        optimizer.step()
        for key, value in lth_keras.masks.get_kernels(model).items():
            assert np.all(value[~masks[key]] == 0), key
    _check(model, masks, before)


def test_apply_masks_stateless_zeroes_pruned_values():
    model, masks = _model_and_masks()
    trainable = [keras.ops.ones(v.shape) for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    out = lth_keras.masks.apply_masks_stateless(model, trainable, non_trainable)
    by_id = {id(v): numpy(o) for v, o in zip(model.trainable_variables, out, strict=True)}
    for key, _, weight in lth_keras.masks.prunable_entries(model):
        np.testing.assert_array_equal(by_id[id(weight.variable)], masks[key].astype("float32"))
    assert np.all(by_id[id(model.get_layer("fc1").bias)] == 1)  # biases untouched
