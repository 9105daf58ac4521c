"""Scores that run the model: SNIP, GraSP, SynFlow, and one-shot pruning at initialisation.

`gradients` computes what they need (loss gradients, Hessian-gradient
products, the synaptic flow) with `stateless_call` on any backend; `scores`
turns them into `lth_keras.pruning.Score`s registered as `"snip"`,
`"grasp"` and `"synflow"`, and holds `prune_at_init`. The pure maths of
`lth_keras.pruning` never runs a model.
"""

from lth_keras.saliency.scores import GraSP, Snip, SynFlow, prune_at_init

__all__ = ["GraSP", "Snip", "SynFlow", "prune_at_init"]
