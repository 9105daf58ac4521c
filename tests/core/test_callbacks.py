"""LotteryPruner: rounds, resets, invariants, strategies, errors."""

import keras
import numpy as np
import pytest
from helpers import Probe, compile_model, layerwise_counts, mlp, stored

import lth_keras
from lth_keras.pruning import prune_count

SIZES = {"fc1/kernel": 12 * 16, "fc2/kernel": 16 * 8, "out/kernel": 8 * 3}
RATES = {"fc1/kernel": 0.2, "fc2/kernel": 0.2, "out/kernel": 0.1}


def expected_counts(rounds, rates=RATES):
    return layerwise_counts(SIZES, rates, rounds)


def kernels(model):
    return {
        f"{layer.name}/kernel": stored(layer).numpy().copy()
        for layer in lth_keras.masked_layers(model)
    }


def initial(model, name="kernel"):
    return {
        f"{layer.name}/{name}": getattr(layer, f"{name}_initial").numpy().copy()
        for layer in lth_keras.masked_layers(model)
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rate": 1.0}, r"expected a float in \(0, 1\). Received: rate=1.0"),
        ({"rate": 0.0}, "Received: rate=0.0"),
        ({"output_rate": 1.2}, "output_rate=1.2"),
        ({"layer_rates": {"fc1": 2.0}}, r"layer_rates\['fc1'\]=2.0"),
        ({"epochs_per_round": 0}, "epochs_per_round=0"),
        ({"max_rounds": 0}, "max_rounds=0"),
        ({"target_sparsity": 1.0}, "target_sparsity=1.0"),
        ({"scope": "net"}, "scope='net'"),
        ({"method": "l1"}, "method='l1'"),
        ({"reset": "none"}, "reset='none'"),
        ({"rewind_epoch": -1}, "rewind_epoch=-1"),
        ({"scope": "global", "output_rate": 0.1}, "apply to layerwise pruning"),
        ({"scope": "global", "layer_rates": {"Dense": 0.1}}, "apply to layerwise pruning"),
        ({"rewind_epoch": 1, "rewind_iteration": 5}, "at most one of"),
        ({"reset": "finetune", "rewind_iteration": 5}, "does not use a rewind point"),
        ({"reset": "reinit", "rewind_epoch": 1}, "does not use a rewind point"),
        ({"epochs_per_round": 2, "rewind_epoch": 2}, "must fall inside round 0"),
    ],
    ids=[
        "rate-1",
        "rate-0",
        "output-rate",
        "layer-rate",
        "epochs-per-round",
        "max-rounds",
        "target",
        "scope",
        "method",
        "reset",
        "rewind-epoch",
        "global-output",
        "global-layer-rates",
        "two-rewind-points",
        "finetune-late",
        "reinit-late",
        "rewind-after-round",
    ],
)
def test_invalid_arguments(kwargs, match):
    kwargs = {"rate": 0.2, **kwargs}
    with pytest.raises(ValueError, match=match):
        lth_keras.LotteryPruner(**kwargs)


def test_model_without_masked_layers_is_rejected(data):
    x, y = data
    model = compile_model(keras.Sequential([keras.Input((12,)), keras.layers.Dense(3)]))
    with pytest.raises(ValueError, match=r"Call lth_keras.prunable\(model\) first"):
        model.fit(x, y, epochs=1, callbacks=[lth_keras.LotteryPruner()], verbose=0)


def test_unknown_layer_rate_key_is_rejected_before_training(data):
    x, y = data
    model = compile_model(mlp())
    pruner = lth_keras.LotteryPruner(layer_rates={"conv9": 0.1})
    with pytest.raises(ValueError, match="'conv9'.*fc1"):
        model.fit(x, y, epochs=1, callbacks=[pruner], verbose=0)


OPTIMIZERS = {
    "sgd-momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(0.02),
    "adamw": lambda: keras.optimizers.AdamW(0.02, weight_decay=0.1),
    "adam-ema": lambda: keras.optimizers.Adam(0.02, use_ema=True, ema_overwrite_frequency=4),
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS), ids=list(OPTIMIZERS))
def test_rounds_per_fit_exact_invariants(optimizer, data):
    x, y = data
    model = compile_model(mlp(), OPTIMIZERS[optimizer]())
    pruner, probe = lth_keras.LotteryPruner(rate=0.2), Probe()
    start_kernels = kernels(model)
    start_biases = {
        f"{lay.name}/bias": lay.bias.numpy().copy() for lay in lth_keras.masked_layers(model)
    }
    previous = lth_keras.get_masks(model)
    for r in range(4):
        model.fit(x, y, epochs=2, batch_size=16, callbacks=[pruner, probe], verbose=0)
        state = probe.states[-3]  # at train_begin of this fit, after the pruner
        masks = state["masks"]
        assert {k: int(m.sum()) for k, m in masks.items()} == expected_counts(r)
        for k in masks:
            assert not np.any(masks[k] & ~previous[k])  # masks only shrink
            layer = k.split("/")[0]
            # Rewound: survivors equal the initial values bit for bit, pruned are 0.
            np.testing.assert_array_equal(
                _by_suffix(state["weights"], k), np.where(masks[k], start_kernels[k], 0)
            )
            np.testing.assert_array_equal(
                _by_suffix(state["weights"], f"{layer}/bias"), start_biases[f"{layer}/bias"]
            )
        assert state["iterations"] == 0
        assert all(np.all(s == 0) for s in state["slots"])
        # After training, pruned weights are still exactly zero and survivors moved.
        trained = kernels(model)
        for k, m in masks.items():
            assert np.all(trained[k][~m] == 0)
            assert np.any(trained[k][m] != start_kernels[k][m])
        previous = masks
    assert [h["round"] for h in pruner.history] == [0, 1, 2, 3]
    counts = expected_counts(3)
    assert pruner.history[-1]["weights_remaining"] == sum(counts.values()) / sum(SIZES.values())
    assert pruner.history[-1]["layers"]["fc1/kernel"] == counts["fc1/kernel"] / SIZES["fc1/kernel"]
    assert pruner.history[-1]["epochs"] == 2


def _by_suffix(weights, suffix):
    (value,) = [v for path, v in weights.items() if path.endswith("/" + suffix)]
    return value


def test_rewind_restores_batchnorm_and_plain_weights(data):
    x, y = data
    model = compile_model(mlp(batch_norm=True))
    pruner, probe = lth_keras.LotteryPruner(), Probe()
    model.fit(x, y, epochs=2, batch_size=16, callbacks=[pruner, probe], verbose=0)
    start = probe.states[0]["weights"]
    bn = model.get_layer("bn")
    trained = [w.numpy().copy() for w in bn.weights]
    model.fit(x, y, epochs=0, callbacks=[pruner, probe], verbose=0)
    after = probe.states[-1]["weights"]
    for w, moved in zip(bn.weights, trained, strict=True):
        assert not np.array_equal(moved, start[w.path]), w.path  # training moved it
        np.testing.assert_array_equal(after[w.path], start[w.path], err_msg=w.path)


class _RecordAt(keras.callbacks.Callback):
    """Records the kernels when the optimizer reaches `step` (batch hook)."""

    def __init__(self, step):
        super().__init__()
        self.step, self.kernels = step, None

    def on_train_batch_end(self, batch, logs=None):
        if self.kernels is None and int(self.model.optimizer.iterations.numpy()) == self.step:
            self.kernels = kernels(self.model)


def test_late_rewinding_to_an_iteration(data):
    x, y = data
    model = compile_model(mlp())
    pruner, probe, record = lth_keras.LotteryPruner(rewind_iteration=3), Probe(), _RecordAt(3)
    model.fit(x, y, epochs=2, batch_size=16, callbacks=[pruner, record], verbose=0)
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner, probe], verbose=0)
    state = probe.states[0]
    assert state["iterations"] == 3
    for k, mask in state["masks"].items():
        np.testing.assert_array_equal(
            _by_suffix(state["weights"], k), np.where(mask, record.kernels[k], 0)
        )
        np.testing.assert_array_equal(
            _by_suffix(state["weights"], k + "_initial"), record.kernels[k]
        )


def test_late_rewinding_to_an_epoch_inside_one_fit(data):
    x, y = data
    model = compile_model(mlp())
    pruner = lth_keras.LotteryPruner(rewind_epoch=1, epochs_per_round=2, max_rounds=1)
    probe = Probe()
    model.fit(x, y, epochs=10, batch_size=16, callbacks=[pruner, probe], verbose=0)
    states = {s["where"]: s for s in probe.states}
    assert set(states) == {
        "train_begin",
        "epoch_begin_0",
        "epoch_begin_1",
        "epoch_begin_2",
        "epoch_begin_3",
    }  # stopped after round 1's two epochs
    after_epoch_0, round_1 = states["epoch_begin_1"], states["epoch_begin_2"]
    assert round_1["iterations"] == 6
    for k, mask in round_1["masks"].items():
        np.testing.assert_array_equal(
            _by_suffix(round_1["weights"], k),
            np.where(mask, _by_suffix(after_epoch_0["weights"], k), 0),
        )


def test_rewind_point_not_reached_is_an_error_and_changes_nothing(data):
    x, y = data
    model = compile_model(mlp())
    pruner = lth_keras.LotteryPruner(rewind_epoch=3)
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match="ended before its rewind point.*rewind_epoch=3"):
        model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    for w, b in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), b)


@pytest.mark.parametrize("reset", ["lr_rewind", "finetune"])
def test_keep_weight_resets(reset, data):
    x, y = data
    model = compile_model(mlp())
    pruner, probe = lth_keras.LotteryPruner(reset=reset), Probe()
    model.fit(x, y, epochs=2, batch_size=16, callbacks=[pruner], verbose=0)
    trained = kernels(model)
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner, probe], verbose=0)
    state = probe.states[0]
    for k, mask in state["masks"].items():
        np.testing.assert_array_equal(
            _by_suffix(state["weights"], k), np.where(mask, trained[k], 0)
        )
    assert state["iterations"] == (0 if reset == "lr_rewind" else 12)
    assert all(np.all(s == 0) for s in state["slots"])
    for k, mask in lth_keras.get_masks(model).items():
        assert np.all(kernels(model)[k][~mask] == 0)


def _reinit_run(data, seed):
    keras.utils.set_random_seed(0)
    x, y = data
    model = compile_model(mlp())
    pruner, probe = lth_keras.LotteryPruner(reset="reinit", seed=seed), Probe()
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    model.fit(x, y, epochs=0, callbacks=[pruner, probe], verbose=0)
    return model, probe.states[0]


def test_reinit_draws_new_masked_weights_reproducibly(data):
    model, state = _reinit_run(data, seed=3)
    start = initial(model)
    for k, mask in state["masks"].items():
        value = _by_suffix(state["weights"], k)
        assert np.all(value[~mask] == 0)
        assert not np.allclose(value[mask], start[k][mask])
        layer = k.split("/")[0]
        np.testing.assert_array_equal(
            _by_suffix(state["weights"], f"{layer}/bias"),
            _by_suffix(state["weights"], f"{layer}/bias_initial"),
        )
    _, again = _reinit_run(data, seed=3)
    _, other = _reinit_run(data, seed=4)
    for k in state["masks"]:
        np.testing.assert_array_equal(
            _by_suffix(state["weights"], k), _by_suffix(again["weights"], k)
        )
        assert not np.array_equal(_by_suffix(state["weights"], k), _by_suffix(other["weights"], k))


def test_epochs_per_round_stops_after_max_rounds_and_logs(data):
    x, y = data
    model = compile_model(mlp())
    pruner = lth_keras.LotteryPruner(epochs_per_round=2, max_rounds=3)
    history = model.fit(x, y, epochs=50, batch_size=16, callbacks=[pruner], verbose=0)
    assert len(history.history["loss"]) == 8
    assert history.history["pruning_round"] == [0, 0, 1, 1, 2, 2, 3, 3]
    fractions = history.history["weights_remaining"]
    assert fractions[0] == 1.0
    assert fractions[-1] == sum(expected_counts(3).values()) / sum(SIZES.values())
    assert [h["epochs"] for h in pruner.history] == [2, 2, 2, 2]
    assert {k: int(m.sum()) for k, m in lth_keras.get_masks(model).items()} == expected_counts(3)


def test_target_sparsity_stops_pruning(data):
    x, y = data
    model = compile_model(mlp())
    pruner = lth_keras.LotteryPruner(
        rate=0.5, output_rate=0.5, epochs_per_round=1, target_sparsity=0.7
    )
    model.fit(x, y, epochs=50, batch_size=16, callbacks=[pruner], verbose=0)
    remaining = [h["weights_remaining"] for h in pruner.history]
    assert remaining[-1] <= 0.3 < remaining[-2]
    assert len(remaining) == 3  # 1.0 -> 0.5 -> 0.25


def test_global_scope_prunes_the_pool(data):
    x, y = data
    model = compile_model(mlp())
    pruner = lth_keras.LotteryPruner(rate=0.3, scope="global", exclude=["out"])
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    trained = kernels(model)
    model.fit(x, y, epochs=0, callbacks=[pruner], verbose=0)
    masks = lth_keras.get_masks(model)
    pool = SIZES["fc1/kernel"] + SIZES["fc2/kernel"]
    assert masks["fc1/kernel"].sum() + masks["fc2/kernel"].sum() == pool - prune_count(pool, 0.3)
    assert masks["out/kernel"].all()
    pruned = np.concatenate([np.abs(trained[k][~masks[k]]) for k in ("fc1/kernel", "fc2/kernel")])
    kept = np.concatenate([np.abs(trained[k][masks[k]]) for k in ("fc1/kernel", "fc2/kernel")])
    assert pruned.max() <= kept.min()


def test_random_method_matches_magnitude_counts(data):
    x, y = data
    model = compile_model(mlp())
    pruner = lth_keras.LotteryPruner(method="random", seed=0)
    for _ in range(3):
        model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    masks = lth_keras.get_masks(model)
    assert {k: int(m.sum()) for k, m in masks.items()} == expected_counts(2)


class _TraceCounter(keras.layers.Layer):
    traces = 0

    def call(self, x):
        _TraceCounter.traces += 1
        return x


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "jit"])
def test_train_step_is_not_retraced_between_rounds(jit, data):
    if keras.backend.backend() == "torch":
        pytest.skip("Keras' torch trainer runs eagerly and refuses steps_per_execution > 1")
    if not jit and keras.backend.backend() != "tensorflow":
        pytest.skip("without jit_compile only TensorFlow traces a graph; JAX runs eagerly")
    x, y = data
    model = keras.Sequential(
        [
            keras.Input((12,)),
            lth_keras.MaskedDense(16, activation="relu"),
            _TraceCounter(),
            lth_keras.MaskedDense(3),
        ]
    )
    compile_model(model, jit_compile=jit, steps_per_execution=3)
    pruner = lth_keras.LotteryPruner(epochs_per_round=1, max_rounds=3)
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    traces = _TraceCounter.traces
    assert traces >= 1
    model.fit(x, y, epochs=10, batch_size=16, callbacks=[pruner], verbose=0)
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    assert _TraceCounter.traces == traces
    assert len(pruner.history) == 4
    for k, mask in lth_keras.get_masks(model).items():
        layer = model.get_layer(k.split("/")[0])
        assert np.all(stored(layer).numpy()[~mask] == 0)


def test_fit_start_mends_direct_kernel_writes(data):
    x, y = data
    model = compile_model(mlp())
    pruner = lth_keras.LotteryPruner(max_rounds=1)
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    layer = model.get_layer("fc1")
    stored(layer).assign(np.ones(stored(layer).shape))  # bypasses the masks
    mask = lth_keras.get_masks(model)["fc1/kernel"]
    model.fit(x, y, epochs=0, callbacks=[pruner], verbose=0)  # no pruning: max_rounds=1
    np.testing.assert_array_equal(lth_keras.get_masks(model)["fc1/kernel"], mask)
    np.testing.assert_array_equal(stored(layer).numpy(), mask.astype("float32"))


def test_recompiling_between_rounds_resets_the_new_optimizer(data):
    x, y = data
    model = compile_model(mlp())
    pruner, probe = lth_keras.LotteryPruner(), Probe()
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    compile_model(model, keras.optimizers.Adam(0.01))
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner, probe], verbose=0)
    assert probe.states[0]["iterations"] == 0
    assert len(pruner.history) == 2


def test_already_pruned_model_keeps_its_initial_weights(data):
    x, y = data
    model = compile_model(mlp())
    first = lth_keras.LotteryPruner()
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[first], verbose=0)
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[first], verbose=0)
    start = initial(model)
    second = lth_keras.LotteryPruner()
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[second], verbose=0)
    model.fit(x, y, epochs=0, callbacks=[second], verbose=0)
    for k, mask in lth_keras.get_masks(model).items():
        np.testing.assert_array_equal(kernels(model)[k], np.where(mask, start[k], 0))
    assert second.history[0]["weights_remaining"] < 1.0


def test_verbose_prints_one_line_per_round(data, capsys):
    x, y = data
    model = compile_model(mlp())
    pruner = lth_keras.LotteryPruner(verbose=1, max_rounds=1)
    for _ in range(3):
        model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    lines = [line for line in capsys.readouterr().out.splitlines() if "LotteryPruner" in line]
    assert lines[0].startswith("LotteryPruner: round 1: ")
    assert "fc1/kernel: 80.2%" in lines[0]
    assert "finished after round 1" in lines[1]
    assert len(lines) == 2


def test_layers_with_sublayers_are_snapshotted_and_rewound(data):
    x, y = data
    inputs = keras.Input((4, 3))
    h = keras.layers.MultiHeadAttention(2, 4, name="mha1")(inputs, inputs)
    h = keras.layers.MultiHeadAttention(2, 4, name="mha2")(h, h)
    outputs = keras.layers.Dense(3, name="out")(keras.layers.Flatten()(h))
    model = compile_model(lth_keras.prunable(keras.Model(inputs, outputs)))
    xs = x.reshape(96, 4, 3)
    pruner, probe = lth_keras.LotteryPruner(), Probe()
    model.fit(xs, y, epochs=1, batch_size=16, callbacks=[pruner, probe], verbose=0)
    start = probe.states[0]["weights"]
    model.fit(xs, y, epochs=0, callbacks=[pruner, probe], verbose=0)
    after = probe.states[-1]["weights"]
    attention = [
        p
        for p in start
        if ("/mha" in p or p.startswith("mha")) and not p.endswith(("_mask", "_initial"))
    ]
    assert len(attention) == 16  # query, key, value and output: kernel and bias, twice
    masks = {f"{k}": m for k, m in lth_keras.get_masks(model).items()}
    assert sum(k.startswith("mha") for k in masks) == 8  # every projection kernel is masked
    for path in attention:
        mask = next((m for k, m in masks.items() if path.endswith(k)), None)
        expected = start[path] if mask is None else np.where(mask, start[path], 0)
        np.testing.assert_array_equal(after[path], expected, err_msg=path)
