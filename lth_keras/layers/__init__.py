"""Masked layers: the prunable-weights protocol, twins, and what gets masked.

`base` holds the protocol (`MaskedLayerMixin`, `LotteryWeight`,
`masked_weight`); `masked` makes the masked twin of any layer class and
attaches masks to a built layer in place (`attach`, `detach`); `rules` says
which weights of which layers are masked. See `base` for how masks and
initial weights behave.
"""

from lth_keras.layers import rules
from lth_keras.layers.base import LotteryWeight, MaskedLayerMixin, kept, masked_weight
from lth_keras.layers.masked import (
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
    MaskedLSTMCell,
    MaskedSeparableConv1D,
    MaskedSeparableConv2D,
    MaskedSimpleRNNCell,
    attach,
    detach,
    keras_class_of,
    masked_twin_of,
    register_masked_twin,
    supported_keras_classes,
    twin_class,
)

__all__ = [
    "LotteryWeight",
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
    "attach",
    "detach",
    "keras_class_of",
    "kept",
    "masked_twin_of",
    "masked_weight",
    "register_masked_twin",
    "rules",
    "supported_keras_classes",
    "twin_class",
]
