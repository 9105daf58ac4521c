"""Structured sparsity: whole units, blocks and N:M groups.

These `Structure`s need each kernel's `KernelLayout` (in
`PruneTargets.layouts`, filled by `LotteryPruner` from the masked layers'
`kernel_axes`) and refuse a kernel whose layout lacks the axis they use:

| structure | removes whole | axis | layer types |
|---|---|---|---|
| `"units"` | output units / filters | output | Dense, ConvND, ConvNDTranspose, Embedding |
| `"block:1xK"` | blocks of K inputs of one unit | input | Dense, ConvND, ConvNDTranspose |
| `"N:M"` | (keeps <= N in M inputs) | input | Dense, ConvND, ConvNDTranspose |

(ConvND: Conv1D, Conv2D, Conv3D; ConvNDTranspose likewise.)

Depthwise kernels (of DepthwiseConv and SeparableConv layers) have neither
axis and are refused by all three; Embedding has no input axis. Exclude such
layers (`LotteryPruner(exclude=[...])`) or prune them unstructured.

Counts follow `prune_count` (see `lth_keras.pruning.counts`) on the items a
structure removes; ties go to the lower index, then to the kernel listed
first. Groups are ranked by the root-mean-square of their entries' scores
times the mask (the L2 norm over the group, divided by the square root of
its size, so that pooled groups of different sizes compare); `Blocks` may
pool by the mean or the maximum instead (tfmot's `block_pooling_type`).
A sparsity (gradual pruning, `Targets.prune(sparsity=...)`) counts the
items a structure removes: `Blocks` keeps `keep_count(blocks, sparsity)`
blocks of a kernel, as tfmot does.
"""

import typing

import numpy as np

from lth_keras.pruning.counts import prune_count
from lth_keras.pruning.structures import STRUCTURES, Structure

__all__ = ["NM", "Blocks", "Units"]

_INPUT_TYPES = "Dense, Conv1D/2D/3D and Conv1D/2D/3DTranspose"


class _Items(typing.NamedTuple):
    """A kernel as the items a structure removes: groups, or single weights."""

    scores: np.ndarray  # 1-D, one per item
    eligible: np.ndarray  # 1-D bool: may be removed this round
    alive: int  # what `prune_count` counts
    apply: typing.Callable  # 1-D bool "remove item" -> new mask


class _ItemStructure(Structure):
    """Removes `prune_count(alive, rate)` of the lowest eligible items."""

    random_by_scores = True

    def _items(self, key, score, mask, layout):
        raise NotImplementedError

    def select(self, scores, masks, targets):
        new = {key: np.array(mask, dtype=bool) for key, mask in masks.items()}
        keys = list(targets.rates)
        items = [
            self._items(key, np.asarray(scores[key], float), new[key], self._layout(key, targets))
            for key in keys
        ]
        if targets.pooled_rate is not None:
            chosen = _lowest(items, prune_count(sum(i.alive for i in items), targets.pooled_rate))
        else:
            chosen = [
                _lowest([item], prune_count(item.alive, targets.rates[key]))[0]
                for key, item in zip(keys, items, strict=True)
            ]
        for key, item, removed in zip(keys, items, chosen, strict=True):
            new[key] = item.apply(removed)
        return new

    def _layout(self, key, targets):
        layout = targets.layouts.get(key)
        axis = None if layout is None else getattr(layout, self._axis_name)
        if axis is None:
            which = self._axis_name.replace("_", " ")
            kind = "no layout" if layout is None else f"layer type {layout.layer_type or '?'}"
            raise ValueError(
                f"Structure {self.name!r} needs the {which} of every pruned kernel, "
                f"but kernel {key!r} ({kind}) has none. Supported: {self._supported}. Exclude "
                "the layer (LotteryPruner(exclude=[...])) or use structure='unstructured'; a "
                "user layer declares its axes in `kernel_axes`, e.g. {'kernel': (-2, -1)}."
            )
        return layout


def _lowest(items, count):
    """Per item set, a bool array marking the `count` lowest eligible items."""
    scores = np.concatenate([i.scores for i in items])
    eligible = np.flatnonzero(np.concatenate([i.eligible for i in items]))
    # Stable sort: ties go to the earlier kernel, then the lower index.
    order = eligible[np.argsort(scores[eligible], kind="stable")[:count]]
    chosen = np.zeros(scores.size, bool)
    chosen[order] = True
    return np.split(chosen, np.cumsum([i.scores.size for i in items])[:-1])


def _grouped(array, axis, size, key, structure):
    """`array` with `axis` split into (groups, size); the member axis is `axis + 1`."""
    axis %= array.ndim
    if array.shape[axis] % size:
        raise ValueError(
            f"Structure {structure!r} groups {size} consecutive entries along the input axis, "
            f"which must be a multiple of {size}. Received: kernel {key!r} of shape "
            f"{array.shape}, input axis {axis} of length {array.shape[axis]}. Exclude the "
            "layer (LotteryPruner(exclude=[...])) or choose a size that divides it."
        )
    shape = array.shape[:axis] + (array.shape[axis] // size, size) + array.shape[axis + 1 :]
    return array.reshape(shape), axis + 1


def _group_items(mask, squared, alive, eligible, expand):
    """Items of whole groups, reduced per group; only eligible ones are counted."""
    return _Items(
        np.sqrt(squared).reshape(-1),
        eligible.reshape(-1),
        int(eligible.sum()),
        lambda chosen: mask & ~expand(chosen.reshape(alive.shape)),
    )


@STRUCTURES.register("units")
class Units(_ItemStructure):
    """Whole output units of Dense layers and filters of convolutions.

    A unit is the kernel's slice at one index of its output axis; it is
    alive while any entry is kept and is pruned whole. Layerwise, a round
    prunes `prune_count(alive_units, rate)` units per kernel, the lowest L2
    norm of `score * mask` first (ties: lower index). With `scope="global"`
    the alive units of all pooled kernels are ranked together by
    root-mean-square (the norm over `sqrt(unit size)`) and
    `prune_count(total alive units, rate)` go. The model's last masked layer
    (`KernelLayout.is_output`) keeps all its units, in either scope: its
    units are the model's outputs. A pruned unit keeps its bias, so it
    outputs `activation(bias)`; `lth_keras.compact` folds that into the next
    layer and removes the unit.

    Example:

    ```python
    lth_keras.LotteryPruner(rate=0.2, structure="units")
    ```
    """

    _axis_name = "output_axis"
    _supported = f"{_INPUT_TYPES}, Embedding"

    def _items(self, key, score, mask, layout):
        axis = layout.output_axis % mask.ndim
        others = tuple(a for a in range(mask.ndim) if a != axis)
        squared = np.mean(np.square(score * mask), axis=others)
        alive = mask.any(axis=others)
        eligible = alive & (not layout.is_output)
        return _group_items(
            mask, squared, alive, eligible, lambda g: np.expand_dims(g, others) & np.ones_like(mask)
        )


@STRUCTURES.register("block")
class Blocks(_ItemStructure):
    """Blocks of `size` consecutive weights along the input axis, pruned whole.

    TFLite's sparse FULLY_CONNECTED layout: a Dense kernel `(in, out)` is cut
    into blocks of `size` consecutive input entries of one output unit (1x4
    runs sparse in float32, 1x16 in int8). Convolutions are cut along their
    input-channel axis. A block is alive while any entry is kept; a round
    prunes `prune_count(alive_blocks, rate)` blocks per kernel (or pooled,
    with `scope="global"`), the lowest L2 norm of `score * mask` first, ties
    to the lower block index in the kernel's own layout. The input axis
    must be a multiple of `size`; other kernels are refused.

    A sparsity (gradual pruning) counts blocks: a kernel of `b` blocks
    keeps `keep_count(b, sparsity)` of them (tfmot's rule on its pooled
    blocks).

    Args:
        size: Entries per block, an int >= 2. Defaults to `4`.
        pooling: How a block's entries make its score: `"rms"` (their
            root-mean-square), `"avg"` (the mean of their absolute values,
            tfmot's `block_pooling_type="AVG"`) or `"max"` (the largest,
            tfmot's `"MAX"`). Defaults to `"rms"`.

    Raises:
        ValueError: If `size` is not an int >= 2, or `pooling` is not one
            of the three.

    Example:

    ```python
    lth_keras.LotteryPruner(structure="block:1x4")  # Blocks(4)
    lth_keras.LotteryPruner(structure=Blocks(4, pooling="avg"))
    ```
    """

    _axis_name = "input_axis"
    _supported = _INPUT_TYPES
    shorthand = r"block:1x(\d+)"
    shorthand_help = "'block:1xK' (e.g. 'block:1x4')"
    _POOLING = {
        "rms": lambda scored, axis: np.sqrt(np.mean(np.square(scored), axis=axis)),
        "avg": lambda scored, axis: np.mean(np.abs(scored), axis=axis),
        "max": lambda scored, axis: np.max(np.abs(scored), axis=axis),
    }

    def __init__(self, size=4, pooling="rms"):
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(
                "Received an invalid value for `size`, expected an int >= 2. "
                f"Received: size={size!r}"
            )
        if not isinstance(pooling, str) or pooling not in self._POOLING:
            raise ValueError(
                "Received an invalid value for `pooling`, expected one of "
                f"{list(self._POOLING)}. Received: pooling={pooling!r}"
            )
        self.size = size
        self.pooling = pooling
        self.name = f"block:1x{size}"

    def get_config(self):
        # The default pooling is left out, so configs written before it existed stay equal.
        pooling = {} if self.pooling == "rms" else {"pooling": self.pooling}
        return {"size": self.size, **pooling}

    def items(self, key, mask, targets):
        layout = self._layout(key, targets)
        grouped, member = _grouped(mask, layout.input_axis, self.size, key, self.name)
        return grouped.size // self.size, int(grouped.any(axis=member).sum())

    def _items(self, key, score, mask, layout):
        grouped, member = _grouped(mask, layout.input_axis, self.size, key, self.name)
        scored, _ = _grouped(score * mask, layout.input_axis, self.size, key, self.name)
        alive = grouped.any(axis=member)
        squared = np.square(self._POOLING[self.pooling](scored, member))
        expand = lambda g: np.repeat(g, self.size, axis=member - 1)  # noqa: E731
        return _group_items(mask, squared, alive, alive, expand)


@STRUCTURES.register("n:m")
class NM(_ItemStructure):
    """At most `n` kept weights in every `m` consecutive ones along the input axis.

    tfmot's `sparsity_m_by_n` and TFLite's convention: groups of `m`
    consecutive entries along the input axis (input channels of a
    convolution). Rounds tighten towards N:M: a group holding `k > n` kept
    entries has `k - n` *excess* entries, its lowest-scored ones (ties: lower
    index). A round removes `prune_count(alive, rate)` entries of the kernel
    (`alive`: its kept entries; pooled with `scope="global"`), the
    lowest-scored excess entries first, or every excess entry if there are
    fewer. So rounds only prune, no group falls below `n`, and once every
    group holds at most `n` (after about `log(n/m) / log(1 - rate)` rounds
    from a dense kernel) nothing more is pruned. The input axis must be a
    multiple of `m`; other kernels are refused.

    Args:
        n: Kept entries per group, an int with `0 < n < m`. Defaults to `2`.
        m: Group size. Defaults to `4`.

    Raises:
        ValueError: Unless `0 < n < m` are ints.

    Example:

    ```python
    lth_keras.LotteryPruner(rate=0.2, structure="2:4")  # NM(2, 4)
    ```
    """

    _axis_name = "input_axis"
    _supported = _INPUT_TYPES
    shorthand = r"(\d+):(\d+)"
    shorthand_help = "'N:M' (e.g. '2:4')"

    def __init__(self, n=2, m=4):
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (n, m))
        if not (ints and 0 < n < m):
            raise ValueError(
                "Received an invalid value for `n` and `m`, expected ints with 0 < n < m. "
                f"Received: n={n!r}, m={m!r}"
            )
        self.n = n
        self.m = m
        self.name = f"{n}:{m}"

    def get_config(self):
        return {"n": self.n, "m": self.m}

    def _items(self, key, score, mask, layout):
        grouped, member = _grouped(mask, layout.input_axis, self.m, key, self.name)
        scored, _ = _grouped(np.where(mask, score, np.inf), layout.input_axis, self.m, key, "")
        # Rank of each entry within its group, lowest score first; pruned last.
        rank = np.argsort(np.argsort(scored, axis=member, kind="stable"), axis=member)
        excess = grouped.sum(axis=member, keepdims=True) - self.n
        eligible = (grouped & (rank < excess)).reshape(mask.shape)
        return _Items(
            np.where(mask, score, 0.0).reshape(-1),
            eligible.reshape(-1),
            int(mask.sum()),
            lambda chosen: mask & ~chosen.reshape(mask.shape),
        )
