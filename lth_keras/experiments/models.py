"""The networks of the paper's Figure 2, and a small ViT, as plain Keras models.

Every kernel of the paper's networks uses the Gaussian Glorot
initialisation of Frankle & Carbin (2019); the ViT is KerasHub's
`ViTBackbone` with its own initialisers. The models are plain Keras;
`lth_keras.prunable(model)` masks them. The last layer is named `"output"`
in every model.
"""

import keras

__all__ = ["MODELS", "build_model", "conv_net", "lenet_300_100", "resnet20", "vgg19", "vit"]

#: The networks `build_model` (and `ExperimentConfig.model`) accept.
MODELS = ("lenet", "conv2", "conv4", "conv6", "vgg19", "resnet20", "vit")

_CONV_PLANS = {
    "conv2": [64, 64, "M"],
    "conv4": [64, 64, "M", 128, 128, "M"],
    "conv6": [64, 64, "M", 128, 128, "M", 256, 256, "M"],
}
_VGG19_PLAN = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
]


def _init():
    return keras.initializers.GlorotNormal()


def _scaled(count, width):
    """`count` units or filters at `width`: rounded, at least 1."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(
            "Received an invalid value for `width`, expected a float > 0. "
            f"Received: width={width!r}"
        )
    return max(1, round(count * width))


def lenet_300_100(input_shape=(28, 28, 1), num_classes=10, width=1.0):
    """LeNet-300-100: two fully connected hidden layers of 300 and 100 units.

    Args:
        input_shape: Image shape. Defaults to `(28, 28, 1)`.
        num_classes: Defaults to `10`.
        width: Multiplies the hidden units (rounded, at least 1). Defaults
            to `1.0`.

    Returns:
        A Sequential model with layers `fc1`, `fc2`, `output` (logits).

    Example:

    ```python
    model = lth_keras.prunable(lenet_300_100())
    ```
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(
                _scaled(300, width), activation="relu", kernel_initializer=_init(), name="fc1"
            ),
            keras.layers.Dense(
                _scaled(100, width), activation="relu", kernel_initializer=_init(), name="fc2"
            ),
            keras.layers.Dense(num_classes, kernel_initializer=_init(), name="output"),
        ],
        name="lenet_300_100",
    )


def conv_net(name, input_shape=(32, 32, 3), num_classes=10, width=1.0):
    """Conv-2, Conv-4 or Conv-6: VGG-like 3x3 convolutions, then 256-256 fc.

    Args:
        name: `"conv2"`, `"conv4"` or `"conv6"`.
        input_shape: Defaults to `(32, 32, 3)`.
        num_classes: Defaults to `10`.
        width: Multiplies the filters of every convolution and the units
            of `fc1` and `fc2` (rounded, at least 1). Defaults to `1.0`.

    Returns:
        A Sequential model: `conv1`..`convN` (ReLU, same padding, 2x2 max
        pooling after each pair), `fc1`, `fc2` (256 units, ReLU), `output`.

    Raises:
        ValueError: If `name` is not one of the three.

    Example:

    ```python
    model = conv_net("conv4")
    ```
    """
    if name not in _CONV_PLANS:
        raise ValueError(
            f"Received an invalid value for `name`, expected one of {sorted(_CONV_PLANS)}. "
            f"Received: name={name!r}"
        )
    layers = [keras.Input(input_shape)]
    convs = 0
    for spec in _CONV_PLANS[name]:
        if spec == "M":
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool{convs // 2}"))
        else:
            convs += 1
            layers.append(
                keras.layers.Conv2D(
                    _scaled(spec, width),
                    3,
                    padding="same",
                    activation="relu",
                    kernel_initializer=_init(),
                    name=f"conv{convs}",
                )
            )
    layers += [
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(
            _scaled(256, width), activation="relu", kernel_initializer=_init(), name="fc1"
        ),
        keras.layers.Dense(
            _scaled(256, width), activation="relu", kernel_initializer=_init(), name="fc2"
        ),
        keras.layers.Dense(num_classes, kernel_initializer=_init(), name="output"),
    ]
    return keras.Sequential(layers, name=name)


def vgg19(input_shape=(32, 32, 3), num_classes=10, width=1.0):
    """VGG-19 for CIFAR-10: 16 conv layers with BatchNorm, average pool, one fc.

    Args:
        input_shape: Defaults to `(32, 32, 3)`.
        num_classes: Defaults to `10`.
        width: Multiplies the filters of every convolution (rounded, at
            least 1). Defaults to `1.0`.

    Returns:
        A Sequential model with `conv1`..`conv16`, `bn1`..`bn16`, `output`.

    Example:

    ```python
    model = vgg19()
    ```
    """
    layers = [keras.Input(input_shape)]
    convs = 0
    for spec in _VGG19_PLAN:
        if spec == "M":
            layers.append(keras.layers.MaxPooling2D(2))
            continue
        convs += 1
        layers += [
            keras.layers.Conv2D(
                _scaled(spec, width),
                3,
                padding="same",
                kernel_initializer=_init(),
                name=f"conv{convs}",
            ),
            keras.layers.BatchNormalization(name=f"bn{convs}"),
            keras.layers.ReLU(),
        ]
    layers += [
        keras.layers.AveragePooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(num_classes, kernel_initializer=_init(), name="output"),
    ]
    return keras.Sequential(layers, name="vgg19")


def _conv_bn(x, filters, kernel_size, strides, name):
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=_init(),
        name=name,
    )(x)
    return keras.layers.BatchNormalization(name=f"{name}_bn")(x)


def resnet20(input_shape=(32, 32, 3), num_classes=10, width=1.0):
    """ResNet-20 for CIFAR-10 (He et al., 2016): 3 stages of 3 basic blocks.

    Stages have 16, 32 and 64 filters; the first block of stages 2 and 3
    downsamples with stride 2 and a 1x1 convolution shortcut.

    Args:
        input_shape: Defaults to `(32, 32, 3)`.
        num_classes: Defaults to `10`.
        width: Multiplies the filters of every convolution (rounded, at
            least 1): `width=4` is a 4x wide ResNet-20. Defaults to `1.0`.

    Returns:
        A functional model with layers `conv`, `s{stage}b{block}_conv{1,2}`,
        `s{stage}b{block}_shortcut`, `output`.

    Example:

    ```python
    model = resnet20()
    ```
    """
    inputs = keras.Input(input_shape)
    stem = _scaled(16, width)
    x = keras.layers.ReLU()(_conv_bn(inputs, stem, 3, 1, "conv"))
    filters_in = stem
    for stage, filters in enumerate([_scaled(f, width) for f in (16, 32, 64)], start=1):
        for block in range(1, 4):
            strides = 2 if stage > 1 and block == 1 else 1
            name = f"s{stage}b{block}"
            y = keras.layers.ReLU()(_conv_bn(x, filters, 3, strides, f"{name}_conv1"))
            y = _conv_bn(y, filters, 3, 1, f"{name}_conv2")
            shortcut = x
            if strides != 1 or filters != filters_in:
                shortcut = _conv_bn(x, filters, 1, strides, f"{name}_shortcut")
            x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))
            filters_in = filters
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=_init(), name="output")(x)
    return keras.Model(inputs, outputs, name="resnet20")


def vit(input_shape=(28, 28, 1), num_classes=10, width=1.0):
    """A small vision transformer: KerasHub's `ViTBackbone` and a linear head.

    The image is cut into a 4x4 grid of patches (7x7 pixels on MNIST, 8x8 on
    CIFAR-10), embedded to 64 dimensions with a class token and learned
    positions, and passed through 4 pre-norm encoder blocks (4 heads, MLP
    of 128, GELU, no dropout); the class token's final (layer-normalised)
    vector goes to the `"output"` layer. KerasHub's initialisers are kept
    (Glorot uniform kernels). Needs KerasHub (`pip install keras-hub`, in
    the `test` and `dev` extras).

    Args:
        input_shape: Image shape; height and width divisible by 4. Defaults
            to `(28, 28, 1)`.
        num_classes: Defaults to `10`.
        width: Multiplies the hidden size (64, rounded to a multiple of the
            4 heads, at least 4) and the MLP size (128). Defaults to `1.0`.

    Returns:
        A functional model: input `pixels`, the KerasHub `ViTBackbone`
        `vit_backbone` (mask keys start at its layers,
        `vit_patching_and_embedding/...` and `vit_encoder/...`), the class
        token's slice, then `output` (logits).

    Raises:
        ImportError: If KerasHub is not installed.
        ValueError: If the image's sides are not divisible by 4.

    Example:

    ```python
    model = lth_keras.prunable(vit())
    ```
    """
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            "The `vit` model needs KerasHub, which is not installed. Install it with "
            "`pip install keras-hub` (or the `test` extra of lth_keras)."
        ) from error
    height, width_px = input_shape[0], input_shape[1]
    if height % 4 or width_px % 4:
        raise ValueError(
            "Received an invalid value for `input_shape`, expected height and width divisible "
            f"by 4 (a 4x4 grid of patches). Received: input_shape={tuple(input_shape)}"
        )
    heads = 4
    backbone = keras_hub.models.ViTBackbone(
        image_shape=tuple(input_shape),
        patch_size=(height // 4, width_px // 4),
        num_layers=4,
        num_heads=heads,
        hidden_dim=heads * _scaled(64 // heads, width),
        mlp_dim=_scaled(128, width),
        name="vit_backbone",
    )
    # The backbone is nested whole: KerasHub 0.32 cannot rebuild its layers
    # from their own configs (ViTPatchingAndEmbedding), only the backbone.
    inputs = keras.Input(input_shape, name="pixels")
    class_token = backbone(inputs)[:, 0, :]
    outputs = keras.layers.Dense(num_classes, name="output")(class_token)
    return keras.Model(inputs, outputs, name="vit")


def build_model(name, input_shape, num_classes=10, width=1.0):
    """Builds one of the paper's networks by name.

    Args:
        name: `"lenet"`, `"conv2"`, `"conv4"`, `"conv6"`, `"vgg19"`,
            `"resnet20"` or `"vit"`.
        input_shape: Image shape, e.g. `(28, 28, 1)` or `(32, 32, 3)`.
        num_classes: Defaults to `10`.
        width: Multiplies the hidden units and filters (see each builder).
            Defaults to `1.0`.

    Returns:
        A plain (unmasked) Keras model.

    Raises:
        ValueError: If `name` is unknown or `width` is not a float > 0.
        ImportError: For `"vit"` without KerasHub installed.

    Example:

    ```python
    model = lth_keras.prunable(build_model("conv2", (32, 32, 3)))
    ```
    """
    if name == "lenet":
        return lenet_300_100(input_shape, num_classes, width)
    if name in _CONV_PLANS:
        return conv_net(name, input_shape, num_classes, width)
    if name == "vgg19":
        return vgg19(input_shape, num_classes, width)
    if name == "resnet20":
        return resnet20(input_shape, num_classes, width)
    if name == "vit":
        return vit(input_shape, num_classes, width)
    raise ValueError(
        f"Received an invalid value for `name`, expected one of {list(MODELS)}. "
        f"Received: name={name!r}"
    )
