"""Where the runner builds and trains its models: a tf.distribute strategy, or none.

`Placement(strategy)` answers the runner's questions about the strategy: is
this worker the chief, how many steps per compiled call, XLA or not, and in
which scopes to build and fit a model.
"""

import contextlib

import keras
import tensorflow as tf

from lth_keras.convert import prunable
from lth_keras.experiments import training
from lth_keras.experiments.models import build_model

__all__ = ["Placement"]


class Placement:
    """Where models are built and trained: a tf.distribute strategy, or nothing.

    On the TensorFlow backend this wraps the strategy (the default one when
    none is given); on other backends there is none, and Keras' own
    `keras.distribution` (if set) places the model.
    """

    def __init__(self, strategy):
        self.strategy = None
        if keras.backend.backend() == "tensorflow":
            from lth_keras.tensorflow import distribute

            self._distribute = distribute
            self.strategy = strategy or tf.distribute.get_strategy()

    def chief(self):
        return self.strategy is None or self._distribute.is_chief(self.strategy)

    def multi_worker(self):
        """Whether the strategy is a MultiWorkerMirroredStrategy."""
        return self._multi_worker()

    def _multi_worker(self):
        return isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def steps_per_execution(self, config):
        """The config's, except under MultiWorkerMirroredStrategy and on PyTorch: 1 unless set.

        Keras 3.15's multi-step train function fails under that strategy
        ("You must feed a value for placeholder tensor ..."), so the default
        of up to 100 steps per call applies to the other strategies only.
        """
        if config.steps_per_execution is None and (
            self._multi_worker() or keras.backend.backend() == "torch"
        ):
            return 1  # Keras' torch trainer refuses more than one step per call
        return config.execution_steps

    def jit_compile(self, config):
        """The config's; unset, XLA except under MultiWorkerMirroredStrategy.

        TensorFlow 2.21 with XLA under that strategy aborts ("double free or
        corruption" while collecting garbage).
        """
        if config.jit_compile is not None:
            return config.jit_compile
        return not self._multi_worker()

    def compiled_model(self, config, splits):
        """The config's model for `splits`, prunable, built and compiled in this placement."""
        with self.build_scope():
            model = prunable(
                build_model(config.model, splits.input_shape, splits.num_classes, config.width)
            )
            return training.compile_for(
                model,
                config,
                self.steps_per_execution(config),
                self.jit_compile(config),
            )

    def build_scope(self):
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    def fit_scope(self, model):
        if self.strategy is None:
            return contextlib.nullcontext()
        return self._distribute.fit_scope(model, self.strategy)
