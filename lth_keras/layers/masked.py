"""Masked twins of Keras layers, and the registry `prunable()` converts with.

Each `Masked<KerasName>` subclasses `MaskedLayerMixin` and the Keras layer,
one level deep, with the same constructor and config. `register_masked_twin`
maps a Keras layer class to the masked class `lth_keras.prunable` replaces it
with; user layers register the same way.
"""

import keras

from lth_keras.layers.base import MaskedLayerMixin, masked_weight

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
    "MaskedSeparableConv1D",
    "MaskedSeparableConv2D",
    "keras_class_of",
    "masked_twin_of",
    "register_masked_twin",
    "supported_keras_classes",
]

_TWINS = {}  # Keras layer class -> masked class


def register_masked_twin(keras_class, masked_class):
    """Declares `masked_class` the masked twin `prunable()` uses for `keras_class`.

    The match is by exact class: a subclass of a registered Keras class needs
    its own registration (`prunable()` refuses unregistered subclasses rather
    than leaving them dense).

    Args:
        keras_class: A `keras.layers.Layer` subclass.
        masked_class: A subclass of both `MaskedLayerMixin` and `keras_class`,
            whose `from_config` accepts `keras_class`'s config.

    Returns:
        `masked_class`, so this can decorate it.

    Raises:
        TypeError: If `masked_class` is not a `MaskedLayerMixin` subclass of
            `keras_class`.

    Example:

    ```python
    class MyDense(keras.layers.Dense):
        pass

    @keras.saving.register_keras_serializable(package="my_project")
    class MaskedMyDense(lth_keras.layers.MaskedLayerMixin, MyDense):
        kernel = lth_keras.layers.masked_weight("kernel")

    lth_keras.layers.register_masked_twin(MyDense, MaskedMyDense)
    ```
    """
    if not (
        isinstance(masked_class, type)
        and issubclass(masked_class, MaskedLayerMixin)
        and issubclass(masked_class, keras_class)
    ):
        raise TypeError(
            "Received an invalid `masked_class`, expected a subclass of both "
            f"MaskedLayerMixin and {getattr(keras_class, '__name__', keras_class)}. "
            f"Received: masked_class={masked_class!r}"
        )
    _TWINS[keras_class] = masked_class
    return masked_class


def masked_twin_of(keras_class):
    """The registered masked twin of a Keras layer class, or `None`.

    Example:

    ```python
    lth_keras.layers.masked_twin_of(keras.layers.Dense)  # MaskedDense
    ```
    """
    return _TWINS.get(keras_class)


def keras_class_of(masked_class):
    """The Keras class a masked class is the twin of (for `strip_masks`).

    Args:
        masked_class: A class registered with `register_masked_twin`, or a
            subclass of one.

    Returns:
        The registered Keras class.

    Raises:
        ValueError: If no registered twin is among its bases.

    Example:

    ```python
    lth_keras.layers.keras_class_of(MaskedDense)  # keras.layers.Dense
    ```
    """
    plain = {masked: keras_cls for keras_cls, masked in _TWINS.items()}
    for cls in masked_class.__mro__:
        if cls in plain:
            return plain[cls]
    raise ValueError(
        f"{masked_class.__name__} is not registered as the masked twin of a Keras layer; "
        "call lth_keras.layers.register_masked_twin(KerasClass, MaskedClass) first."
    )


def supported_keras_classes():
    """The Keras layer classes `prunable()` can replace, in registration order."""
    return list(_TWINS)


def _twin(keras_class):
    def decorate(cls):
        cls = keras.saving.register_keras_serializable(package="lth_keras")(cls)
        return register_masked_twin(keras_class, cls)

    return decorate


def _doc(base, extra="", example=""):
    text = (
        f"`keras.layers.{base}` with a boolean mask on its kernel{extra}.\n\n"
        f"Same constructor and config as `keras.layers.{base}`. See the\n"
        "`lth_keras.layers` module docstring for masks and initial weights.\n"
    )
    if example:
        text += f"\nExample:\n\n```python\n{example}\n```\n"
    return text


@_twin(keras.layers.Dense)
class MaskedDense(MaskedLayerMixin, keras.layers.Dense):
    __doc__ = _doc(
        "Dense",
        example=(
            'model = keras.Sequential([keras.Input((784,)), MaskedDense(300, "relu"),\n'
            "                          MaskedDense(10)])\n"
            "model.layers[0].kernel_mask.shape  # (784, 300)"
        ),
    )

    kernel_axes = {"kernel": (-2, -1)}  # (input axis, output axis)
    kernel = masked_weight("kernel")


@_twin(keras.layers.Conv1D)
class MaskedConv1D(MaskedLayerMixin, keras.layers.Conv1D):
    __doc__ = _doc(
        "Conv1D",
        example=(
            "layer = MaskedConv1D(16, 5)\n"
            "layer.build((None, 100, 8))\n"
            "layer.kernel_mask.shape  # (5, 8, 16)"
        ),
    )
    kernel_axes = {"kernel": (-2, -1)}  # (input axis, output axis)
    kernel = masked_weight("kernel")


@_twin(keras.layers.Conv2D)
class MaskedConv2D(MaskedLayerMixin, keras.layers.Conv2D):
    __doc__ = _doc(
        "Conv2D",
        example=(
            'layer = MaskedConv2D(64, 3, padding="same")\n'
            "layer.build((None, 32, 32, 3))\n"
            "layer.kernel_mask.shape  # (3, 3, 3, 64)"
        ),
    )

    kernel_axes = {"kernel": (-2, -1)}  # (input axis, output axis)
    kernel = masked_weight("kernel")


@_twin(keras.layers.Conv3D)
class MaskedConv3D(MaskedLayerMixin, keras.layers.Conv3D):
    __doc__ = _doc(
        "Conv3D",
        example=(
            "layer = MaskedConv3D(8, 3)\n"
            "layer.build((None, 16, 16, 16, 1))\n"
            "layer.kernel_mask.shape  # (3, 3, 3, 1, 8)"
        ),
    )
    kernel_axes = {"kernel": (-2, -1)}  # (input axis, output axis)
    kernel = masked_weight("kernel")


@_twin(keras.layers.Conv1DTranspose)
class MaskedConv1DTranspose(MaskedLayerMixin, keras.layers.Conv1DTranspose):
    __doc__ = _doc(
        "Conv1DTranspose",
        example=(
            "layer = MaskedConv1DTranspose(16, 5)\n"
            "layer.build((None, 100, 8))\n"
            "layer.kernel_mask.shape  # (5, 16, 8)"
        ),
    )
    kernel_axes = {"kernel": (-1, -2)}  # (..., out, in)
    kernel = masked_weight("kernel")


@_twin(keras.layers.Conv2DTranspose)
class MaskedConv2DTranspose(MaskedLayerMixin, keras.layers.Conv2DTranspose):
    __doc__ = _doc(
        "Conv2DTranspose",
        example=(
            "layer = MaskedConv2DTranspose(16, 3)\n"
            "layer.build((None, 8, 8, 4))\n"
            "layer.kernel_mask.shape  # (3, 3, 16, 4)"
        ),
    )
    kernel_axes = {"kernel": (-1, -2)}  # (..., out, in)
    kernel = masked_weight("kernel")


@_twin(keras.layers.Conv3DTranspose)
class MaskedConv3DTranspose(MaskedLayerMixin, keras.layers.Conv3DTranspose):
    __doc__ = _doc(
        "Conv3DTranspose",
        example=(
            "layer = MaskedConv3DTranspose(8, 3)\n"
            "layer.build((None, 8, 8, 8, 2))\n"
            "layer.kernel_mask.shape  # (3, 3, 3, 8, 2)"
        ),
    )
    kernel_axes = {"kernel": (-1, -2)}  # (..., out, in)
    kernel = masked_weight("kernel")


_DEPTHWISE_INITIALIZERS = {"kernel": "depthwise_initializer", "bias": "bias_initializer"}


@_twin(keras.layers.DepthwiseConv1D)
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
    kernel = masked_weight("kernel")


@_twin(keras.layers.DepthwiseConv2D)
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
    kernel = masked_weight("kernel")


_SEPARABLE_INITIALIZERS = {
    "depthwise_kernel": "depthwise_initializer",
    "pointwise_kernel": "pointwise_initializer",
    "bias": "bias_initializer",
}


@_twin(keras.layers.SeparableConv1D)
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
    prunable_attrs = ("depthwise_kernel", "pointwise_kernel")
    initializer_attrs = _SEPARABLE_INITIALIZERS
    kernel_axes = {"pointwise_kernel": (-2, -1)}  # the depthwise kernel has none
    depthwise_kernel = masked_weight("depthwise_kernel")
    pointwise_kernel = masked_weight("pointwise_kernel")


@_twin(keras.layers.SeparableConv2D)
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
    prunable_attrs = ("depthwise_kernel", "pointwise_kernel")
    initializer_attrs = _SEPARABLE_INITIALIZERS
    kernel_axes = {"pointwise_kernel": (-2, -1)}  # the depthwise kernel has none
    depthwise_kernel = masked_weight("depthwise_kernel")
    pointwise_kernel = masked_weight("pointwise_kernel")


@_twin(keras.layers.Embedding)
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
    prunable_attrs = ("embeddings",)
    initializer_attrs = {"embeddings": "embeddings_initializer"}
    kernel_axes = {"embeddings": (None, -1)}  # rows are looked up, not summed
    embeddings = masked_weight("embeddings")

    def __init__(self, input_dim, output_dim, weights=None, **kwargs):
        # Keras' Embedding would `set_weights([weights])` before the masks
        # and initial weights exist; set the embeddings here instead.
        super().__init__(input_dim, output_dim, **kwargs)
        if weights is not None:
            self.build()
            values = weights[0] if isinstance(weights, list) and len(weights) == 1 else weights
            self.get_prunable_weights()[0].variable.assign(values)
            self.save_initial()
