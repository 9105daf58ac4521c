"""lth_keras: lottery tickets for Keras 3.

Masked layers, `prunable()`/`strip_masks()` and the `LotteryPruner` callback
for finding winning tickets by iterative magnitude pruning (Frankle & Carbin,
ICLR 2019), with the controls and alternatives of later work.

The packages show the architecture: the backend-neutral core (`layers`,
`masks`, `convert`, `pruning`, `callbacks`, `rewind`, `tickets`, `analysis`,
`connectivity`: `keras.ops` and NumPy only, on every Keras backend, and
`tfmot`, tfmot's sparsity API on top of it); `lth_keras.tensorflow`
(SavedModel/TFLite export and tf.distribute: the TensorFlow backend only);
and `lth_keras.experiments` (the paper harness: configs, presets, TFDS data,
the runner, reports, the command line).
Importing `lth_keras` loads the core only.

Example:

```python
import keras
import lth_keras

model = lth_keras.prunable(keras.Sequential([
    keras.Input((784,)),
    keras.layers.Dense(300, activation="relu"),
    keras.layers.Dense(100, activation="relu"),
    keras.layers.Dense(10),
]))
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
pruner = lth_keras.LotteryPruner(rate=0.2)
for _ in range(5):
    model.fit(x, y, epochs=2, callbacks=[pruner])
```
"""

from lth_keras import (
    analysis,
    callbacks,
    connectivity,
    layers,
    masks,
    pruning,
    saliency,
    schedules,
    tfmot,
)
from lth_keras.callbacks import LotteryPruner
from lth_keras.compact import compact
from lth_keras.convert import prunable, strip_masks
from lth_keras.layers import (
    MaskedConv1D,
    MaskedConv1DTranspose,
    MaskedConv2D,
    MaskedConv2DTranspose,
    MaskedConv3D,
    MaskedConv3DTranspose,
    MaskedDense,
    MaskedDepthwiseConv1D,
    MaskedDepthwiseConv2D,
    MaskedEinsumDense,
    MaskedEmbedding,
    MaskedGRUCell,
    MaskedLayerMixin,
    MaskedLSTMCell,
    MaskedSeparableConv1D,
    MaskedSeparableConv2D,
    MaskedSimpleRNNCell,
)
from lth_keras.masks import (
    apply_masks,
    get_masks,
    masked_layers,
    set_masks,
    weights_remaining,
)
from lth_keras.saving import load_model
from lth_keras.summary import summary
from lth_keras.targets import Targets
from lth_keras.tickets import Ticket, load_ticket, save_ticket

__version__ = "0.4.0"

__all__ = [
    "LotteryPruner",
    "MaskedConv1D",
    "MaskedConv1DTranspose",
    "MaskedConv2D",
    "MaskedConv2DTranspose",
    "MaskedConv3D",
    "MaskedConv3DTranspose",
    "MaskedDense",
    "MaskedDepthwiseConv1D",
    "MaskedDepthwiseConv2D",
    "MaskedEinsumDense",
    "MaskedEmbedding",
    "MaskedGRUCell",
    "MaskedLSTMCell",
    "MaskedLayerMixin",
    "MaskedSeparableConv1D",
    "MaskedSeparableConv2D",
    "MaskedSimpleRNNCell",
    "Targets",
    "Ticket",
    "__version__",
    "analysis",
    "apply_masks",
    "callbacks",
    "compact",
    "connectivity",
    "get_masks",
    "layers",
    "load_model",
    "load_ticket",
    "masked_layers",
    "masks",
    "prunable",
    "pruning",
    "saliency",
    "save_ticket",
    "schedules",
    "set_masks",
    "strip_masks",
    "summary",
    "tfmot",
    "weights_remaining",
]
