"""The prunable-weights protocol: `MaskedLayerMixin` and `LotteryWeight`.

A masked layer is the Keras layer it was, with the same config, plus:

- a boolean, non-trainable mask per masked weight (`kernel_mask`,
  `recurrent_kernel_mask`, `embeddings_mask`, ...), initially all ones;
- a non-trainable copy of every masked weight and of the layer's `bias`
  (`kernel_initial`, `bias_initial`, ...): the values that surviving weights
  are reset to when a lottery ticket is rewound.

Masks attach in place (`lth_keras.prunable(model)`, which calls
`lth_keras.layers.attach` on each layer): the layer object, its name, its
variables and every reference to it stay the same, its class becomes the
*masked twin* of its class (a subclass named `Masked<Name>`, so `isinstance`
checks still hold) and the masks and initial copies are added to its
weights. A twin built from a config (`MaskedDense(4)`, a loaded `.keras`
file) creates them in `build()`. Both are the same class, so there is one
mechanism.

Every read of a masked weight by the layer's own code gives the effective
weight `where(mask, stored, 0)`: the twin hooks the attribute that holds the
variable (`_kernel` for `Dense`, `kernel` for an `LSTMCell`, ...). So pruned
weights are exactly zero in every forward pass and get exactly zero
gradient, whatever the optimizer, the training loop or the backend. The
stored variable is zeroed wherever masks change and whenever weights are
written through the layer (`set_weights`, loading, `rewind`,
`reinitialize`), so raw weights show the ticket as it is; an optimizer whose
update mixes entries (Muon) can move stored values at pruned positions,
which the forward pass never reads: `lth_keras.apply_masks(model)` (run by
`LotteryPruner` at the end of every `fit`) zeroes them again.

Everything else in lth_keras reaches these weights through one method,
`layer.get_lottery_weights()`, which returns a `LotteryWeight` (name,
variable, mask, initial) per weight; `get_prunable_weights()` is the subset
with a mask. A user layer may also opt in by subclassing `MaskedLayerMixin`
before its Keras base, naming its kernels in `prunable_attrs` and declaring
each as a `masked_weight` (see the mixin's docstring).
"""

import json
import typing

import keras
import numpy as np
from keras import ops

from lth_keras import _compat
from lth_keras.layers.values import (
    constrain,
    copy,
    copy_of,
    from_host,
    gradient_masked,
    kept,
)

__all__ = ["LotteryWeight", "MaskedLayerMixin", "kept", "masked_weight"]


class LotteryWeight(typing.NamedTuple):
    """One weight of a masked layer, as the lottery-ticket machinery sees it.

    Attributes:
        name: The weight's name in the layer (`"kernel"`,
            `"recurrent_kernel"`, `"depthwise_kernel"`, `"bias"`, ...).
        variable: The stored variable; for a masked weight, exactly zero
            wherever the mask is False once `apply_masks` has run.
        mask: The boolean mask variable of the same shape, or `None` for a
            weight that is rewound but never pruned (a bias).
        initial: The variable holding the weight's rewind value.

    Example:

    ```python
    for weight in layer.get_prunable_weights():
        print(weight.name, weight.variable.shape, float(ops.mean(weight.mask)))
    ```
    """

    name: str
    variable: typing.Any
    mask: typing.Any
    initial: typing.Any


def masked_weight(attr):
    """A class attribute exposing weight `attr` as the effective (masked) weight.

    For layers written for lth_keras: reading `layer.<attr>` gives
    `where(mask, stored, 0)`; assigning `layer.<attr> = self.add_weight(...)`
    in `build()` stores the variable at `layer._<attr>`, as Keras' own layers
    do. (Layers masked in place need nothing: `attach` hooks the attribute
    that holds their variable.)

    Args:
        attr: The attribute name, listed in the layer's `prunable_attrs`.

    Returns:
        A `property`.

    Example:

    ```python
    class MaskedScale(lth_keras.layers.MaskedLayerMixin, keras.layers.Layer):
        prunable_attrs = ("kernel",)
        kernel = lth_keras.layers.masked_weight("kernel")
    ```
    """
    stored = f"_{attr}"

    def getter(self):
        return self._lth_read(attr, getattr(self, stored))

    def setter(self, value):
        setattr(self, stored, value)

    return MaskedWeight(
        getter,
        setter,
        doc=f"The effective `{attr}`: the stored variable where its mask is True, 0 elsewhere.",
    )


class MaskedWeight(property):
    """The property `masked_weight` makes (a `property`, marked as masking already)."""


def hooked_weight(storage, attr):
    """The property a twin class puts on `storage`, the attribute holding weight `attr`.

    Reads give the effective weight; writes store the variable in the
    instance's `__dict__`, where the layer's own code put it before.
    """

    def getter(self):
        try:
            raw = vars(self)[storage]
        except KeyError:
            raise AttributeError(storage) from None
        return self._lth_read(attr, raw)

    def setter(self, value):
        vars(self)[storage] = value

    return property(
        getter,
        setter,
        doc=f"The effective `{attr}`: the stored variable where its mask is True, 0 elsewhere.",
    )


#: The config key of a twin whose masked weights differ from its class default.
CONFIG_KEY = "lth_masked"
#: The key under which a masked layer saves the names of its masked weights.
STORE_KEY = "lth_keras"


def stored_names(store):
    """The masked weights a layer's saved variables record, or `None` (saved without masks)."""
    if STORE_KEY not in store.keys():
        return None
    return tuple(json.loads(bytes(np.asarray(store[STORE_KEY])).decode())["masked"])


class MaskedLayerMixin:
    """Masks and initial weights for a Keras layer; see the module docstring.

    Twins of Keras layers are made for you (`lth_keras.prunable`,
    `lth_keras.layers.attach`). To write a masked layer yourself, subclass
    it before a Keras layer class. Class attributes:

    - `prunable_attrs`: the names of the weights to mask. Defaults to
      `("kernel",)`.
    - `initializer_attrs`: the constructor argument holding each weight's
      initializer, for `reinitialize()`. Defaults to Dense's names.
    - `kernel_axes`: each weight's `(input axis, output axis)`, for
      structured sparsity (`LotteryPruner(structure="units")`, ...); e.g.
      `{"kernel": (-2, -1)}` for a Dense-like kernel. Defaults to `{}`:
      unstructured pruning only.
    - `weight_attrs`: the attribute holding each weight's variable, where it
      is not `_<name>` (the attribute `masked_weight` stores at). Defaults
      to `{}`.

    Every weight named in `prunable_attrs` and a `bias` attribute, when the
    layer has one, get an initial copy; the masks and copies are created at
    the end of `build()`, so a custom layer that overrides `build()` creates
    its kernels first and then calls `super().build(input_shape)`.

    Example:

    ```python
    @keras.saving.register_keras_serializable(package="my_project")
    class MaskedScale(lth_keras.layers.MaskedLayerMixin, keras.layers.Layer):
        prunable_attrs = ("kernel",)
        initializer_attrs = {"kernel": "kernel_initializer"}
        kernel = lth_keras.layers.masked_weight("kernel")

        def __init__(self, kernel_initializer="ones", **kwargs):
            super().__init__(**kwargs)
            self.kernel_initializer = kernel_initializer

        def build(self, input_shape):
            self.kernel = self.add_weight(
                shape=input_shape[-1:], initializer=self.kernel_initializer)
            super().build(input_shape)

        def call(self, x):
            return x * self.kernel
    ```
    """

    prunable_attrs = ("kernel",)
    initializer_attrs = {"kernel": "kernel_initializer", "bias": "bias_initializer"}
    # Kernel layout for structured sparsity: attribute -> (input axis, output
    # axis), negative from the end, `None` where there is none. A kernel
    # missing here can only be pruned unstructured.
    kernel_axes = {}
    weight_attrs = {}

    def __init__(self, *args, **kwargs):
        masked = kwargs.pop(CONFIG_KEY, None)
        # Keras' Embedding would `set_weights([weights])` in its constructor
        # before the masks and initial weights exist; they are set here instead.
        weights = kwargs.pop("weights", None) if isinstance(self, keras.layers.Embedding) else None
        super().__init__(*args, **kwargs)
        if masked is not None:
            # Not tracked: a tuple of names is no Keras state.
            object.__setattr__(self, "prunable_attrs", tuple(masked))
        self._reject_unsupported()
        if weights is not None:
            self.build()
            values = weights[0] if isinstance(weights, list) and len(weights) == 1 else weights
            self._lth_variable(self.prunable_attrs[0]).assign(values)
            self.save_initial()

    def _reject_unsupported(self):
        name = type(self).__name__
        if getattr(self, "lora_rank", None):
            raise ValueError(
                f"{name} does not support LoRA: a low-rank update would bypass "
                f"the mask. Received: lora_rank={self.lora_rank}. Remove "
                "`lora_rank`, or prune first and enable LoRA on the plain "
                "model returned by lth_keras.strip_masks()."
            )
        if getattr(self, "quantization_config", None) is not None:
            raise ValueError(
                f"{name} does not support quantization. Received: "
                f"quantization_config={self.quantization_config}. Quantize the "
                "plain model returned by lth_keras.strip_masks() instead."
            )
        if getattr(self, "quantization_mode", None) is not None:
            raise ValueError(
                f"{name} does not support quantized dtype policies. Received: "
                f"dtype={self.dtype_policy.name!r}. Use a float policy and "
                "quantize the model returned by lth_keras.strip_masks() instead."
            )

    # The protocol ----------------------------------------------------------

    def build(self, input_shape=None):
        super().build(input_shape)
        self._lth_add_state(self.prunable_attrs)

    def _lth_read(self, attr, raw):
        """The effective value of weight `attr` stored in `raw` (see the module docstring)."""
        mask = vars(self).get(f"{attr}_mask")
        if mask is None or not _compat.computing():
            return raw  # the variable itself, outside a call: exactly zero where pruned
        return gradient_masked(raw, mask)

    def _lth_storage(self, attr):
        return self.weight_attrs.get(attr, f"_{attr}")

    def _lth_variable(self, attr):
        if attr in self.prunable_attrs:
            storage = self._lth_storage(attr)
            variable = vars(self).get(storage)
            return getattr(self, storage) if variable is None else variable
        return getattr(self, attr)

    def _lth_layout(self):
        """`{weight: (input axis, output axis)}` of this layer where it differs by instance.

        Twins of layer classes (`lth_keras.layers.twin_class`) read it from
        the rules (an `EinsumDense`'s axes depend on its equation); a layer
        written with this mixin declares `kernel_axes`.
        """
        return {}

    def _lth_rewound_attrs(self, attrs=None):
        attrs = list(self.prunable_attrs if attrs is None else attrs)
        if "bias" not in self.prunable_attrs and isinstance(
            getattr(self, "bias", None), keras.Variable
        ):
            attrs.append("bias")
        return attrs

    def _lth_add_state(self, attrs):
        """Adds a mask and an initial copy to each of `attrs` that has none (and the bias)."""
        axes = self._lth_layout()
        if any(self.kernel_axes.get(attr) != value for attr, value in axes.items()):
            # This layer's own layout (an EinsumDense's depends on its equation).
            object.__setattr__(self, "kernel_axes", {**self.kernel_axes, **axes})
        for attr in attrs:
            if vars(self).get(f"{attr}_mask") is not None:
                continue
            variable = self._lth_variable(attr)
            mask = self.add_weight(
                name=f"{attr}_mask",
                shape=variable.shape,
                initializer=from_host(np.ones(tuple(variable.shape), bool)),
                dtype="bool",
                trainable=False,
            )
            setattr(self, f"{attr}_mask", mask)
            constrain(variable, mask)
        for attr in self._lth_rewound_attrs(attrs):
            if vars(self).get(f"{attr}_initial") is not None:
                continue
            variable = self._lth_variable(attr)
            try:
                value = from_host(ops.convert_to_numpy(variable))
            except (NotImplementedError, TypeError, ValueError):
                # Built inside a trace (a subclassed model's first call): Keras
                # initializes the variables when the trace ends, the kernel
                # first, so the copy reads it then.
                value = copy_of(variable)
            initial = self.add_weight(
                name=f"{attr}_initial",
                shape=variable.shape,
                initializer=value,
                dtype=variable.dtype,
                trainable=False,
            )
            setattr(self, f"{attr}_initial", initial)

    def get_lottery_weights(self):
        """Every weight with an initial copy: the masked weights, then the bias.

        This is the one way lth_keras reads a masked layer's kernels, masks
        and initial weights; a layer that implements it takes part in
        pruning, rewinding, tickets and analysis.

        Returns:
            A list of `LotteryWeight`, masked weights first (in
            `prunable_attrs` order, each with its mask), then the bias if any
            (`mask=None`).

        Raises:
            ValueError: If the layer is not built.

        Example:

        ```python
        layer = MaskedDense(4)
        layer.build((None, 3))
        [(w.name, w.mask is not None) for w in layer.get_lottery_weights()]
        # [('kernel', True), ('bias', False)]
        ```
        """
        self._check_built("get_lottery_weights")
        return [
            LotteryWeight(
                attr,
                self._lth_variable(attr),
                vars(self).get(f"{attr}_mask") if attr in self.prunable_attrs else None,
                vars(self)[f"{attr}_initial"],
            )
            for attr in self._lth_rewound_attrs()
        ]

    def get_prunable_weights(self):
        """The masked weights: `get_lottery_weights()` without the bias.

        Returns:
            A list of `LotteryWeight` with a mask, in `prunable_attrs` order.

        Raises:
            ValueError: If the layer is not built.

        Example:

        ```python
        layer = MaskedDense(4)
        layer.build((None, 3))
        [w.name for w in layer.get_prunable_weights()]  # ['kernel']
        ```
        """
        return [w for w in self.get_lottery_weights() if w.mask is not None]

    def _check_built(self, method):
        if not self.built:
            raise ValueError(
                f"Layer {self.name!r} is not built, so it has no masks yet. "
                f"Build it (call it on data or use keras.Input) before "
                f"calling {method}()."
            )

    # Masks -----------------------------------------------------------------

    def get_masks(self):
        """Returns the masks as boolean NumPy arrays, keyed by weight name.

        Returns:
            A dict such as `{"kernel": array(..., dtype=bool)}`.

        Raises:
            ValueError: If the layer is not built.

        Example:

        ```python
        layer = MaskedDense(4)
        layer.build((None, 3))
        layer.get_masks()["kernel"].all()  # True
        ```
        """
        return {w.name: ops.convert_to_numpy(w.mask) != 0 for w in self.get_prunable_weights()}

    def set_masks(self, masks):
        """Sets masks and zeroes the stored weights where masks are 0.

        Args:
            masks: Dict from weight name (see `prunable_attrs`) to an array
                of the weight's shape holding only 0/1 or booleans. Names not
                given keep their mask.

        Raises:
            ValueError: If the layer is not built, a key is not a masked
                weight, a shape differs, or a value is not 0 or 1. Nothing is
                changed in that case.

        Example:

        ```python
        layer = MaskedDense(2)
        layer.build((None, 2))
        layer.set_masks({"kernel": [[1, 0], [0, 1]]})
        ```
        """
        self.assign_checked_masks(self.check_masks(masks))

    def check_masks(self, masks):
        """Validates `masks` (see `set_masks`) without writing anything.

        Args:
            masks: As for `set_masks`.

        Returns:
            A dict from attribute to an array in the mask's dtype, for
            `assign_checked_masks`.

        Raises:
            ValueError: As `set_masks`.

        Example:

        ```python
        checked = layer.check_masks({"kernel": mask})
        layer.assign_checked_masks(checked)
        ```
        """
        self._check_built("set_masks")
        variables = {w.name: w.mask for w in self.get_prunable_weights()}
        checked = {}
        for attr, value in masks.items():
            if attr not in variables:
                raise ValueError(
                    f"Received a mask for {attr!r}, which is not a masked "
                    f"weight of {self.name!r}. Expected one of "
                    f"{list(self.prunable_attrs)}."
                )
            value = np.asarray(value)
            variable = variables[attr]
            if value.shape != tuple(variable.shape):
                raise ValueError(
                    f"Received a mask of the wrong shape for {self.name}/{attr}. "
                    f"Expected: {tuple(variable.shape)}. Received: {value.shape}"
                )
            if not np.all((value == 0) | (value == 1)):
                raise ValueError(
                    "Masks must hold only 0 and 1. Received other values in "
                    f"the mask for {self.name}/{attr}."
                )
            checked[attr] = value.astype(variable.dtype)
        return checked

    def assign_checked_masks(self, checked):
        """Writes masks returned by `check_masks` and zeroes the weights.

        Args:
            checked: The dict returned by `check_masks`.

        Example:

        ```python
        layer.assign_checked_masks(layer.check_masks({"kernel": mask}))
        ```
        """
        for attr, value in checked.items():
            vars(self)[f"{attr}_mask"].assign(value)
        self.apply_masks()

    def apply_masks(self):
        """Zeroes the stored weights wherever their masks are 0.

        Masked layers do this themselves whenever lth_keras or Keras writes
        their weights; call it after assigning a weight variable directly.

        Raises:
            ValueError: If the layer is not built.

        Example:

        ```python
        layer.get_prunable_weights()[0].variable.assign(dense_values)
        layer.apply_masks()
        ```
        """
        for weight in self.get_prunable_weights():
            weight.variable.assign(kept(weight.mask, weight.variable))

    # Initial weights -------------------------------------------------------

    def save_initial(self):
        """Records the current weights (masked ones and the bias) as the initial ones.

        The masked weights are stored, so pruned entries are recorded as 0.

        Raises:
            ValueError: If the layer is not built.

        Example:

        ```python
        layer = MaskedDense(2)
        layer.build((None, 2))
        layer.save_initial()
        ```
        """
        for weight in self.get_lottery_weights():
            value = weight.variable
            weight.initial.assign(copy(value) if weight.mask is None else kept(weight.mask, value))

    def rewind(self):
        """Resets masked weights to `initial * mask` and the bias to its initial value.

        Raises:
            ValueError: If the layer is not built.

        Example:

        ```python
        layer = MaskedDense(2)
        layer.build((None, 2))
        layer.rewind()
        ```
        """
        for weight in self.get_lottery_weights():
            value = weight.initial
            weight.variable.assign(copy(value) if weight.mask is None else kept(weight.mask, value))

    def reinitialize(self, seed):
        """Draws new masked weights and bias from the layer's initializers.

        Masked weights are masked after drawing, so pruned entries stay 0.
        The initializers are re-created from their configs with seeds derived
        from `seed`, so the same seed draws the same values.

        Args:
            seed: An int seed.

        Raises:
            ValueError: If the layer is not built, or has no initializer
                attribute for a weight (see `initializer_attrs`).

        Example:

        ```python
        layer = MaskedDense(2)
        layer.build((None, 2))
        layer.reinitialize(seed=1)
        ```
        """
        for i, weight in enumerate(self.get_lottery_weights()):
            attr = self.initializer_attrs.get(weight.name)
            if attr is None or not hasattr(self, attr):
                raise ValueError(
                    f"{type(self).__name__} cannot re-initialize {weight.name!r}: "
                    "`initializer_attrs` names no initializer for it. Received: "
                    f"initializer_attrs={self.initializer_attrs}"
                )
            initializer = keras.initializers.get(getattr(self, attr))
            config = initializer.get_config()
            if "seed" in config:
                config["seed"] = int(seed) * 1009 + i
                if keras.backend.backend() != "tensorflow":
                    # JAX and PyTorch take 32-bit seeds; TensorFlow takes
                    # 64-bit ones, which the first release's results used.
                    config["seed"] %= 2**32
            fresh = type(initializer).from_config(config)
            value = fresh(tuple(weight.variable.shape), dtype=weight.variable.dtype)
            if weight.mask is not None:
                value = kept(weight.mask, value)
            weight.variable.assign(value)

    # Keras integration -----------------------------------------------------

    def enable_lora(self, *args, **kwargs):
        raise ValueError(
            f"{type(self).__name__} does not support LoRA: a low-rank update "
            "would bypass the mask. Enable LoRA on the plain model returned "
            "by lth_keras.strip_masks() instead."
        )

    def quantize(self, mode=None, **kwargs):
        raise ValueError(
            f"{type(self).__name__} does not support quantization. Received: "
            f"mode={mode!r}. Quantize the plain model returned by "
            "lth_keras.strip_masks() instead."
        )

    def get_config(self):
        config = super().get_config()
        if tuple(self.prunable_attrs) != tuple(type(self).prunable_attrs):
            config[CONFIG_KEY] = list(self.prunable_attrs)
        return config

    # Keras' Dense and Embedding save a fixed, quantization-aware list of
    # variables. Masked layers reject quantization and LoRA, so every
    # variable is saved in order: the layer's own first (so the layout
    # starts as the plain layer's), then masks and initial weights, and the
    # names of the masked weights under STORE_KEY (for `lth_keras.load_model`,
    # which attaches masks to the layers of a model built from its
    # constructor before loading).
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)
        names = json.dumps({"masked": list(self.prunable_attrs)}).encode()
        store[STORE_KEY] = np.frombuffer(names, dtype=np.uint8)

    def load_own_variables(self, store):
        keys = [key for key in store.keys() if key != STORE_KEY]
        variables = _compat.own_variables(self)
        if len(keys) == len(variables):
            for i, variable in enumerate(variables):
                variable.assign(store[str(i)])
            self.apply_masks()
            return
        plain = self._lth_plain_variables()
        if stored_names(store) is None and len(keys) == len(plain):
            # Saved by the plain layer (the model was not pruned when saved):
            # the file's weights under this model's masks.
            for i, variable in enumerate(plain):
                variable.assign(store[str(i)])
            self.apply_masks()
            return
        raise ValueError(
            f"Layer {self.name!r} expected {len(variables)} variables (masks and initial "
            f"weights included) or {len(plain)} (without), but the file holds {len(keys)} "
            "for it. Received: a file saved from a model of another architecture."
        )

    def _lth_plain_variables(self):
        """The layer's own variables without its masks and initial copies, in order."""
        lth = [(w.mask, w.initial) for w in self.get_lottery_weights()]
        ours = {id(v) for pair in lth for v in pair if v is not None}
        return [v for v in _compat.own_variables(self) if id(v) not in ours]

    def set_weights(self, weights):
        super().set_weights(weights)
        self.apply_masks()
