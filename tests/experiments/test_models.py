"""The paper's networks: shapes, parameter counts, initialisation."""

import keras
import pytest

import lth_keras
from lth_keras.experiments.models import build_model


def _conv(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def _dense(n_in, n_out):
    return n_in * n_out + n_out


# Parameter counts derived by hand from the architectures.
CONV2 = (
    _conv(3, 3, 64)
    + _conv(3, 64, 64)
    + _dense(16 * 16 * 64, 256)
    + _dense(256, 256)
    + _dense(256, 10)
)
CONV4 = (
    _conv(3, 3, 64)
    + _conv(3, 64, 64)
    + _conv(3, 64, 128)
    + _conv(3, 128, 128)
    + _dense(8 * 8 * 128, 256)
    + _dense(256, 256)
    + _dense(256, 10)
)
CONV6 = (
    _conv(3, 3, 64)
    + _conv(3, 64, 64)
    + _conv(3, 64, 128)
    + _conv(3, 128, 128)
    + _conv(3, 128, 256)
    + _conv(3, 256, 256)
    + _dense(4 * 4 * 256, 256)
    + _dense(256, 256)
    + _dense(256, 10)
)
_VGG = (
    [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256)]
    + [(256, 256)] * 3
    + [(256, 512)]
    + [(512, 512)] * 7
)
VGG19 = sum(_conv(3, a, b) + 4 * b for a, b in _VGG) + _dense(512, 10)  # BN: 4 weights/channel


def _resnet20():
    total = _conv(3, 3, 16, bias=False) + 4 * 16
    c_in = 16
    for filters in (16, 32, 64):
        for _ in range(3):
            total += (
                _conv(3, c_in, filters, False) + _conv(3, filters, filters, False) + 8 * filters
            )
            if c_in != filters:
                total += _conv(1, c_in, filters, False) + 4 * filters
            c_in = filters
    return total + _dense(64, 10)


@pytest.mark.parametrize(
    "name, shape, params, masked",
    [
        ("lenet", (28, 28, 1), 266610, 3),
        ("conv2", (32, 32, 3), CONV2, 5),
        ("conv4", (32, 32, 3), CONV4, 7),
        ("conv6", (32, 32, 3), CONV6, 9),
        ("vgg19", (32, 32, 3), VGG19, 17),
        ("resnet20", (32, 32, 3), _resnet20(), 22),
    ],
    ids=["lenet", "conv2", "conv4", "conv6", "vgg19", "resnet20"],
)
def test_architectures(name, shape, params, masked):
    model = build_model(name, shape)
    assert model.count_params() == params
    assert model.output_shape == (None, 10)
    assert model.layers[-1].name == "output"
    masked_model = lth_keras.prunable(model)
    layers = lth_keras.masked_layers(masked_model)
    assert len(layers) == masked
    for layer in layers:
        assert isinstance(layer.kernel_initializer, keras.initializers.GlorotNormal)


def test_unknown_model():
    with pytest.raises(ValueError, match="name='mlp'"):
        build_model("mlp", (28, 28, 1))


@pytest.mark.parametrize(
    "name, shape, width, params",
    [
        ("lenet", (28, 28, 1), 0.5, 784 * 150 + 150 + 150 * 50 + 50 + 50 * 10 + 10),
        (
            "conv2",
            (28, 28, 1),
            0.25,
            (9 * 16 + 16)
            + (9 * 16 * 16 + 16)
            + (14 * 14 * 16 * 64 + 64)
            + (64 * 64 + 64)
            + (64 * 10 + 10),
        ),
    ],
    ids=["lenet-half", "conv2-quarter"],
)
def test_width_scales_hidden_units_and_filters(name, shape, width, params):
    model = build_model(name, shape, width=width)
    assert model.count_params() == params
    assert model.output_shape == (None, 10)


def test_width_scales_resnet_filters():
    model = build_model("resnet20", (32, 32, 3), width=2)
    assert model.get_layer("conv").filters == 32
    assert model.get_layer("s3b3_conv2").filters == 128


@pytest.mark.parametrize("width", [0, -1.0, True, "2"], ids=["zero", "negative", "bool", "str"])
def test_invalid_width(width):
    with pytest.raises(ValueError, match="width"):
        build_model("conv2", (28, 28, 1), width=width)
