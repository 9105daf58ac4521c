"""Scores at initialisation: SNIP, GraSP and SynFlow against hand-derived values."""

import keras
import numpy as np
import pytest
from helpers import compile_model, mlp, numpy, stored

import lth_keras
from lth_keras import masks as masks_lib
from lth_keras import pruning, saliency
from lth_keras.pruning import prune_count
from lth_keras.saliency import gradients

SIZES = {"fc1/kernel": 12 * 16, "fc2/kernel": 16 * 8, "out/kernel": 8 * 3}


def dense(units, inputs, name="d", **kwargs):
    return lth_keras.prunable(
        keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(units, name=name, **kwargs)])
    )


def state(model):
    return masks_lib.get_kernels(model), masks_lib.get_masks(model)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 4)).astype("float32"), rng.integers(0, 3, size=6)


def test_snip_is_abs_gradient_times_weight_with_the_mask_applied(batch):
    x, _ = batch
    target = np.random.default_rng(1).normal(size=(6, 3)).astype("float32")
    model = dense(3, 4)
    mask = np.ones((4, 3), bool)
    mask[0, 0] = mask[2, 1] = False
    masks_lib.set_masks(model, {"d/kernel": mask})
    score = saliency.Snip(data=(x, target), loss="mean_squared_error")
    score.bind(model)
    got = score.scores(*state(model))["d/kernel"]
    w = numpy(stored(model.get_layer("d"))).astype(float)  # zero where pruned
    b = numpy(model.get_layer("d").bias).astype(float)
    # L = mean over the N * c entries of (x W + b - t)^2.
    grad = 2.0 / target.size * x.T.astype(float) @ (x @ w + b - target)
    np.testing.assert_allclose(got, np.abs(grad * w), rtol=1e-5, atol=1e-7)
    assert got[0, 0] == got[2, 1] == 0.0


@pytest.mark.parametrize("temperature", [1.0, 200.0], ids=["t1", "t200"])
def test_grasp_hessian_gradient_of_linear_softmax(temperature, batch):
    x, y = batch
    model = dense(3, 4, use_bias=False)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    score = saliency.GraSP(data=(x, y), temperature=temperature, loss=loss)
    score.bind(model)
    kernels, masks = state(model)
    w, xs = kernels["d/kernel"].astype(float), x.astype(float)
    p = softmax(xs @ w / temperature)
    n, t2 = len(x), temperature**2
    g = xs.T @ (p - np.eye(3)[y]) / (n * temperature)
    # The Hessian of the mean cross-entropy in vec(W) (row-major: W[i, k]).
    blocks = [
        np.kron(np.outer(xn, xn), np.diag(pn) - np.outer(pn, pn))
        for xn, pn in zip(xs, p, strict=True)
    ]
    hessian = sum(blocks) / (n * t2)
    hg = (hessian @ g.reshape(-1)).reshape(w.shape)
    got = score.hessian_gradient(kernels, masks)["d/kernel"]
    np.testing.assert_allclose(got, hg, rtol=1e-4, atol=1e-6 * np.abs(hg).max())
    signed = score.signed_scores(kernels, masks)["d/kernel"]
    np.testing.assert_allclose(signed, w * hg, rtol=1e-4, atol=1e-6 * np.abs(w * hg).max())
    # Ranks keep the order: the highest w * Hg survives.
    ranks = score.scores(kernels, masks)["d/kernel"]
    assert sorted(ranks.ravel()) == list(range(1, 13))
    np.testing.assert_array_equal(np.argsort(ranks, axis=None), np.argsort(signed, axis=None))


def test_grasp_keeps_the_highest_theta_hg(batch):
    x, y = batch
    model = dense(3, 4, use_bias=False)
    score = saliency.GraSP(data=(x, y), loss="sparse_categorical_crossentropy")
    kernels, masks = state(model)
    score.bind(model)
    signed = score.signed_scores(kernels, masks)["d/kernel"]
    saliency.prune_at_init(model, score, 0.5)
    kept = lth_keras.get_masks(model)["d/kernel"]
    assert kept.sum() == 6 and signed[kept].min() > signed[~kept].max()


def test_synflow_r_and_scores_of_a_two_layer_chain():
    model = lth_keras.prunable(
        keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4, activation="relu", name="a", bias_initializer="ones"),
                keras.layers.BatchNormalization(epsilon=0.0),
                keras.layers.Dense(2, name="b", bias_initializer="ones"),
            ]
        )
    )
    kernels, masks = state(model)
    masks["a/kernel"][1, 2] = False
    w1 = np.abs(kernels["a/kernel"]).astype(float) * masks["a/kernel"]
    w2 = np.abs(kernels["b/kernel"]).astype(float)
    r, grads = gradients.synaptic_flow(model, kernels, masks)
    # R = 1ᵀ |W1| |W2| 1: biases are zeroed, BatchNorm is the identity.
    np.testing.assert_allclose(r, np.ones(3) @ w1 @ w2 @ np.ones(2), rtol=1e-5)
    expected = np.outer(np.ones(3), w2.sum(1)) * masks["a/kernel"]
    np.testing.assert_allclose(grads["a/kernel"], expected, rtol=1e-5)
    np.testing.assert_allclose(grads["b/kernel"], np.outer(w1.sum(0), np.ones(2)), rtol=1e-5)
    synflow = saliency.SynFlow(iterations=1)
    synflow.bind(model)
    scores = synflow.scores(kernels, masks)
    np.testing.assert_allclose(scores["a/kernel"], w1 * w2.sum(1)[None, :], rtol=1e-5)
    np.testing.assert_allclose(scores["b/kernel"], w1.sum(0)[:, None] * w2, rtol=1e-5)


SCORE_FACTORIES = {
    "magnitude": lambda data: pruning.Magnitude(),
    "random": lambda data: pruning.Random(),
    "snip": lambda data: saliency.Snip(data=data),
    "grasp": lambda data: saliency.GraSP(data=data),
    "synflow": lambda data: saliency.SynFlow(iterations=4),
}


@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("name", list(SCORE_FACTORIES))
def test_one_shot_pruning_hits_the_count_exactly(name, scope, data):
    x, y = data
    model = compile_model(mlp())
    score = SCORE_FACTORIES[name]((x[:32], y[:32]))
    new = saliency.prune_at_init(model, score, 0.7, scope=scope, rng=0)
    counts = {k: int(m.sum()) for k, m in lth_keras.get_masks(model).items()}
    assert counts == {k: int(m.sum()) for k, m in new.items()}
    if scope == "layerwise":
        assert counts == {k: n - prune_count(n, 0.7) for k, n in SIZES.items()}
    else:
        total = sum(SIZES.values())
        assert sum(counts.values()) == total - prune_count(total, 0.7)
    for layer in lth_keras.masked_layers(model):
        mask = new[f"{layer.name}/kernel"]
        assert np.all(numpy(stored(layer))[~mask] == 0)


def test_synflow_steps_shrink_masks_toward_the_round_target(data):
    model = compile_model(mlp())
    kernels, masks = state(model)
    synflow = saliency.SynFlow(iterations=3)
    synflow.bind(model)
    targets = pruning.PruneTargets({"fc1/kernel": 0.5, "fc2/kernel": 0.5})
    seen = []
    structure = pruning.Unstructured()
    original = structure.select

    def select(scores, old, step_targets):
        new = original(scores, old, step_targets)
        seen.append({k: int(v.sum()) for k, v in new.items()})
        return new

    structure.select = select
    synflow.prune(kernels, masks, targets, structure, np.random.default_rng(0))
    n = SIZES["fc1/kernel"]
    kept = [n - prune_count(n, 1 - 0.5 ** (k / 3)) for k in (1, 2)] + [n - prune_count(n, 0.5)]
    assert [s["fc1/kernel"] for s in seen] == kept
    assert all(s["out/kernel"] == SIZES["out/kernel"] for s in seen)


@pytest.mark.parametrize("name", ["snip", "grasp", "synflow"])
def test_pruner_rounds_with_a_score_at_initialisation(name, data):
    x, y = data
    model = compile_model(mlp())
    method = {
        "snip": saliency.Snip(data=(x[:32], y[:32])),
        "grasp": saliency.GraSP(data=(x[:32], y[:32])),
        "synflow": saliency.SynFlow(iterations=3),
    }[name]
    pruner = lth_keras.LotteryPruner(rate=0.2, method=method)
    for _ in range(3):
        model.fit(x, y, epochs=1, batch_size=32, callbacks=[pruner], verbose=0)
    rates = {"fc1/kernel": 0.2, "fc2/kernel": 0.2, "out/kernel": 0.1}
    expected = dict(SIZES)
    for _ in range(2):
        expected = {k: n - prune_count(n, rates[k]) for k, n in expected.items()}
    assert {k: int(m.sum()) for k, m in lth_keras.get_masks(model).items()} == expected
    assert method.model is model


def test_scores_by_name_and_what_they_lack(data):
    x, y = data
    model = compile_model(mlp())
    pruner = lth_keras.LotteryPruner(method="snip")
    assert pruner.method == saliency.Snip()
    model.fit(x, y, epochs=1, batch_size=32, callbacks=[pruner], verbose=0)
    with pytest.raises(ValueError, match=r"needs a batch of training data.*Snip\(data=\(x, y\)\)"):
        model.fit(x, y, epochs=1, batch_size=32, callbacks=[pruner], verbose=0)
    with pytest.raises(ValueError, match=r"needs the model: call score.bind\(model\)"):
        saliency.GraSP(data=(x, y)).scores(*state(model))


def test_a_loss_is_needed(data):
    x, y = data
    model = mlp()  # not compiled
    with pytest.raises(ValueError, match="needs a loss: compile the model first"):
        saliency.prune_at_init(model, saliency.Snip(data=(x, y)), 0.5)
    with pytest.raises(ValueError, match="one output and one loss"):
        saliency.prune_at_init(model, saliency.Snip(data=(x, y), loss=["mse", "mse"]), 0.5)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    saliency.prune_at_init(model, saliency.Snip(data=(x, y), loss=loss), 0.5)
    full = {k: np.ones_like(m) for k, m in lth_keras.get_masks(model).items()}
    with pytest.raises(ValueError, match="keeps entries the model has pruned"):
        gradients.synaptic_flow(model, masks_lib.get_kernels(model), full)


def test_synflow_needs_an_input_shape():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = lth_keras.MaskedDense(2, name="fc")

        def call(self, x, training=None):
            return self.fc(x)

    model = Net()
    model(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match="needs the model's input shape"):
        saliency.prune_at_init(model, "synflow", 0.5)
    saliency.prune_at_init(model, saliency.SynFlow(iterations=2, input_shape=(3,)), 0.5)
    assert int(lth_keras.get_masks(model)["fc/kernel"].sum()) == 3


@pytest.mark.parametrize(
    "score",
    [
        saliency.Snip(loss="mse"),
        saliency.GraSP(temperature=100.0, loss=keras.losses.MeanSquaredError()),
        saliency.SynFlow(iterations=10, input_shape=(12,)),
    ],
    ids=["snip", "grasp", "synflow"],
)
def test_configs_round_trip(score):
    config = score.get_config()
    assert type(score).from_config(config) == score
    assert pruning.get_score({"name": score.name, "config": config}) == score


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: saliency.GraSP(temperature=0.0), "temperature=0.0"),
        (lambda: saliency.SynFlow(iterations=0), "iterations=0"),
        (lambda: saliency.prune_at_init(mlp(), "magnitude", 1.0), "sparsity=1.0"),
        (lambda: saliency.prune_at_init(mlp(), "magnitude", 0.5, scope="net"), "scope='net'"),
    ],
    ids=["temperature", "iterations", "sparsity", "scope"],
)
def test_invalid_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
