"""The prunable-weights protocol: `MaskedLayerMixin` and `LotteryWeight`.

A masked layer behaves as its Keras parent, with the same constructor and
config, and adds in `build()`:

- a boolean, non-trainable mask per prunable kernel (`kernel_mask`, or
  `depthwise_kernel_mask` and `pointwise_kernel_mask`, or
  `embeddings_mask`), initially all ones;
- a non-trainable copy of every kernel and bias as it was when built
  (`kernel_initial`, `bias_initial`, ...): the values that surviving weights
  are reset to when a lottery ticket is rewound.

Everything else in lth_keras (model-level masks, conversion, tickets, the
callback, analysis) reaches these weights through one method,
`layer.get_lottery_weights()`, which returns a `LotteryWeight` (name,
variable, mask, initial) per weight; `get_prunable_weights()` is the subset
with a mask. A user layer opts in by subclassing `MaskedLayerMixin` before
its Keras base, naming its kernels in `prunable_attrs` and declaring each as
a `masked_weight` (see the mixin's docstring).

Reading a prunable kernel attribute (`layer.kernel`, `layer.embeddings`,
...) gives the effective kernel `kernel * mask`, which is what `call()` uses,
so pruned weights get exactly zero gradient.

The stored kernel is kept exactly zero at pruned positions: whenever masks
change (`set_masks`), and whenever weights are written through the layer
(`set_weights`, loading a `.keras` or `.weights.h5` file, `rewind`,
`reinitialize`). Raw weights (`get_weights()`, saved files) therefore show the
ticket as it is, and `call()` gets `kernel * mask` without a multiply per step:
the forward pass reads the stored kernel and the backward pass zeroes the
gradient where the mask is False (a forward multiply costs 10-17% of a LeNet-300-100 step
on a CPU). Writing a kernel variable directly
(`layer.get_prunable_weights()[0].variable.assign(...)`) bypasses this; call
`layer.apply_masks()` (or `lth_keras.apply_masks(model)`) afterwards.
`LotteryPruner` does so at the start and end of every `fit`, and resets the
optimizer whenever masks change: optimizer state from before a change
(momentum, Adam moments) would otherwise still move newly pruned weights, so
reset it too when calling `set_masks` yourself.
"""

import typing

import keras
import numpy as np
from keras import ops

__all__ = ["LotteryWeight", "MaskedLayerMixin", "masked_weight"]


class LotteryWeight(typing.NamedTuple):
    """One weight of a masked layer, as the lottery-ticket machinery sees it.

    Attributes:
        name: The layer attribute holding the weight (`"kernel"`,
            `"depthwise_kernel"`, `"bias"`, ...).
        variable: The stored variable; for a masked weight, exactly zero
            wherever the mask is 0.
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


def _gradient_masked(kernel, mask):
    """`kernel * mask` for a kernel already zero where `mask` is 0.

    The forward value is the kernel itself, which the masked layers keep
    exactly zero at pruned positions, so it equals `kernel * mask` without a
    multiply per step; the gradient is zeroed where the mask is False, as
    the gradient of `kernel * mask` (exactly 0 there, even for a NaN or
    infinite upstream gradient).
    """

    @ops.custom_gradient
    def masked(value):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            if hasattr(upstream, "dense_shape"):
                # A sparse gradient (rows of an embedding lookup, TensorFlow's
                # IndexedSlices) stays sparse. Not tested by `indices`: every
                # PyTorch tensor has an `indices()` method.
                rows = ops.take(ops.convert_to_tensor(mask), upstream.indices, axis=0)
                return type(upstream)(
                    kept(rows, upstream.values),
                    upstream.indices,
                    upstream.dense_shape,
                )
            return kept(mask, upstream)

        return ops.convert_to_tensor(value), grad

    if keras.backend.backend() == "torch":
        # PyTorch's autograd.Function (Keras' torch custom_gradient) only
        # tracks tensor arguments, not variables. Elsewhere the variable is
        # passed as it is, as in the first release.
        kernel = ops.convert_to_tensor(kernel)
    return masked(kernel)


def kept(mask, value):
    """`value` where the boolean `mask` (of `value`'s shape) is True, exactly 0 elsewhere.

    Unlike `value * mask`, pruned entries are 0 even where `value` is
    infinite or NaN, and the mask needs no cast to `value`'s dtype. It masks
    every gradient step, so it is written for speed. The boolean mask is read
    at 1 byte per weight where a float32 one took 4 (XLA fuses the select
    into each optimizer slot's update and reads the mask in each: 14% of a
    LeNet step's bytes on JAX, 3.6% now). A select, not `value * cast(mask)`:
    on TensorFlow without XLA the bool-to-float cast costs twice the
    multiply. There `keras.ops.where` emits `SelectV2`, whose CPU kernel
    takes 103 us on LeNet's first kernel against 72 us for `Select` of the
    same shapes (the float multiply: 62 us); the two lower to the same XLA
    select, so TensorFlow gets `Select`.
    """
    mask, value = ops.convert_to_tensor(mask), ops.convert_to_tensor(value)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # the backend in use

        return tf.raw_ops.Select(condition=mask, x=value, y=tf.zeros_like(value))
    return ops.where(mask, value, 0)


def _copy(value):
    """A new tensor holding `value`, to assign to another variable.

    On JAX, `a.assign(b)` makes variable `a` hold the very array of variable
    `b`; Keras' JAX trainer donates every variable's buffer to the train
    step, and a buffer held by two variables is donated twice ("Attempt to
    donate the same buffer twice") or deleted under the other variable.
    TensorFlow and PyTorch copy on assign anyway.
    """
    return ops.copy(value)


def _stored_name(attr):
    # Keras' own layers keep a kernel's variable at `_<name>` (Dense writes
    # `self._kernel` in its `build()`), so the masked property stores there too.
    return f"_{attr}"


def masked_weight(attr):
    """A class attribute exposing kernel `attr` as the effective (masked) kernel.

    Reading `layer.<attr>` gives the stored kernel with its gradient
    zeroed where the mask is False (the stored kernel is kept zero there);
    assigning `layer.<attr> = self.add_weight(...)` in `build()` stores
    the variable, as Keras' own layers do.

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
    stored = _stored_name(attr)

    def getter(self):
        variable = getattr(self, stored)
        mask = getattr(self, f"{attr}_mask", None)
        return variable if mask is None else _gradient_masked(variable, mask)

    def setter(self, value):
        setattr(self, stored, value)

    return property(
        getter,
        setter,
        doc=f"The effective `{attr}` (the stored variable times its mask), with the gradient "
        "zeroed where the mask is False.",
    )


class MaskedLayerMixin:
    """Masks and initial weights for a Keras layer; see the module docstring.

    Subclass it before a Keras layer class. Class attributes:

    - `prunable_attrs`: the attribute names of the kernels to mask, each
      declared with `masked_weight(name)`. Defaults to `("kernel",)`.
    - `initializer_attrs`: the constructor argument holding each weight's
      initializer, for `reinitialize()`. Defaults to Dense's names.
    - `kernel_axes`: each kernel's `(input axis, output axis)`, for
      structured sparsity (`LotteryPruner(structure="units")`, ...); e.g.
      `{"kernel": (-2, -1)}` for a Dense-like kernel. Defaults to `{}`:
      unstructured pruning only.

    Every kernel named in `prunable_attrs` and a `bias` attribute, when the
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reject_unsupported()

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
        if self.quantization_mode is not None:
            raise ValueError(
                f"{name} does not support quantized dtype policies. Received: "
                f"dtype={self.dtype_policy.name!r}. Use a float policy and "
                "quantize the model returned by lth_keras.strip_masks() instead."
            )

    # The protocol ----------------------------------------------------------

    def build(self, input_shape=None):
        super().build(input_shape)
        for attr in self.prunable_attrs:
            variable = self._lth_variable(attr)
            mask = self.add_weight(
                name=f"{attr}_mask",
                shape=variable.shape,
                initializer="ones",
                dtype="bool",
                trainable=False,
            )
            setattr(self, f"{attr}_mask", mask)
        for attr in self._lth_rewound_attrs():
            variable = self._lth_variable(attr)
            initial = self.add_weight(
                name=f"{attr}_initial",
                shape=variable.shape,
                initializer="zeros",
                dtype=variable.dtype,
                trainable=False,
            )
            initial.assign(_copy(variable))
            setattr(self, f"{attr}_initial", initial)

    def _lth_variable(self, attr):
        if attr in self.prunable_attrs:
            return getattr(self, _stored_name(attr))
        return getattr(self, attr)

    def _lth_rewound_attrs(self):
        attrs = list(self.prunable_attrs)
        if getattr(self, "bias", None) is not None:
            attrs.append("bias")
        return attrs

    def get_lottery_weights(self):
        """Every weight with an initial copy: the prunable kernels, then the bias.

        This is the one way lth_keras reads a masked layer's kernels, masks
        and initial weights; a layer that implements it takes part in
        pruning, rewinding, tickets and analysis.

        Returns:
            A list of `LotteryWeight`, kernels first (in `prunable_attrs`
            order, each with its mask), then the bias if any (`mask=None`).

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
                getattr(self, f"{attr}_mask", None) if attr in self.prunable_attrs else None,
                getattr(self, f"{attr}_initial"),
            )
            for attr in self._lth_rewound_attrs()
        ]

    def get_prunable_weights(self):
        """The masked kernels: `get_lottery_weights()` without the bias.

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
        """Returns the masks as boolean NumPy arrays, keyed by kernel attribute.

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
        """Sets masks and zeroes the stored kernels where masks are 0.

        Args:
            masks: Dict from kernel attribute (see `prunable_attrs`) to an
                array of the kernel's shape holding only 0/1 or booleans.
                Attributes not given keep their mask.

        Raises:
            ValueError: If the layer is not built, a key is not a prunable
                kernel, a shape differs, or a value is not 0 or 1. Nothing is
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
                    f"Received a mask for {attr!r}, which is not a prunable "
                    f"kernel of {self.name!r}. Expected one of "
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
        """Writes masks returned by `check_masks` and zeroes the kernels.

        Args:
            checked: The dict returned by `check_masks`.

        Example:

        ```python
        layer.assign_checked_masks(layer.check_masks({"kernel": mask}))
        ```
        """
        for attr, value in checked.items():
            getattr(self, f"{attr}_mask").assign(value)
        self.apply_masks()

    def apply_masks(self):
        """Zeroes the stored kernels wherever their masks are 0.

        Masked layers do this themselves whenever lth_keras or Keras writes
        their weights; call it after assigning a kernel variable directly.

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
        """Records the current kernels and bias as the layer's initial weights.

        The masked kernels are stored, so pruned entries are recorded as 0.

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
            weight.initial.assign(_copy(weight.variable))

    def rewind(self):
        """Resets kernels to `initial * mask` and the bias to its initial value.

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
            weight.variable.assign(
                _copy(value) if weight.mask is None else kept(weight.mask, value)
            )

    def reinitialize(self, seed):
        """Draws new kernels and bias from the layer's initializers.

        Kernels are masked after drawing, so pruned entries stay 0. The
        initializers are re-created from their configs with seeds derived
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

    # Keras' Dense and Embedding save a fixed, quantization-aware list of
    # variables. Masked layers reject quantization and LoRA, so every
    # variable (masks and initial weights included) is saved in order.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)
        self.apply_masks()

    def set_weights(self, weights):
        super().set_weights(weights)
        self.apply_masks()
