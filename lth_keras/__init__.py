"""lth_keras: lottery tickets for Keras 3.

Masked layers, `prunable()`/`strip_masks()` and the `LotteryPruner` callback
for finding winning tickets by iterative magnitude pruning (Frankle & Carbin,
ICLR 2019), with the controls and alternatives of later work.

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

from lth_keras import pruning, training  # training registers its schedule for loading
from lth_keras.callbacks import LotteryPruner
from lth_keras.config import ExperimentConfig, preset
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
    MaskedEmbedding,
    MaskedLayerMixin,
    MaskedSeparableConv1D,
    MaskedSeparableConv2D,
)
from lth_keras.masks import (
    apply_masks,
    get_masks,
    masked_layers,
    set_masks,
    weights_remaining,
)
from lth_keras.tickets import Ticket, load_ticket, save_ticket

__version__ = "0.1.0"

__all__ = [
    "ExperimentConfig",
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
    "MaskedEmbedding",
    "MaskedLayerMixin",
    "MaskedSeparableConv1D",
    "MaskedSeparableConv2D",
    "Ticket",
    "__version__",
    "apply_masks",
    "get_masks",
    "load_ticket",
    "masked_layers",
    "preset",
    "prunable",
    "pruning",
    "save_ticket",
    "set_masks",
    "strip_masks",
    "training",
    "weights_remaining",
]
