"""Keras callbacks: `LotteryPruner` and the reset policies it takes.

The callback only coordinates: scores and structures come from
`lth_keras.pruning`, resets from `resets`, model state is read and written
through `lth_keras.masks` and `lth_keras.rewind`.
"""

from lth_keras.callbacks.lottery_pruner import LotteryPruner
from lth_keras.callbacks.resets import (
    RESETS,
    FineTune,
    LearningRateRewind,
    Reinitialize,
    Reset,
    ResetContext,
    Rewind,
    get_reset,
)

__all__ = [
    "RESETS",
    "FineTune",
    "LearningRateRewind",
    "LotteryPruner",
    "Reinitialize",
    "Reset",
    "ResetContext",
    "Rewind",
    "get_reset",
]
