"""The models users bring, pruned in place on every backend (issue 23's table, a test per row).

Each model is built small, made `prunable`, and trained for two rounds of
`LotteryPruner(rate=0.5)`: every trainable weight of rank >= 2 is masked or
reported (positional table, layer of unknown type), never silently dense;
each kernel keeps exactly `n - prune_count(n, rate)` weights (the last
masked layer at half the rate) and its pruned weights are exactly zero.
"""

import warnings

import keras
import numpy as np
import pytest
from helpers import numpy

import lth_keras
from lth_keras.pruning import prune_count

keras_hub = pytest.importorskip("keras_hub")
BACKEND = keras.backend.backend()
SCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _prune_twice(model, x, y, run_eagerly=False, steps=None):
    """Masks `model`, trains two rounds; returns the warnings prunable() gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lth_keras.prunable(model) is model
    sizes = {k: m.size for k, m in lth_keras.get_masks(model).items()}
    rows = lth_keras.summary(model, print_fn=lambda line: None)
    for row in rows:  # nothing silently dense
        if len(row["shape"]) >= 2 and not row["masked"]:
            assert row["reason"].startswith(("positional", "unknown", "bias of")), row
    model.compile(keras.optimizers.Adam(1e-3), SCE, run_eagerly=run_eagerly)
    pruner = lth_keras.LotteryPruner(rate=0.5)
    for _ in range(2):
        fit = {"batch_size": 4, "epochs": 1, "steps_per_epoch": steps, "verbose": 0}
        model.fit(x, y, callbacks=[pruner], **fit)
    entries = lth_keras.masks.prunable_entries(model)
    last = entries[-1][1]
    for key, layer, weight in entries:
        mask = numpy(weight.mask)
        rate = 0.25 if layer is last else 0.5
        assert mask.sum() == sizes[key] - prune_count(sizes[key], rate), key
        assert np.all(numpy(weight.variable)[~mask] == 0), key
    return [str(w.message) for w in caught if "left" in str(w.message)], rows


def _labels(n=8):
    return np.random.default_rng(0).integers(0, 3, n)


def test_functional_model_with_operators_in_the_graph():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(6, activation="relu", name="a")(inputs)
    h = h + inputs  # an operator layer: every hand-written residual block
    h = keras.ops.tanh(h) * 2.0
    h = keras.layers.Dense(6, name="b")(h) + h
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    _prune_twice(model, x, _labels())
    assert list(lth_keras.get_masks(model)) == ["a/kernel", "b/kernel", "out/kernel"]


class Residual(keras.layers.Layer):
    """A user layer holding layers, with a trainable scale of its own (rank 1)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(units, activation="relu", name="inner")
        self.proj = keras.layers.Dense(units, name="proj")

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale + self.proj(self.inner(x))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.block = Residual(6, name="block")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x):
        return self.head(self.block(x))


def test_subclassed_model_with_a_layer_holding_layers():
    model = Subclassed()
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    model(x)
    _prune_twice(model, x, _labels())
    assert list(lth_keras.get_masks(model)) == [
        "block/inner/kernel",
        "block/proj/kernel",
        "head/kernel",
    ]


def test_nested_models_with_attention_and_einsum_dense():
    inputs = keras.Input((4, 6))
    attention = keras.layers.MultiHeadAttention(2, 3, name="mha")(inputs, inputs)
    inner_in = keras.Input((4, 6))
    inner = keras.Model(
        inner_in, keras.layers.EinsumDense("abc,cd->abd", (4, 5), name="einsum")(inner_in)
    )
    h = keras.layers.Flatten()(inner(attention + inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    x = np.random.default_rng(0).normal(size=(8, 4, 6)).astype("float32")
    _prune_twice(model, x, _labels())
    assert list(lth_keras.get_masks(model)) == [
        "mha/query/kernel",
        "mha/key/kernel",
        "mha/value/kernel",
        "mha/attention_output/kernel",
        "einsum/kernel",
        "out/kernel",
    ]


def test_recurrent_kernels_are_masked():
    inputs = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(20, 6, name="emb")(inputs)
    h = keras.layers.LSTM(6, return_sequences=True, name="lstm")(h)
    h = keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True), name="bi")(h)
    h = keras.layers.SimpleRNN(4, name="rnn")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    x = np.random.default_rng(0).integers(0, 20, (8, 5))
    _, rows = _prune_twice(model, x, _labels())
    keys = list(lth_keras.get_masks(model))
    assert "lstm/lstm_cell/recurrent_kernel" in keys and "rnn/simple_rnn_cell/kernel" in keys
    assert sum("recurrent_kernel" in k for k in keys) == 4  # LSTM, GRU both ways, SimpleRNN
    kernels = [r for r in rows if len(r["shape"]) >= 2 and not r["reason"].startswith("bias of")]
    assert all(r["masked"] for r in kernels)  # GRU's biases are of rank 2
    assert sum(not r["masked"] for r in rows if len(r["shape"]) >= 2) == 2  # forward, backward


def _text(n=8, length=8, vocabulary=50):
    rng = np.random.default_rng(0)
    return rng.integers(1, vocabulary, (n, length)), np.ones((n, length), "int32")


def _bert():
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=8,
    )
    head = keras.layers.Dense(3, name="head")(backbone.output["pooled_output"])
    tokens, padding = _text()
    x = {"token_ids": tokens, "segment_ids": np.zeros_like(tokens), "padding_mask": padding}
    return keras.Model(backbone.input, head), x


def _decoder(backbone):
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(backbone.output)
    tokens, padding = _text()
    model = keras.Model(backbone.input, keras.layers.Dense(3, name="head")(pooled))
    return model, {"token_ids": tokens, "padding_mask": padding}


def _gpt2():
    return _decoder(
        keras_hub.models.GPT2Backbone(
            vocabulary_size=50,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
            max_sequence_length=8,
        )
    )


def _gemma():
    return _decoder(
        keras_hub.models.GemmaBackbone(
            vocabulary_size=50,
            num_layers=2,
            num_query_heads=2,
            num_key_value_heads=1,
            hidden_dim=16,
            intermediate_dim=32,
            head_dim=8,
        )
    )


def _llama():
    return _decoder(
        keras_hub.models.LlamaBackbone(
            vocabulary_size=50,
            num_layers=2,
            num_query_heads=2,
            num_key_value_heads=1,
            hidden_dim=16,
            intermediate_dim=32,
        )
    )


def _vit():
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 1),
        patch_size=4,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )
    pooled = keras.layers.Lambda(lambda t: t[:, 0], name="class_token_out")(backbone.output)
    x = np.random.default_rng(0).random((8, 16, 16, 1)).astype("float32")
    return keras.Model(backbone.input, keras.layers.Dense(3, name="head")(pooled)), x


@pytest.mark.parametrize(
    "make, positional, unknown",
    [
        (_bert, ["position_embedding"], []),
        (_gpt2, ["position_embedding"], []),
        (_gemma, [], []),
        (_llama, [], []),
        (_vit, ["position_embedding"], ["class_token"]),
    ],
    ids=["BERT", "GPT-2", "Gemma", "Llama", "ViT"],
)
def test_keras_hub_transformers(make, positional, unknown):
    model, x = make()
    left, rows = _prune_twice(model, x, _labels())
    reported = [r["key"] for r in rows if not r["masked"] and len(r["shape"]) >= 2]
    assert sorted(k.split("/")[-2] for k in reported if "positional" in _reason(rows, k)) == (
        positional
    )
    assert [k.split("/")[-1] for k in reported if "unknown" in _reason(rows, k)] == unknown
    assert bool(left) == bool(unknown)  # prunable() warned about each unknown weight
    keys = list(lth_keras.get_masks(model))
    embedding = "patch_embedding/kernel" if unknown else "token_embedding/embeddings"
    assert any(k.endswith(embedding) for k in keys)
    assert sum("query" in k for k in keys) == 2  # one per layer


def _reason(rows, key):
    return next(r["reason"] for r in rows if r["key"] == key)


def test_tied_embedding_is_masked_once():
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=50,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
        head_dim=8,
    )
    embedding = backbone.get_layer("token_embedding")
    assert embedding.tie_weights
    tokens, padding = _text()
    logits = embedding(backbone.output, reverse=True)  # the tied output projection
    model = keras.Model(backbone.input, keras.layers.GlobalAveragePooling1D()(logits))
    lth_keras.prunable(model)
    keys = [k for k in lth_keras.get_masks(model) if "embedding" in k]
    assert keys == ["token_embedding/embeddings"]
    mask = np.ones((50, 16), bool)
    mask[:, ::2] = False
    lth_keras.set_masks(model, {"token_embedding/embeddings": mask})
    x = {"token_ids": tokens, "padding_mask": padding}
    plain = lth_keras.strip_masks(model)
    np.testing.assert_allclose(
        numpy(model(x)), numpy(plain(x)), rtol=1e-5, atol=1e-6
    )  # both uses read the masked matrix


_APPLICATIONS = pytest.mark.skipif(
    BACKEND == "jax",
    reason="keras.applications models build op by op on JAX (17-33 s each); "
    "benchmarks/coverage.py covers them there",
)


@_APPLICATIONS
@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.applications.MobileNetV3Small(
            input_shape=(32, 32, 3), weights=None, classes=3, classifier_activation=None
        ),
        pytest.param(
            lambda: keras.applications.ConvNeXtTiny(
                input_shape=(32, 32, 3), weights=None, classes=3, classifier_activation=None
            ),
            marks=[
                pytest.mark.slow,
                pytest.mark.skipif(BACKEND != "tensorflow", reason="28M weights: TensorFlow only"),
            ],
        ),
    ],
    ids=["MobileNetV3Small", "ConvNeXtTiny"],
)
def test_keras_applications_with_operator_layers(make):
    model = make()
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32") * 255
    # Eager: tracing these graphs costs 20-40 s, more than the two steps.
    _, rows = _prune_twice(model, x, _labels(4), run_eagerly=True, steps=1)
    masked = sum(r["size"] for r in rows if r["masked"])
    assert masked / sum(r["size"] for r in rows) > 0.95
