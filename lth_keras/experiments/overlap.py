"""R_p of every job: how much a job's trained weights keep its starting ones' ranking.

Liu et al. (ICML 2021) measure the overlap ratio R_p (`lth_keras.analysis`)
between the weights training starts from (the rewind point, a
re-initialisation, the weights pruning & fine-tuning starts from) and the
trained weights. The runner records it for every job and every `p` of
`ExperimentConfig.overlap_ps`; round 0's value is the dense network's
R_p(θ0, θT).
"""

import keras

from lth_keras import masks as masks_lib
from lth_keras.analysis import overlap_ratios

__all__ = ["OverlapTracker", "overlap_key"]


def overlap_key(p):
    """The row key of R_p, e.g. `"overlap@0.2"`.

    Example:

    ```python
    overlap_key(0.2)  # 'overlap@0.2'
    ```
    """
    return f"overlap@{p:g}"


class OverlapTracker(keras.callbacks.Callback):
    """Records the kernels a job starts from, and R_p of its trained kernels.

    Put it after `LotteryPruner` in the callbacks, so the start is taken
    after the round's pruning and reset.

    Args:
        ps: The fractions `p` of R_p.
        start: The start kernels of a resumed job, or `None` to take them
            when training begins.
        on_start: Called as `on_start(kernels)` when the start is taken
            (to persist it for a resume). Defaults to `None`.

    Example:

    ```python
    tracker = OverlapTracker((0.1, 0.2))
    model.fit(..., callbacks=[pruner, tracker])
    tracker.overlaps(model)  # {'overlap@0.1': ..., 'overlap@0.2': ...}
    ```
    """

    def __init__(self, ps, start=None, on_start=None):
        super().__init__()
        self.ps = tuple(ps)
        self.start = start
        self.on_start = on_start

    def on_train_begin(self, logs=None):
        if self.start is None:
            self.start = masks_lib.get_kernels(self.model)
            if self.on_start is not None:
                self.on_start(self.start)

    def overlaps(self, model):
        """`{overlap_key(p): R_p(start, trained)}`, ranked among surviving weights."""
        trained = masks_lib.get_kernels(model)
        masks = masks_lib.get_masks(model)
        ratios = overlap_ratios(self.start, trained, self.ps, masks=masks)
        return {overlap_key(p): ratio for p, ratio in ratios.items()}
