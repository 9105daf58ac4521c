"""Structured sparsity: whole units, blocks and N:M groups, exact over several rounds."""

import contextlib

import keras
import numpy as np
import pytest
from helpers import compile_model

import lth_keras
from lth_keras import pruning
from lth_keras.pruning import KernelLayout, PruneTargets, prune_count

DENSE = KernelLayout(-2, -1)
TRANSPOSE = KernelLayout(-1, -2)
EMBEDDING = KernelLayout(None, -1)
# (id, kernel shape, layout): Dense, Conv1D/2D/3D (..., in, out), ConvTranspose (..., out, in).
SHAPES = [
    ("dense", (16, 12), DENSE),
    ("conv1d", (3, 8, 6), DENSE),
    ("conv2d", (3, 3, 8, 6), DENSE),
    ("conv3d", (2, 2, 2, 8, 6), DENSE),
    ("conv2d_transpose", (3, 3, 6, 8), TRANSPOSE),
    ("embedding", (10, 6), EMBEDDING),
]
INPUT_SHAPES = [s for s in SHAPES if s[0] != "embedding"]


# Invariant checks shared by the NumPy and the end-to-end tests -------------


def units_of(mask, layout):
    """Per output unit: (any kept, all kept)."""
    moved = np.moveaxis(mask, layout.output_axis, -1).reshape(-1, mask.shape[layout.output_axis])
    return moved.any(axis=0), moved.all(axis=0)


def blocks_of(mask, layout, size):
    """Per block of `size` along the input axis: (any kept, all kept)."""
    moved = np.moveaxis(mask, layout.input_axis, -1)
    grouped = moved.reshape(*moved.shape[:-1], -1, size)
    return grouped.any(axis=-1), grouped.all(axis=-1)


def kept_per_group(mask, layout, m):
    moved = np.moveaxis(mask, layout.input_axis, -1)
    return moved.reshape(*moved.shape[:-1], -1, m).sum(axis=-1)


def check_units(old, new, layout, rate):
    """From full units: each unit all kept or all pruned, counts exact."""
    alive_old, _ = units_of(old, layout)
    alive, full = units_of(new, layout)
    assert not np.any(new & ~old)  # masks only shrink
    assert np.array_equal(alive, full)  # whole units
    expected = 0 if layout.is_output else prune_count(int(alive_old.sum()), rate)
    assert int(alive_old.sum() - alive.sum()) == expected


def check_blocks(old, new, layout, size, rate):
    alive_old, _ = blocks_of(old, layout, size)
    alive, full = blocks_of(new, layout, size)
    assert not np.any(new & ~old)
    assert np.array_equal(alive, full)  # each block all kept or all pruned
    assert int(alive_old.sum() - alive.sum()) == prune_count(int(alive_old.sum()), rate)


def check_nm(old, new, layout, n, m, rate):
    assert not np.any(new & ~old)
    before, after = kept_per_group(old, layout, m), kept_per_group(new, layout, m)
    excess = int(np.maximum(before - n, 0).sum())
    assert int(old.sum() - new.sum()) == min(prune_count(int(old.sum()), rate), excess)
    assert np.all(after >= np.minimum(before, n))  # no group falls below n


def random_case(shape, layout, seed=0):
    rng = np.random.default_rng(seed)
    return {"k": rng.normal(size=shape)}, {"k": np.ones(shape, bool)}, {"k": layout}


# Pure NumPy selection --------------------------------------------------------


@pytest.mark.parametrize("shape, layout", [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_units_prune_whole_units_by_norm_over_rounds(shape, layout):
    kernels, masks, layouts = random_case(shape, layout)
    for _ in range(4):
        old = masks["k"]
        masks = pruning.Magnitude().prune(
            kernels, masks, PruneTargets({"k": 0.3}, None, layouts), pruning.Units(), None
        )
        check_units(old, masks["k"], layout, 0.3)
        alive_old, _ = units_of(old, layout)
        alive, _ = units_of(masks["k"], layout)
        moved = np.moveaxis(np.abs(kernels["k"]), layout.output_axis, -1)
        norms = np.sqrt(np.square(moved.reshape(-1, alive.size)).sum(axis=0))
        gone = alive_old & ~alive
        assert norms[gone].max() <= norms[alive].min()


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_units_never_prune_the_output_layer(scope):
    rng = np.random.default_rng(1)
    kernels = {"fc": rng.normal(size=(4, 6)), "out": 0.01 * rng.normal(size=(6, 3))}
    masks = {k: np.ones(v.shape, bool) for k, v in kernels.items()}
    layouts = {"fc": DENSE, "out": KernelLayout(-2, -1, is_output=True)}
    pooled = 0.5 if scope == "global" else None
    targets = PruneTargets({"fc": 0.5, "out": 0.5}, pooled, layouts)
    new = pruning.Units().select({k: np.abs(v) for k, v in kernels.items()}, masks, targets)
    assert new["out"].all()
    assert units_of(new["fc"], DENSE)[0].sum() == 3  # prune_count(6 alive units, 0.5)


def test_units_global_pools_by_root_mean_square():
    # Unit RMS: a = [1, 3] (4 inputs each), b = [2, 0.5] (16 inputs each).
    scores = {
        "a": np.array([[1.0, 3.0]] * 4),
        "b": np.array([[2.0, 0.5]] * 16),
    }
    masks = {k: np.ones(v.shape, bool) for k, v in scores.items()}
    targets = PruneTargets({"a": 0.5, "b": 0.5}, 0.5, {"a": DENSE, "b": DENSE})
    new = pruning.Units().select(scores, masks, targets)
    # prune_count(4 units, 0.5) = 2: b's second unit (0.5), then a's first (1.0).
    assert new["a"].all(axis=0).tolist() == [False, True]
    assert new["b"].all(axis=0).tolist() == [True, False]


def test_units_ties_go_to_the_lower_index_and_edges():
    scores = {"k": np.ones((3, 4))}
    masks = {"k": np.ones((3, 4), bool)}
    targets = PruneTargets({"k": 0.5}, None, {"k": DENSE})
    new = pruning.Units().select(scores, masks, targets)
    assert new["k"].all(axis=0).tolist() == [False, False, True, True]
    low = pruning.Units().select(scores, masks, PruneTargets({"k": 0.01}, None, {"k": DENSE}))
    assert low["k"].all()  # prune_count(4, 0.01) = 0
    empty = {"k": np.zeros((3, 4), bool)}
    assert not pruning.Units().select(scores, empty, targets)["k"].any()


@pytest.mark.parametrize("size", [4, 2])
@pytest.mark.parametrize(
    "shape, layout", [s[1:] for s in INPUT_SHAPES], ids=[s[0] for s in INPUT_SHAPES]
)
def test_blocks_prune_whole_blocks_along_the_input_axis(shape, layout, size):
    kernels, masks, layouts = random_case(shape, layout)
    for _ in range(4):
        old = masks["k"]
        masks = pruning.Magnitude().prune(
            kernels, masks, PruneTargets({"k": 0.25}, None, layouts), pruning.Blocks(size), None
        )
        check_blocks(old, masks["k"], layout, size, 0.25)


def test_blocks_follow_tflite_fully_connected_layout():
    # Dense kernel (in=8, out=2): blocks are 4 consecutive inputs of one unit.
    kernel = np.arange(1.0, 17.0).reshape(8, 2)
    masks = {"k": np.ones((8, 2), bool)}
    new = pruning.Blocks(4).select(
        {"k": kernel}, masks, PruneTargets({"k": 0.25}, None, {"k": DENSE})
    )
    expected = np.ones((8, 2), bool)
    expected[:4, 0] = False  # the block of unit 0 with the smallest norm
    assert np.array_equal(new["k"], expected)


def test_blocks_pooled_across_kernels():
    scores = {"a": np.full((4, 2), 1.0), "b": np.full((8, 1), 2.0)}
    scores["b"][4:] = 0.5
    masks = {k: np.ones(v.shape, bool) for k, v in scores.items()}
    targets = PruneTargets({"a": 0.5, "b": 0.5}, 0.5, {"a": DENSE, "b": DENSE})
    new = pruning.Blocks(4).select(scores, masks, targets)
    # 4 blocks, prune_count(4, 0.5) = 2: b's second block (0.5), then a's first (1.0).
    assert new["a"][:, 0].sum() == 0 and new["a"][:, 1].all()
    assert new["b"][:4].all() and not new["b"][4:].any()


@pytest.mark.parametrize(
    "shape, layout", [s[1:] for s in INPUT_SHAPES], ids=[s[0] for s in INPUT_SHAPES]
)
def test_nm_rounds_tighten_to_n_in_m(shape, layout):
    kernels, masks, layouts = random_case(shape, layout)
    structure = pruning.NM(2, 4)
    for _ in range(5):  # 0.8 ** 4 < 0.5: N:M holds after round 4
        old = masks["k"]
        masks = pruning.Magnitude().prune(
            kernels, masks, PruneTargets({"k": 0.2}, None, layouts), structure, None
        )
        check_nm(old, masks["k"], layout, 2, 4, 0.2)
    assert np.all(kept_per_group(masks["k"], layout, 4) == 2)


def test_nm_prunes_the_lowest_excess_entries_only():
    scores = {"k": np.array([[0.1, 0.2, 0.9, 0.8, 0.05, 0.06, 0.07, 0.5]]).T}
    masks = {"k": np.ones((8, 1), bool)}
    quarter = PruneTargets({"k": 0.25}, None, {"k": DENSE})
    # 2 of 8: the two lowest (0.05, 0.06), both excess of the second group.
    new = pruning.NM(2, 4).select(scores, masks, quarter)
    assert new["k"][:, 0].tolist() == [1, 1, 1, 1, 0, 0, 1, 1]
    # 2 of 6 again: 0.07 is lower, but its group holds 2; 0.1 and 0.2 go.
    new = pruning.NM(2, 4).select(scores, new, quarter)
    assert new["k"][:, 0].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    # N:M holds: nothing more is pruned.
    assert np.array_equal(pruning.NM(2, 4).select(scores, new, quarter)["k"], new["k"])


def test_nm_global_pools_excess_entries():
    scores = {"a": np.array([[1.0, 2.0, 3.0, 4.0]]).T, "b": np.array([[0.1, 0.2, 5.0, 6.0]]).T}
    masks = {k: np.ones((4, 1), bool) for k in scores}
    targets = PruneTargets({"a": 0.5, "b": 0.5}, 0.25, {"a": DENSE, "b": DENSE})
    new = pruning.NM(2, 4).select(scores, masks, targets)  # prune_count(8, 0.25) = 2
    assert new["a"].all() and new["b"][:, 0].tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("name", ["units", "block:1x4", "2:4"])
def test_random_keeps_the_structure_and_the_layerwise_counts(name):
    kernels, masks, layouts = random_case((16, 8), DENSE)
    structure = pruning.get_structure(name)
    targets = PruneTargets({"k": 0.25}, None, layouts)
    rng = np.random.default_rng(0)
    magnitude = pruning.Magnitude().prune(kernels, masks, targets, structure, rng)
    random = pruning.Random().prune(kernels, masks, targets, structure, rng)
    assert random["k"].sum() == magnitude["k"].sum()
    assert not np.array_equal(random["k"], magnitude["k"])
    if name == "units":
        check_units(masks["k"], random["k"], DENSE, 0.25)
    elif name == "block:1x4":
        check_blocks(masks["k"], random["k"], DENSE, 4, 0.25)
    else:
        check_nm(masks["k"], random["k"], DENSE, 2, 4, 0.25)


REFUSED = [
    ("units", KernelLayout(None, None, layer_type="MaskedDepthwiseConv2D"), "output axis"),
    ("block:1x4", KernelLayout(None, None, layer_type="MaskedDepthwiseConv2D"), "input axis"),
    ("2:4", EMBEDDING, "input axis"),
    ("block:1x4", KernelLayout(None, -1, layer_type="MaskedEmbedding"), "MaskedEmbedding"),
    ("units", None, "no layout"),
]


@pytest.mark.parametrize("name, layout, message", REFUSED, ids=[f"{r[0]}-{r[2]}" for r in REFUSED])
def test_structures_refuse_kernels_without_the_axis(name, layout, message):
    layouts = {} if layout is None else {"k": layout}
    targets = PruneTargets({"k": 0.2}, None, layouts)
    with pytest.raises(ValueError, match=f"needs the .*'k'.*{message}|{message}.*'k'"):
        pruning.get_structure(name).select(
            {"k": np.ones((8, 4))}, {"k": np.ones((8, 4), bool)}, targets
        )


@pytest.mark.parametrize("name, size", [("block:1x4", 4), ("2:4", 4), ("block:1x16", 16)])
def test_input_axis_must_divide_into_groups(name, size):
    targets = PruneTargets({"fc1/kernel": 0.2}, None, {"fc1/kernel": DENSE})
    with pytest.raises(ValueError, match=rf"multiple of {size}.*'fc1/kernel' of shape \(6, 3\)"):
        pruning.get_structure(name).select(
            {"fc1/kernel": np.ones((6, 3))}, {"fc1/kernel": np.ones((6, 3), bool)}, targets
        )


# Policies: strings, configs, round trips -----------------------------------

SHORTHANDS = [
    ("units", pruning.Units()),
    ("block:1x4", pruning.Blocks(4)),
    ("block:1x16", pruning.Blocks(16)),
    ("2:4", pruning.NM(2, 4)),
    ("1:8", pruning.NM(1, 8)),
]


@pytest.mark.parametrize("text, expected", SHORTHANDS, ids=[s[0] for s in SHORTHANDS])
def test_shorthands_map_to_configured_structures(text, expected):
    structure = pruning.get_structure(text)
    assert structure == expected and structure.name == text
    assert type(structure).from_config(structure.get_config()) == structure
    assert pruning.get_structure(pruning.STRUCTURES.serialize(structure)) == structure
    config = {"name": type(structure).name, "config": structure.get_config()}
    assert pruning.get_structure(config) == structure
    assert lth_keras.LotteryPruner(structure=text).structure == structure


@pytest.mark.parametrize("text", ["blocks", "block", "n:m", "2x4", "block:2x4"])
def test_unknown_structure_strings_are_refused(text):
    with pytest.raises(
        ValueError, match=rf"invalid value for `structure`.*'N:M'.*Received: structure='{text}'"
    ):
        pruning.get_structure(text)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: pruning.get_structure("4:2"), "0 < n < m. Received: n=4, m=2"),
        (lambda: pruning.NM(0, 4), "Received: n=0, m=4"),
        (lambda: pruning.get_structure("block:1x1"), "int >= 2. Received: size=1"),
        (lambda: pruning.Blocks(4.0), "Received: size=4.0"),
    ],
    ids=["4:2", "0:4", "block1x1", "float"],
)
def test_invalid_sizes_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# LotteryPruner end to end --------------------------------------------------


def conv_model():
    """Every input axis a multiple of 16: conv (3,3,16,16), dense (256,16), out (16,3)."""
    return lth_keras.prunable(
        keras.Sequential(
            [
                keras.Input((6, 6, 16)),
                keras.layers.Conv2D(16, 3, activation="relu", name="conv"),
                keras.layers.Flatten(),
                keras.layers.Dense(16, activation="relu", name="fc"),
                keras.layers.Dense(3, name="out"),
            ]
        )
    )


def check_round(name, old, new, layouts, rates):
    structure = pruning.get_structure(name)
    for key in old:
        layout, rate = layouts[key], rates[key]
        if isinstance(structure, pruning.Units):
            check_units(old[key], new[key], layout, rate)
        elif isinstance(structure, pruning.Blocks):
            check_blocks(old[key], new[key], layout, structure.size, rate)
        else:
            check_nm(old[key], new[key], layout, structure.n, structure.m, rate)


@pytest.mark.parametrize("name", ["units", "block:1x4", "block:1x16", "2:4"])
def test_pruner_keeps_each_structure_over_rounds(name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 6, 16)).astype("float32")
    y = rng.integers(0, 3, size=32)
    model = compile_model(conv_model())
    pruner = lth_keras.LotteryPruner(rate=0.3, structure=name)
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    layouts = {"conv/kernel": DENSE, "fc/kernel": DENSE, "out/kernel": KernelLayout(-2, -1, True)}
    rates = {"conv/kernel": 0.3, "fc/kernel": 0.3, "out/kernel": 0.15}
    for _ in range(3):
        old = lth_keras.get_masks(model)
        model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
        new = lth_keras.get_masks(model)
        check_round(name, old, new, layouts, rates)
        assert any((new[k] != old[k]).any() for k in new)
    if name == "units":
        assert new["out/kernel"].all()
    assert pruner.history[-1]["weights_remaining"] < 1.0


# Each layer has 6 units or filters and 8 input channels.
LAYERS = [
    ("Dense", lambda: keras.layers.Dense(6), (8,)),
    ("Conv1D", lambda: keras.layers.Conv1D(6, 2), (5, 8)),
    ("Conv2D", lambda: keras.layers.Conv2D(6, 2), (4, 4, 8)),
    ("Conv3D", lambda: keras.layers.Conv3D(6, 2), (3, 3, 3, 8)),
    ("Conv1DTranspose", lambda: keras.layers.Conv1DTranspose(6, 2), (4, 8)),
    ("Conv2DTranspose", lambda: keras.layers.Conv2DTranspose(6, 2), (3, 3, 8)),
    ("Conv3DTranspose", lambda: keras.layers.Conv3DTranspose(6, 2), (2, 2, 2, 8)),
    ("Embedding", lambda: keras.layers.Embedding(8, 6), (3,)),
]


def prune_rounds(make_layer, input_shape, name, rounds=3, **kwargs):
    """Masks of the first layer's kernel over `rounds` pruning rounds (no training)."""
    dtype = "int32" if input_shape == (3,) else "float32"  # Embedding's token ids
    model = lth_keras.prunable(
        keras.Sequential(
            [
                keras.Input(input_shape, dtype=dtype),
                make_layer(),
                keras.layers.Flatten(),
                keras.layers.Dense(2, name="out"),
            ]
        )
    )
    model.compile("sgd", "mse")
    x, y = np.zeros((2, *input_shape), dtype), np.zeros((2, 2), "float32")
    kwargs.setdefault("exclude", ["out"])  # its input axis need not divide into groups
    kwargs.setdefault("rate", 0.25)
    pruner = lth_keras.LotteryPruner(structure=name, **kwargs)
    history = [lth_keras.get_masks(model)]
    for _ in range(rounds + 1):
        model.fit(x, y, epochs=0, callbacks=[pruner], verbose=0)
        history.append(lth_keras.get_masks(model))
    layer = lth_keras.masked_layers(model)[0]
    key = f"{layer.name}/{layer.get_prunable_weights()[0].name}"
    return [masks[key] for masks in history[1:]], layer


@pytest.mark.parametrize("name", ["units", "block:1x4", "2:4"])
@pytest.mark.parametrize("layer_id, make_layer, input_shape", LAYERS, ids=[t[0] for t in LAYERS])
def test_every_supported_layer_type(layer_id, make_layer, input_shape, name):
    if layer_id == "Embedding" and name != "units":
        with pytest.raises(ValueError, match="needs the input axis.*layer type Embedding"):
            prune_rounds(make_layer, input_shape, name)
        return
    masks, layer = prune_rounds(make_layer, input_shape, name)
    axes = layer.kernel_axes[layer.get_prunable_weights()[0].name]
    layout = KernelLayout(*axes)
    assert masks[0].shape[layout.output_axis] == 6  # the layer's units or filters
    if layout.input_axis is not None:
        assert masks[0].shape[layout.input_axis] == 8  # its input channels
    for old, new in zip(masks, masks[1:], strict=False):
        check_round(name, {"k": old}, {"k": new}, {"k": layout}, {"k": 0.25})
    assert not masks[-1].all()


@pytest.mark.parametrize("name", ["units", "block:1x4", "2:4"])
@pytest.mark.parametrize(
    "make_layer, kernel",
    [
        (lambda: keras.layers.DepthwiseConv2D(2, name="dw"), "kernel"),
        (lambda: keras.layers.SeparableConv2D(8, 2, name="dw"), "depthwise_kernel"),
    ],
    ids=["DepthwiseConv2D", "SeparableConv2D"],
)
def test_depthwise_kernels_are_refused_unless_excluded(make_layer, kernel, name):
    with pytest.raises(ValueError, match=f"needs the .* axis.*'dw/{kernel}'.*layer type"):
        prune_rounds(make_layer, (4, 4, 8), name, rounds=1)
    # Only the output layer is left, and units never prunes the model's outputs.
    nothing = pytest.warns(UserWarning, match="prunes no weight")
    with nothing if name == "units" else contextlib.nullcontext():
        masks, _ = prune_rounds(make_layer, (4, 4, 8), name, rounds=1, exclude=["dw"])
    assert masks[-1].all()


def test_user_layers_without_kernel_axes_are_refused(data):
    x, y = data

    class MaskedScale(lth_keras.layers.MaskedLayerMixin, keras.layers.Layer):
        kernel = lth_keras.layers.masked_weight("kernel")

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1],), initializer="ones")
            super().build(input_shape)

        def call(self, inputs):
            return inputs * self.kernel

    model = compile_model(
        keras.Sequential([keras.Input((12,)), MaskedScale(), lth_keras.MaskedDense(3)])
    )
    pruner = lth_keras.LotteryPruner(structure="units")
    # Refused when training starts, before round 0 trains.
    with pytest.raises(ValueError, match="layer type MaskedScale.*`kernel_axes`"):
        model.fit(x, y, epochs=1, callbacks=[pruner], verbose=0)
    assert not pruner.history


def test_pruner_warns_when_the_structure_allows_no_sparser_mask():
    """2:4 at rate 0.5 reaches 2 of 4 in one round; the next round prunes nothing."""
    with pytest.warns(UserWarning, match="round 2 prunes no weight"):
        more, _ = prune_rounds(LAYERS[0][1], LAYERS[0][2], "2:4", rounds=2, rate=0.5)
    np.testing.assert_array_equal(more[-1], more[-2])
