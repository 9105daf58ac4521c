"""Masked Keras layers and the prunable-weights protocol.

`base` holds the protocol (`MaskedLayerMixin`, `LotteryWeight`,
`masked_weight`); `masked` holds the masked twins of Keras layers and the
registry `lth_keras.prunable` converts with. See `base` for how masks and
initial weights behave.
"""

from lth_keras.layers.base import LotteryWeight, MaskedLayerMixin, masked_weight
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
    MaskedEmbedding,
    MaskedSeparableConv1D,
    MaskedSeparableConv2D,
    keras_class_of,
    masked_twin_of,
    register_masked_twin,
    supported_keras_classes,
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
    "MaskedEmbedding",
    "MaskedLayerMixin",
    "MaskedSeparableConv1D",
    "MaskedSeparableConv2D",
    "keras_class_of",
    "masked_twin_of",
    "masked_weight",
    "register_masked_twin",
    "supported_keras_classes",
]
