"""The prunable-weights protocol: user layers opt in, subclasses are never left dense."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import compile_model, pythonpath

import lth_keras
from lth_keras.layers import MaskedLayerMixin, masked_weight


class MaskedScale(MaskedLayerMixin, keras.layers.Layer):
    """A user layer with one prunable kernel: `x * kernel`, elementwise."""

    prunable_attrs = ("kernel",)
    initializer_attrs = {"kernel": "kernel_initializer"}
    kernel = masked_weight("kernel")

    def __init__(self, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = kernel_initializer

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=input_shape[-1:], initializer=self.kernel_initializer
        )
        super().build(input_shape)

    def call(self, x):
        return x * self.kernel


class MyDense(keras.layers.Dense):
    pass


class MaskedMyDense(MaskedLayerMixin, MyDense):
    kernel = masked_weight("kernel")


def test_lottery_weights_name_variable_mask_initial():
    layer = lth_keras.MaskedSeparableConv1D(4, 3)
    layer.build((None, 8, 2))
    weights = layer.get_lottery_weights()
    assert [(w.name, w.mask is not None) for w in weights] == [
        ("depthwise_kernel", True),
        ("pointwise_kernel", True),
        ("bias", False),
    ]
    for w in weights:
        assert tuple(w.initial.shape) == tuple(w.variable.shape)
        assert w.variable.trainable and not w.initial.trainable
    assert [w.name for w in layer.get_prunable_weights()] == [
        "depthwise_kernel",
        "pointwise_kernel",
    ]
    assert layer.get_prunable_weights()[0].mask is layer.depthwise_kernel_mask


def test_protocol_refuses_unbuilt_layer():
    with pytest.raises(ValueError, match="is not built"):
        lth_keras.MaskedDense(3).get_lottery_weights()


def test_user_layer_takes_part_in_pruning_and_rewinding(data):
    x, y = data
    model = keras.Sequential(
        [
            keras.Input((12,)),
            MaskedScale(name="scale"),
            lth_keras.MaskedDense(3, name="out"),
        ]
    )
    compile_model(model)
    initial = lth_keras.masks.get_kernels(model)["scale/kernel"].copy()
    pruner = lth_keras.LotteryPruner(rate=0.5, output_rate=0.5)
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[pruner], verbose=0)
    model.fit(x, y, epochs=0, callbacks=[pruner], verbose=0)  # prune + rewind only
    masks = lth_keras.get_masks(model)
    assert int(masks["scale/kernel"].sum()) == 6  # 12 - round_half_up(0.5 * 12)
    kernel = lth_keras.masks.get_kernels(model)["scale/kernel"]
    np.testing.assert_array_equal(kernel, np.where(masks["scale/kernel"], initial, 0))
    layer = model.get_layer("scale")
    layer.reinitialize(seed=3)
    assert np.all(keras.ops.convert_to_numpy(layer.kernel)[~masks["scale/kernel"]] == 0)


def test_user_layer_without_initializer_attr_cannot_reinitialize():
    class NoInit(MaskedScale):
        initializer_attrs = {}

    layer = NoInit()
    layer.build((None, 4))
    with pytest.raises(ValueError, match="cannot re-initialize 'kernel'"):
        layer.reinitialize(seed=0)


def test_prunable_masks_a_subclass_of_a_known_layer_in_place():
    model = keras.Sequential(
        [keras.Input((4,)), MyDense(3, name="mine"), keras.layers.Dense(2, name="dense")]
    )
    mine = model.get_layer("mine")
    lth_keras.prunable(model)
    assert model.get_layer("mine") is mine and isinstance(mine, MyDense)
    assert type(mine).__qualname__ == "MaskedMyDense"
    assert list(lth_keras.get_masks(model)) == ["mine/kernel", "dense/kernel"]


def test_registered_subclass_is_converted(monkeypatch):
    from lth_keras.layers import masked as masked_lib

    monkeypatch.setitem(masked_lib._TWINS, MyDense, MaskedMyDense)
    monkeypatch.setitem(masked_lib._BASES, MaskedMyDense, MyDense)
    model = keras.Sequential([keras.Input((4,)), MyDense(3, name="mine")])
    masked = lth_keras.prunable(model)
    assert type(masked.get_layer("mine")) is MaskedMyDense
    assert lth_keras.layers.keras_class_of(MaskedMyDense) is MyDense
    plain = lth_keras.strip_masks(masked)
    assert type(plain.get_layer("mine")) is MyDense
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0))


def test_register_masked_twin_checks_classes():
    with pytest.raises(TypeError, match="expected a subclass of both MaskedLayerMixin and Dense"):
        lth_keras.layers.register_masked_twin(keras.layers.Dense, keras.layers.Dense)


def test_prunable_keeps_masked_layers_and_their_initial_weights():
    model = lth_keras.prunable(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    layer = model.layers[-1]
    layer.set_masks({"kernel": np.eye(4, 3)})
    again = lth_keras.prunable(model)
    np.testing.assert_array_equal(lth_keras.get_masks(again)[f"{layer.name}/kernel"], np.eye(4, 3))
    np.testing.assert_array_equal(
        again.layers[-1].kernel_initial.numpy(), layer.kernel_initial.numpy()
    )


def _python(code, backend):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=pythonpath(), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow", reason="on TensorFlow, Keras itself loads it"
)
def test_import_loads_no_tensorflow():
    code = (
        "import sys, lth_keras, lth_keras.experiments\n"
        "lth_keras.experiments.preset('lenet')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))"
    )
    result = _python(code, keras.backend.backend())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow", reason="the TensorFlow parts work here"
)
def test_tensorflow_parts_refuse_other_backends():
    result = _python("import lth_keras.tensorflow.export", keras.backend.backend())
    assert result.returncode != 0
    assert "needs the TensorFlow backend of Keras" in result.stderr
