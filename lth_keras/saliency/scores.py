"""Scores at initialisation (SNIP, GraSP, SynFlow) and one-shot pruning.

Three `Score`s that need the model, registered as `"snip"`, `"grasp"` and
`"synflow"` beside `"magnitude"` and `"random"`. They rank the weights of
a round as any score does (the count rule and the structure's selection
are unchanged), so they serve both as the score of every round of
`LotteryPruner(method=...)` and, through `prune_at_init`, as one-shot
pruning before training. Reference: the ganguli-lab/Synaptic-Flow code
(`Pruners/pruners.py`); the gradients come from
`lth_keras.saliency.gradients`.

SNIP and GraSP need a batch of training data, given to the score
(`Snip(data=(x, y))`); the data is not part of the score's config (arrays
are not JSON), so a score built from its name or config has none and says
so when it prunes. All three score the weights in the model's inference
mode (`training=False`: no dropout, BatchNorm on its moving statistics).
"""

import keras
import numpy as np

from lth_keras import masks as masks_lib
from lth_keras.pruning.counts import check_rate
from lth_keras.pruning.scores import SCORES, PruneTargets, Score
from lth_keras.saliency import gradients as saliency
from lth_keras.targets import Targets

__all__ = ["GraSP", "Snip", "SynFlow", "prune_at_init"]


def _serialize_loss(loss):
    if loss is None or isinstance(loss, str):
        return loss
    return keras.losses.serialize(loss)


class _DataScore(Score):
    """A score computed on a batch `(x, y)` with a loss."""

    def __init__(self, data=None, loss=None):
        self.data = data
        self.loss = loss

    def _batch(self):
        if self.data is None:
            raise ValueError(
                f"The {type(self).__name__} score needs a batch of training data. "
                f"Pass it to the score: method=lth_keras.pruning.{type(self).__name__}"
                "(data=(x, y)), or set `score.data = (x, y)`."
            )
        return self.data

    def get_config(self):
        return {"loss": _serialize_loss(self.loss)}


@SCORES.register("snip")
class Snip(_DataScore):
    """SNIP (Lee et al., ICLR 2019): keeps the largest `|g ⊙ θ|`.

    `g` is the gradient of the loss on `data` with respect to the kernels,
    the current masks applied (so pruned weights score 0). The reference
    code's division by the sum of scores is left out: it does not change
    the ranking.

    Args:
        data: A batch `(x, y)` of training data. Defaults to `None` (set
            `score.data` before pruning).
        loss: A Keras loss. Defaults to `None`: the model's compiled loss.

    Example:

    ```python
    lth_keras.LotteryPruner(method=lth_keras.saliency.Snip(data=(x[:256], y[:256])))
    ```
    """

    def scores(self, kernels, masks):
        model = self.bound_model()
        _, grads = saliency.loss_gradients(model, kernels, masks, self._batch(), self.loss)
        return {key: np.abs(grads[key] * np.asarray(kernels[key]) * masks[key]) for key in grads}


def _ranked(values, masks):
    """Order-preserving non-negative scores: 1 + rank among unpruned entries, 0 if pruned.

    Ranks are pooled over all kernels (in key order), ties going to the
    earlier kernel, then the lower flat index, as in magnitude pruning.
    """
    keys = list(values)
    alive = [np.asarray(values[k], float)[masks[k]] for k in keys]
    order = np.argsort(np.concatenate(alive), kind="stable")
    ranks = np.empty(order.size)
    ranks[order] = np.arange(1, order.size + 1)
    out, start = {}, 0
    for key, part in zip(keys, alive, strict=True):
        score = np.zeros(np.shape(values[key]))
        score[masks[key]] = ranks[start : start + part.size]
        out[key], start = score, start + part.size
    return out


@SCORES.register("grasp")
class GraSP(_DataScore):
    """GraSP (Wang et al., ICLR 2020): keeps the highest `θ ⊙ Hg`.

    `g` is the gradient of the loss on `data` (outputs divided by
    `temperature`, which must therefore be logits), `H` the Hessian of that
    loss with respect to the kernels. The paper's score is
    `S = -θ ⊙ Hg` and removes the weights of HIGHEST `S`; the reference
    code scores `θ ⊙ Hg` and removes the lowest. Both keep the highest
    `θ ⊙ Hg` (the lowest `-θ ⊙ Hg`), as this class does.

    `Hg` is computed exactly by double backpropagation (the gradient of
    `∇L · stop_gradient(g)`), as in the reference code. Finite differences
    of gradients were tried and dropped: on a ReLU network a relative step
    of 1e-3 crosses activation kinks and gave errors of several times `Hg`
    itself, while smaller steps lose float32 precision at temperature 200.

    The signed values `θ ⊙ Hg` (`signed_scores`) are turned into their
    ranks among unpruned entries (`scores`), since structures select on
    non-negative scores; the order, and so the selected weights, is the
    same.

    Args:
        data: A batch `(x, y)` of training data. Defaults to `None` (set
            `score.data` before pruning).
        temperature: Divides the model's outputs before the loss. Defaults
            to `200.0`, the reference code's.
        loss: A Keras loss on logits. Defaults to `None`: the model's
            compiled loss.

    Example:

    ```python
    lth_keras.saliency.prune_at_init(model, GraSP(data=(x, y)), 0.9)
    ```
    """

    def __init__(self, data=None, temperature=200.0, loss=None):
        super().__init__(data, loss)
        if isinstance(temperature, bool) or not temperature > 0:
            raise ValueError(
                "Received an invalid value for `temperature`, expected a positive "
                f"number. Received: temperature={temperature!r}"
            )
        self.temperature = temperature

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}

    def hessian_gradient(self, kernels, masks):
        """`{key: Hg}`: the Hessian of the loss times its gradient."""
        args = (self.bound_model(), kernels, masks, self._batch(), self.loss, self.temperature)
        _, g = saliency.loss_gradients(*args)
        return {k: v.astype(float) for k, v in saliency.loss_gradients(*args, tangent=g)[1].items()}

    def signed_scores(self, kernels, masks):
        """`{key: θ ⊙ Hg}`, masked; higher survives."""
        hg = self.hessian_gradient(kernels, masks)
        return {k: np.asarray(kernels[k], float) * hg[k] * masks[k] for k in hg}

    def scores(self, kernels, masks):
        return _ranked(self.signed_scores(kernels, masks), masks)


def _scheduled(targets, step, steps):
    """The targets after `step` of `steps`: kept fraction `(1 - rate) ** (step / steps)`."""
    if step == steps:
        return targets

    def partial(rate):
        return 1.0 - (1.0 - rate) ** (step / steps)

    pooled = None if targets.pooled_rate is None else partial(targets.pooled_rate)
    rates = {key: partial(rate) for key, rate in targets.rates.items()}
    return PruneTargets(rates, pooled, targets.layouts)


@SCORES.register("synflow")
class SynFlow(Score):
    """SynFlow (Tanaka et al., NeurIPS 2020): data-free, iterative.

    Scores `|∂R/∂θ ⊙ θ|` with `R = 1ᵀ(∏ |θ_l|)1`, the sum of the outputs
    for an all-ones input through the network with absolute weights, biases
    zero and BatchNorm neutral (see `lth_keras.saliency.gradients.synaptic_flow`).
    A round prunes in `iterations` steps, rescoring with the masks of the
    previous step applied: after step `k` of `n` each kernel (or the pool)
    keeps `(1 - rate) ** (k / n)` of what it had at the start of the round
    (the reference code's exponential schedule of compression), step `k`
    selecting `prune_count(n0, 1 - (1 - rate) ** (k / n))` of the round's
    `n0` weights, so the last step prunes exactly what a one-shot round at
    `rate` would. Entries removed by earlier steps rank below all others.
    The model's outputs must come before any softmax.

    Args:
        iterations: Pruning steps per round. Defaults to `100`.
        input_shape: The model's input shape without the batch axis.
            Defaults to `None`: read from `model.inputs`.

    Example:

    ```python
    lth_keras.saliency.prune_at_init(model, "synflow", sparsity=0.99)
    ```
    """

    def __init__(self, iterations=100, input_shape=None):
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(
                "Received an invalid value for `iterations`, expected an int >= 1. "
                f"Received: iterations={iterations!r}"
            )
        self.iterations = iterations
        self.input_shape = None if input_shape is None else tuple(input_shape)

    def get_config(self):
        shape = None if self.input_shape is None else list(self.input_shape)
        return {"iterations": self.iterations, "input_shape": shape}

    def scores(self, kernels, masks):
        model = self.bound_model()
        _, grads = saliency.synaptic_flow(model, kernels, masks, self.input_shape)
        return {key: np.abs(grads[key] * np.asarray(kernels[key]) * masks[key]) for key in grads}

    def prune(self, kernels, masks, targets, structure, rng):
        current = {key: mask.copy() for key, mask in masks.items()}
        for step in range(1, self.iterations + 1):
            scores = self.scores(kernels, current)
            ranked = _ranked({key: scores[key] for key in targets.rates}, current)
            step_targets = _scheduled(targets, step, self.iterations)
            current = structure.select({**scores, **ranked}, masks, step_targets)
        return current


def prune_at_init(
    model, score, sparsity, *, scope="layerwise", structure="unstructured", exclude=(), rng=None
):
    """Prunes a model once, typically before training (SNIP, GraSP, SynFlow ...).

    Removes `prune_count(n, sparsity)` of the `n` unpruned weights of every
    masked kernel (`scope="layerwise"`; the output layer included, at the
    same sparsity) or of all kernels pooled (`scope="global"`), lowest
    scores first, and writes the masks (kernels are zeroed where pruned).
    On a dense model `sparsity` is the fraction pruned. `SynFlow` gets there
    in its `iterations` steps. Build or reset the optimizer after this
    (`LotteryPruner` does when it starts).

    Args:
        model: A built Keras model with masked layers.
        score: A `Score` or its name (`"magnitude"`, `"random"`, `"snip"`,
            `"grasp"`, `"synflow"`; the data-based ones need an instance
            with `data=`).
        sparsity: Fraction of the unpruned weights to prune, in (0, 1).
        scope: `"layerwise"` or `"global"`. Defaults to `"layerwise"`.
        structure: A structure name or `Structure`. Defaults to
            `"unstructured"`.
        exclude: Layer names or type names not pruned. Defaults to `()`.
        rng: A `numpy.random.Generator` or an int seed, for random scores.
            Defaults to `None`: a fresh generator.

    Returns:
        The new masks, `{key: bool array}`.

    Raises:
        ValueError: For a sparsity outside (0, 1), an unknown scope, score
            or structure, or a score that lacks what it needs (data).

    Example:

    ```python
    masks = lth_keras.saliency.prune_at_init(model, Snip(data=(x, y)), 0.8)
    ```
    """
    check_rate(sparsity, "sparsity")
    targets = Targets(
        sparsity,
        output_rate=sparsity if scope == "layerwise" else None,
        exclude=exclude,
        scope=scope,
        method=score,
        structure=structure,
    )
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    new = targets.prune(model, rng)
    masks_lib.set_masks(model, new)
    return new
