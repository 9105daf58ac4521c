"""Masked Keras layers: one small mixin and thin subclasses of Keras layers.

Each masked layer behaves as its Keras parent, with the same constructor and
config, and adds in `build()`:

- a binary, non-trainable mask per prunable kernel (`kernel_mask`, or
  `depthwise_kernel_mask` and `pointwise_kernel_mask`, or
  `embeddings_mask`), initially all ones;
- a non-trainable copy of every kernel and bias as it was when built
  (`kernel_initial`, `bias_initial`, ...): the values that surviving weights
  are reset to when a lottery ticket is rewound.

Reading a prunable kernel attribute (`layer.kernel`, `layer.embeddings`,
...) gives the effective kernel `kernel * mask`, which is what `call()` uses,
so pruned weights get exactly zero gradient.

The stored kernel is kept exactly zero at pruned positions: whenever masks
change (`set_masks`), and whenever weights are written through the layer
(`set_weights`, loading a `.keras` or `.weights.h5` file, `rewind`,
`reinitialize`). Raw weights (`get_weights()`, saved files) therefore show the
ticket as it is, and `call()` gets `kernel * mask` without a multiply per step:
the forward pass reads the stored kernel and the backward pass multiplies the
gradient by the mask (a forward multiply costs 10-17% of a LeNet-300-100 step
on a CPU). Writing a kernel variable directly (`layer._kernel.assign(...)`)
bypasses this; call `layer.apply_masks()` (or `lth_keras.apply_masks(model)`)
afterwards. `LotteryPruner` does so at the start and end of every `fit`, and
resets the optimizer whenever masks change: optimizer state from before a
change (momentum, Adam moments) would otherwise still move newly pruned
weights, so reset it too when calling `set_masks` yourself.
"""

import keras
import numpy as np
from keras import ops

__all__ = [
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
]


def _gradient_masked(kernel, mask):
    """`kernel * mask` for a kernel already zero where `mask` is 0.

    The forward value is the kernel itself, which the masked layers keep
    exactly zero at pruned positions, so it equals `kernel * mask` without a
    multiply per step; the gradient is multiplied by the mask, exactly as
    the gradient of `kernel * mask`.
    """

    @ops.custom_gradient
    def masked(value):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            if hasattr(upstream, "indices"):
                # A sparse gradient (rows of an embedding lookup) stays sparse.
                rows = ops.cast(ops.take(mask, upstream.indices, axis=0), upstream.dtype)
                return type(upstream)(
                    upstream.values * rows, upstream.indices, upstream.dense_shape
                )
            return ops.multiply(upstream, ops.cast(mask, upstream.dtype))

        return ops.convert_to_tensor(value), grad

    return masked(kernel)


def _masked_weight(attr):
    """A property exposing `attr` as the effective (masked) kernel.

    The variable itself lives at `_<attr>`; the setter lets Keras' own
    `build()` keep writing `self.<attr> = self.add_weight(...)`.
    """

    def getter(self):
        variable = getattr(self, f"_{attr}")
        mask = getattr(self, f"{attr}_mask", None)
        return variable if mask is None else _gradient_masked(variable, mask)

    def setter(self, value):
        setattr(self, f"_{attr}", value)

    return property(
        getter,
        setter,
        doc=f"The effective `{attr}`, `_{attr} * {attr}_mask` (the stored `_{attr}` is kept zero "
        "where the mask is 0), with the gradient multiplied by the mask.",
    )


class MaskedLayerMixin:
    """Masks and initial weights for a Keras layer; see the module docstring.

    Subclasses set `prunable_weights` (attribute names of the kernels to
    mask) and `initializer_attrs` (the constructor argument holding each
    weight's initializer), and expose each prunable kernel through a
    `_masked_weight` property.
    """

    prunable_weights = ("kernel",)
    initializer_attrs = {"kernel": "kernel_initializer", "bias": "bias_initializer"}

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
                "quantize the model returned by lth_keras.strip_masks()."
            )

    def build(self, input_shape=None):
        super().build(input_shape)
        for attr in self.prunable_weights:
            variable = getattr(self, f"_{attr}")
            mask = self.add_weight(
                name=f"{attr}_mask",
                shape=variable.shape,
                initializer="ones",
                dtype=variable.dtype,
                trainable=False,
            )
            setattr(self, f"{attr}_mask", mask)
        for attr, variable in self._rewind_variables().items():
            initial = self.add_weight(
                name=f"{attr}_initial",
                shape=variable.shape,
                initializer="zeros",
                dtype=variable.dtype,
                trainable=False,
            )
            initial.assign(variable)
            setattr(self, f"{attr}_initial", initial)

    def _rewind_variables(self):
        """The stored variables that have an initial copy, by attribute."""
        variables = {attr: getattr(self, f"_{attr}") for attr in self.prunable_weights}
        if getattr(self, "bias", None) is not None:
            variables["bias"] = self.bias
        return variables

    def _check_built(self, method):
        if not self.built:
            raise ValueError(
                f"Layer {self.name!r} is not built, so it has no masks yet. "
                f"Build it (call it on data or use keras.Input) before "
                f"calling {method}()."
            )

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
        self._check_built("get_masks")
        return {
            attr: ops.convert_to_numpy(getattr(self, f"{attr}_mask")) != 0
            for attr in self.prunable_weights
        }

    def set_masks(self, masks):
        """Sets masks and zeroes the stored kernels where masks are 0.

        Args:
            masks: Dict from kernel attribute (see `prunable_weights`) to an
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
        self._assign_masks(self._checked_masks(masks))

    def _checked_masks(self, masks):
        """Validates `masks` (see `set_masks`) and returns them as arrays."""
        self._check_built("set_masks")
        checked = {}
        for attr, value in masks.items():
            if attr not in self.prunable_weights:
                raise ValueError(
                    f"Received a mask for {attr!r}, which is not a prunable "
                    f"kernel of {self.name!r}. Expected one of "
                    f"{list(self.prunable_weights)}."
                )
            value = np.asarray(value)
            variable = getattr(self, f"{attr}_mask")
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

    def _assign_masks(self, checked):
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
        layer._kernel.assign(dense_values)
        layer.apply_masks()
        ```
        """
        self._check_built("apply_masks")
        for attr in self.prunable_weights:
            stored = getattr(self, f"_{attr}")
            stored.assign(ops.multiply(stored, getattr(self, f"{attr}_mask")))

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
        self._check_built("save_initial")
        for attr, variable in self._rewind_variables().items():
            getattr(self, f"{attr}_initial").assign(variable)

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
        self._check_built("rewind")
        for attr, variable in self._rewind_variables().items():
            initial = getattr(self, f"{attr}_initial")
            mask = getattr(self, f"{attr}_mask", None)
            variable.assign(initial if mask is None else ops.multiply(initial, mask))

    def reinitialize(self, seed):
        """Draws new kernels and bias from the layer's initializers.

        Kernels are masked after drawing, so pruned entries stay 0. The
        initializers are re-created from their configs with seeds derived
        from `seed`, so the same seed draws the same values.

        Args:
            seed: An int seed.

        Raises:
            ValueError: If the layer is not built.

        Example:

        ```python
        layer = MaskedDense(2)
        layer.build((None, 2))
        layer.reinitialize(seed=1)
        ```
        """
        self._check_built("reinitialize")
        for i, (attr, variable) in enumerate(self._rewind_variables().items()):
            initializer = keras.initializers.get(getattr(self, self.initializer_attrs[attr]))
            config = initializer.get_config()
            if "seed" in config:
                config["seed"] = int(seed) * 1009 + i
            fresh = type(initializer).from_config(config)
            value = fresh(tuple(variable.shape), dtype=variable.dtype)
            mask = getattr(self, f"{attr}_mask", None)
            variable.assign(value if mask is None else ops.multiply(value, mask))

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


def _register(cls):
    return keras.saving.register_keras_serializable(package="lth_keras")(cls)


def _doc(base, extra="", example=""):
    text = (
        f"`keras.layers.{base}` with a binary mask on its kernel{extra}.\n\n"
        f"Same constructor and config as `keras.layers.{base}`. See the\n"
        "`lth_keras.layers` module docstring for masks and initial weights.\n"
    )
    if example:
        text += f"\nExample:\n\n```python\n{example}\n```\n"
    return text


@_register
class MaskedDense(MaskedLayerMixin, keras.layers.Dense):
    __doc__ = _doc(
        "Dense",
        example=(
            'model = keras.Sequential([keras.Input((784,)), MaskedDense(300, "relu"),\n'
            "                          MaskedDense(10)])\n"
            "model.layers[0].kernel_mask.shape  # (784, 300)"
        ),
    )

    kernel = _masked_weight("kernel")


@_register
class MaskedConv1D(MaskedLayerMixin, keras.layers.Conv1D):
    __doc__ = _doc(
        "Conv1D",
        example=(
            "layer = MaskedConv1D(16, 5)\n"
            "layer.build((None, 100, 8))\n"
            "layer.kernel_mask.shape  # (5, 8, 16)"
        ),
    )
    kernel = _masked_weight("kernel")


@_register
class MaskedConv2D(MaskedLayerMixin, keras.layers.Conv2D):
    __doc__ = _doc(
        "Conv2D",
        example=(
            'layer = MaskedConv2D(64, 3, padding="same")\n'
            "layer.build((None, 32, 32, 3))\n"
            "layer.kernel_mask.shape  # (3, 3, 3, 64)"
        ),
    )

    kernel = _masked_weight("kernel")


@_register
class MaskedConv3D(MaskedLayerMixin, keras.layers.Conv3D):
    __doc__ = _doc(
        "Conv3D",
        example=(
            "layer = MaskedConv3D(8, 3)\n"
            "layer.build((None, 16, 16, 16, 1))\n"
            "layer.kernel_mask.shape  # (3, 3, 3, 1, 8)"
        ),
    )
    kernel = _masked_weight("kernel")


@_register
class MaskedConv1DTranspose(MaskedLayerMixin, keras.layers.Conv1DTranspose):
    __doc__ = _doc(
        "Conv1DTranspose",
        example=(
            "layer = MaskedConv1DTranspose(16, 5)\n"
            "layer.build((None, 100, 8))\n"
            "layer.kernel_mask.shape  # (5, 16, 8)"
        ),
    )
    kernel = _masked_weight("kernel")


@_register
class MaskedConv2DTranspose(MaskedLayerMixin, keras.layers.Conv2DTranspose):
    __doc__ = _doc(
        "Conv2DTranspose",
        example=(
            "layer = MaskedConv2DTranspose(16, 3)\n"
            "layer.build((None, 8, 8, 4))\n"
            "layer.kernel_mask.shape  # (3, 3, 16, 4)"
        ),
    )
    kernel = _masked_weight("kernel")


@_register
class MaskedConv3DTranspose(MaskedLayerMixin, keras.layers.Conv3DTranspose):
    __doc__ = _doc(
        "Conv3DTranspose",
        example=(
            "layer = MaskedConv3DTranspose(8, 3)\n"
            "layer.build((None, 8, 8, 8, 2))\n"
            "layer.kernel_mask.shape  # (3, 3, 3, 8, 2)"
        ),
    )
    kernel = _masked_weight("kernel")


_DEPTHWISE_INITIALIZERS = {"kernel": "depthwise_initializer", "bias": "bias_initializer"}


@_register
class MaskedDepthwiseConv1D(MaskedLayerMixin, keras.layers.DepthwiseConv1D):
    __doc__ = _doc(
        "DepthwiseConv1D",
        example=(
            "layer = MaskedDepthwiseConv1D(5, depth_multiplier=2)\n"
            "layer.build((None, 100, 8))\n"
            "layer.kernel_mask.shape  # (5, 8, 2)"
        ),
    )
    initializer_attrs = _DEPTHWISE_INITIALIZERS
    kernel = _masked_weight("kernel")


@_register
class MaskedDepthwiseConv2D(MaskedLayerMixin, keras.layers.DepthwiseConv2D):
    __doc__ = _doc(
        "DepthwiseConv2D",
        example=(
            "layer = MaskedDepthwiseConv2D(3)\n"
            "layer.build((None, 32, 32, 16))\n"
            "layer.kernel_mask.shape  # (3, 3, 16, 1)"
        ),
    )
    initializer_attrs = _DEPTHWISE_INITIALIZERS
    kernel = _masked_weight("kernel")


_SEPARABLE_INITIALIZERS = {
    "depthwise_kernel": "depthwise_initializer",
    "pointwise_kernel": "pointwise_initializer",
    "bias": "bias_initializer",
}


@_register
class MaskedSeparableConv1D(MaskedLayerMixin, keras.layers.SeparableConv1D):
    __doc__ = _doc(
        "SeparableConv1D",
        "s (depthwise and pointwise)",
        (
            "layer = MaskedSeparableConv1D(32, 5)\n"
            "layer.build((None, 100, 8))\n"
            "layer.depthwise_kernel_mask.shape  # (5, 8, 1)\n"
            "layer.pointwise_kernel_mask.shape  # (1, 8, 32)"
        ),
    )
    prunable_weights = ("depthwise_kernel", "pointwise_kernel")
    initializer_attrs = _SEPARABLE_INITIALIZERS
    depthwise_kernel = _masked_weight("depthwise_kernel")
    pointwise_kernel = _masked_weight("pointwise_kernel")


@_register
class MaskedSeparableConv2D(MaskedLayerMixin, keras.layers.SeparableConv2D):
    __doc__ = _doc(
        "SeparableConv2D",
        "s (depthwise and pointwise)",
        (
            "layer = MaskedSeparableConv2D(32, 3)\n"
            "layer.build((None, 32, 32, 16))\n"
            "layer.depthwise_kernel_mask.shape  # (3, 3, 16, 1)\n"
            "layer.pointwise_kernel_mask.shape  # (1, 1, 16, 32)"
        ),
    )
    prunable_weights = ("depthwise_kernel", "pointwise_kernel")
    initializer_attrs = _SEPARABLE_INITIALIZERS
    depthwise_kernel = _masked_weight("depthwise_kernel")
    pointwise_kernel = _masked_weight("pointwise_kernel")


@_register
class MaskedEmbedding(MaskedLayerMixin, keras.layers.Embedding):
    __doc__ = _doc(
        "Embedding",
        " (the embeddings matrix)",
        (
            "layer = MaskedEmbedding(1000, 64)\n"
            "layer.build()\n"
            "layer.embeddings_mask.shape  # (1000, 64)\n"
            "layer.embeddings_initial.shape  # (1000, 64)"
        ),
    )
    prunable_weights = ("embeddings",)
    initializer_attrs = {"embeddings": "embeddings_initializer"}
    embeddings = _masked_weight("embeddings")

    def __init__(self, input_dim, output_dim, weights=None, **kwargs):
        # Keras' Embedding would `set_weights([weights])` before the masks
        # and initial weights exist; set the embeddings here instead.
        super().__init__(input_dim, output_dim, **kwargs)
        if weights is not None:
            self.build()
            values = weights[0] if isinstance(weights, list) and len(weights) == 1 else weights
            self._embeddings.assign(values)
            self.save_initial()


#: Keras layer class -> its masked twin, used by `lth_keras.prunable`.
MASKED_TWINS = {
    cls.__bases__[1]: cls
    for cls in (
        MaskedDense,
        MaskedConv1D,
        MaskedConv2D,
        MaskedConv3D,
        MaskedConv1DTranspose,
        MaskedConv2DTranspose,
        MaskedConv3DTranspose,
        MaskedDepthwiseConv1D,
        MaskedDepthwiseConv2D,
        MaskedSeparableConv1D,
        MaskedSeparableConv2D,
        MaskedEmbedding,
    )
}
