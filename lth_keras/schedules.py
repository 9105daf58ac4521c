"""Learning-rate schedules of the paper's deep networks (backend-neutral).

Registered with Keras, so `.keras` files of models compiled with them load
wherever lth_keras is imported.
"""

import keras
from keras import ops

__all__ = ["WarmupPiecewise"]


@keras.saving.register_keras_serializable(package="lth_keras")
class WarmupPiecewise(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then a learning rate multiplied by `factor` at boundaries.

    `lr(step) = learning_rate * factor ** (number of boundaries <= step)`,
    times `min(1, (step + 1) / warmup_steps)` when `warmup_steps > 0`.

    Args:
        learning_rate: Peak learning rate.
        boundaries: Increasing steps at which the rate drops. Defaults to `()`.
        factor: Multiplier at each boundary. Defaults to `0.1`.
        warmup_steps: Length of the linear warm-up. Defaults to `0`.

    Example:

    ```python
    schedule = WarmupPiecewise(0.1, boundaries=(56240, 84360), warmup_steps=10000)
    keras.optimizers.SGD(schedule, momentum=0.9)
    ```
    """

    def __init__(self, learning_rate, boundaries=(), factor=0.1, warmup_steps=0):
        self.learning_rate = float(learning_rate)
        self.boundaries = tuple(int(b) for b in boundaries)
        self.factor = float(factor)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = ops.convert_to_tensor(self.learning_rate, "float32")
        for boundary in self.boundaries:
            rate = ops.where(step >= boundary, rate * self.factor, rate)
        if self.warmup_steps:
            rate = rate * ops.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return rate

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "boundaries": list(self.boundaries),
            "factor": self.factor,
            "warmup_steps": self.warmup_steps,
        }
