"""Rewind points: a snapshot of a model's weights, and optimizer resets.

A rewind point is split in two. Masked layers keep their part themselves, as
their initial weights (`kernel_initial`, `bias_initial`, ...), so `.keras`
files and checkpoints carry it. Every other weight of the model (biases of
plain layers, BatchNorm gammas, betas and moving statistics, ...) is copied
into a `WeightSnapshot`.
"""

import numpy as np
from keras import ops

from lth_keras import _compat
from lth_keras.masks import masked_layers, weights_by_key

__all__ = ["OptimizerReset", "WeightSnapshot"]

_NOT_STATE = _compat.NOT_OPTIMIZER_STATE


def _unmasked_weights(model):
    """The model's weights that no masked layer owns, keyed as `weights_by_key`."""
    owned = set()
    for layer in masked_layers(model):
        owned.update(id(w) for w in layer.weights)
    return {key: w for key, w in weights_by_key(model).items() if id(w) not in owned}


class WeightSnapshot:
    """The weights of a whole model at one point, for rewinding.

    Taking a snapshot records the masked layers' kernels and biases as their
    initial weights (see `MaskedLayerMixin.save_initial`) and copies every
    other weight here; `restore` puts all of them back, with kernels
    multiplied by the current masks. Masks are never part of a snapshot.

    Args:
        model: A built Keras model.
        save_initial: Whether the masked layers' current weights become their
            initial weights. `False` keeps the initial weights they hold (for
            a model that is already a ticket). Defaults to `True`.

    Example:

    ```python
    snapshot = WeightSnapshot(model)   # e.g. at iteration 0
    model.fit(x, y, epochs=1)
    snapshot.restore(model)            # weights are back, masks kept
    ```
    """

    def __init__(self, model, save_initial=True):
        if save_initial:
            for layer in masked_layers(model):
                layer.save_initial()
        self.values = {
            key: ops.convert_to_numpy(w).copy() for key, w in _unmasked_weights(model).items()
        }

    @classmethod
    def from_values(cls, values):
        """A snapshot of unmasked weights given as `{"layer/weight": array}`.

        The masked layers' part is whatever their initial weights hold.

        Args:
            values: Dict from weight key (see `lth_keras.masks.weights_by_key`)
                to array, as in `self.values`.

        Returns:
            A `WeightSnapshot`.

        Example:

        ```python
        same = WeightSnapshot.from_values(snapshot.values)
        ```
        """
        snapshot = cls.__new__(cls)
        snapshot.values = {key: np.asarray(v) for key, v in values.items()}
        return snapshot

    def restore(self, model, include_masked=True):
        """Writes the snapshot back into `model` (kernels times masks).

        Args:
            model: The model the snapshot was taken from (or one of the same
                architecture and layer names).
            include_masked: Whether masked layers are rewound to their
                initial weights too. Defaults to `True`.

        Raises:
            ValueError: If the model's unmasked weights do not match the
                snapshot's keys and shapes. Nothing is changed then.

        Example:

        ```python
        snapshot.restore(model)
        ```
        """
        weights = _unmasked_weights(model)
        if set(weights) != set(self.values):
            raise ValueError(
                "The model's weights do not match the snapshot. Missing: "
                f"{sorted(set(self.values) - set(weights))}; unexpected: "
                f"{sorted(set(weights) - set(self.values))}."
            )
        for key, weight in weights.items():
            if tuple(weight.shape) != self.values[key].shape:
                raise ValueError(
                    f"Weight {key!r} has shape {tuple(weight.shape)} but the "
                    f"snapshot holds shape {self.values[key].shape}."
                )
        if include_masked:
            for layer in masked_layers(model):
                layer.rewind()
        for key, weight in weights.items():
            weight.assign(self.values[key])


def _iteration_variables(optimizer):
    return [v for v in optimizer.variables if v.name == "iteration"]


def _compact(value):
    """A constant array as its scalar (the usual optimizer state), else a copy."""
    flat = value.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return flat[0]
    return value.copy()


def _state(optimizer):
    """The optimizer's per-weight state variables, in order (step counter and lr left out)."""
    return [v for v in optimizer.variables if v.name not in _NOT_STATE]


def _leaves(optimizer):
    """The optimizers doing the updates: a `MultiOptimizer`'s sub-optimizers, else itself."""
    subs = getattr(optimizer, "optimizers", None)
    if isinstance(subs, (list, tuple)) and subs and optimizer not in subs:
        return [leaf for sub in subs for leaf in _leaves(sub)]
    return [optimizer]


def _fresh_state(optimizer):
    """`[(state variable, fresh value)]` of one optimizer, from a copy built on its weights."""
    with _compat.trusted_config():
        fresh = type(optimizer).from_config(optimizer.get_config())
    fresh.build(list(optimizer._trainable_variables))
    mine, theirs = _state(optimizer), _state(fresh)
    # Names may differ (Keras numbers unnamed variables globally), shapes may not.
    shapes = [(tuple(v.shape), str(v.dtype)) for v in mine]
    if shapes != [(tuple(v.shape), str(v.dtype)) for v in theirs]:
        raise ValueError(
            f"Cannot reset {type(optimizer).__name__}: a copy built from its config has "
            "different state variables. Received optimizer variables: "
            f"{[v.name for v in mine]}; the copy has {[v.name for v in theirs]}."
        )
    return [
        (variable, _compact(ops.convert_to_numpy(initial)))
        for variable, initial in zip(mine, theirs, strict=True)
    ]


class OptimizerReset:
    """Puts an optimizer's state back to that of a fresh optimizer on the current weights.

    The fresh state (zero momenta and Adam moments, Adagrad's initial
    accumulators, ScheduleFreeAdamW's copy of the weights, Nadam's product
    of momentum factors, ...) is read from a throwaway copy of the optimizer
    built from its config on the same variables at the time of the reset,
    so state that a fresh optimizer derives from the weights (schedule-free
    sequences) is derived from the pruned and rewound weights, exactly zero
    where they are pruned. The step counter, the learning rate and the loss
    scale of mixed precision are not state: `reset` sets the step counter
    and leaves the other two alone.

    Args:
        optimizer: A built `keras.optimizers.Optimizer`.
        variables: The variables it was built for (the model's
            `trainable_variables`).

    Raises:
        ValueError: If a copy of the optimizer built from its config does
            not have the same state variables (a custom optimizer whose
            `from_config` differs).

    Example:

    ```python
    reset = OptimizerReset(model.optimizer, model.trainable_variables)
    model.fit(x, y, epochs=1)
    reset.reset(iterations=0)  # fresh state, schedules restart
    ```
    """

    def __init__(self, optimizer, variables):
        self.optimizer = optimizer
        self.variables = list(variables)
        self._fresh()  # fails now, not at the first reset

    def _fresh(self):
        """`[(state variable, fresh value)]` from copies built on the current weights."""
        return [pair for leaf in _leaves(self.optimizer) for pair in _fresh_state(leaf)]

    def reset(self, iterations=0):
        """Restores a fresh optimizer's state and sets the step counter.

        Args:
            iterations: Value for the optimizer's iteration count (in
                optimizer steps), so that learning-rate schedules continue
                from there. Defaults to `0`.

        Example:

        ```python
        reset.reset(iterations=0)
        ```
        """
        for variable, value in self._fresh():
            if np.ndim(value) == 0 and len(variable.shape) > 0:
                variable.assign(ops.full(variable.shape, value, dtype=variable.dtype))
            else:
                variable.assign(value)
        steps = int(iterations) * int(
            getattr(self.optimizer, "gradient_accumulation_steps", None) or 1
        )
        for variable in _iteration_variables(self.optimizer):
            variable.assign(steps)

    def reset_pruned(self, masks):
        """Gives newly pruned entries a fresh optimizer state; kept entries keep theirs.

        For masks that change during training (gradual pruning): momentum or
        Adam moments kept at a pruned entry would move the pruned weight
        (on JAX, where no constraint masks after the update), so each slot
        of a masked weight (`"<weight path>_momentum"`, ...) takes a fresh
        optimizer's value where the mask is False.

        Args:
            masks: `{id(weight variable): bool mask}`.

        Example:

        ```python
        reset.reset_pruned({id(w.variable): mask for w, mask in pairs})
        ```
        """
        fresh = {id(variable): value for variable, value in self._fresh()}
        for variable in self.variables:
            mask = masks.get(id(variable))
            if mask is None:
                continue
            for leaf in _leaves(self.optimizer):
                for slot in _compat.optimizer_slots(leaf, variable):
                    value = fresh.get(id(slot))
                    if value is None:
                        continue
                    value = ops.cast(ops.broadcast_to(value, slot.shape), slot.dtype)
                    slot.assign(ops.where(ops.convert_to_tensor(mask), slot.value, value))

    def iterations(self):
        """The optimizer's step count as an int.

        Returns:
            `int(optimizer.iterations)`.

        Example:

        ```python
        reset.iterations()
        ```
        """
        return int(ops.convert_to_numpy(self.optimizer.iterations))
