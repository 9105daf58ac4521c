"""tfmot's sparsity API on Keras 3: a tfmot script ports by changing one import.

`tensorflow_model_optimization.sparsity.keras` (tfmot) runs only on the
legacy tf_keras. This package gives its names and arguments on Keras 3, on
every backend (TensorFlow, JAX, PyTorch), each a thin layer over the one
mechanism lth_keras has: `prune_low_magnitude` is `lth_keras.prunable`
(masks in place) plus a record of the schedule and structure;
`UpdatePruningStep` runs `lth_keras.LotteryPruner`'s gradual pruning with
that schedule; `strip_pruning` is `lth_keras.strip_masks`; the schedules
are `lth_keras.pruning`'s, with tfmot's semantics and count rule.

| tfmot | here |
|---|---|
| `prune_low_magnitude` | masks in place (a model) or a masked twin (an unbuilt layer) |
| `UpdatePruningStep` | `LotteryPruner(schedule=..., targets=...)` per schedule |
| `PruningSummaries` | `keras.callbacks.TensorBoard` plus each kernel's sparsity |
| `strip_pruning` | `lth_keras.strip_masks` |
| `prune_scope` | a custom-object scope of the masked layers |
| `ConstantSparsity`, `PolynomialDecay`, `PruningSchedule` | `lth_keras.pruning`'s |
| `block_size=(K, 1)`, `block_pooling_type` | `lth_keras.pruning.Blocks(K, "avg"/"max")` |
| `sparsity_m_by_n=(m, n)` | `lth_keras.pruning.NM(n - m, n)`, set at step 1 |
| `PrunableLayer` | `get_prunable_weights()` honoured on any layer |
| `PruningPolicy`, `PruneForLatencyOnXNNPack` | `prunable`'s `filters=` |

See docs/MIGRATING_FROM_TFMOT.md for what differs (saving, the step
counter, distribution).

Example:

```python
from lth_keras import tfmot  # was: import tensorflow_model_optimization as tfmot

prune_low_magnitude = tfmot.prune_low_magnitude  # was: tfmot.sparsity.keras.prune_low_magnitude
schedule = tfmot.PolynomialDecay(0.5, 0.8, begin_step=0, end_step=1000)
model = prune_low_magnitude(model, pruning_schedule=schedule)
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=2, callbacks=[tfmot.UpdatePruningStep()])
final = tfmot.strip_pruning(model)
```
"""

from lth_keras.tfmot.callbacks import PruningSummaries, UpdatePruningStep
from lth_keras.tfmot.policy import PruneForLatencyOnXNNPack, PruningPolicy
from lth_keras.tfmot.prune import (
    PrunableLayer,
    PruningParams,
    prune_low_magnitude,
    prune_scope,
    strip_pruning,
)
from lth_keras.tfmot.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruningParams",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "prune_low_magnitude",
    "prune_scope",
    "strip_pruning",
]
