"""`lth_keras.tfmot`: tfmot's guide ported by its import alone; each tfmot name, counts and errors.

The guide is tfmot's "Pruning in Keras" (pruning_with_keras) as its users
run it, up to `strip_pruning` and saving (its TFLite part needs the
TensorFlow backend: benchmarks/tfmot_side_by_side.py runs it). What the
test changes beside the import, so that it costs seconds: MNIST is 450
random images (offline), and the fine-tuning batch is 8, not 128, so that
2 epochs still reach tfmot's first pruning step (100; frequency 100).
"""

import os

import keras
import numpy as np
import pytest

import lth_keras
from lth_keras import tfmot
from lth_keras.pruning import NM, Blocks, keep_count

GUIDE = """
import tempfile
import os
import numpy as np
from tensorflow_model_optimization.python.core.keras.compat import keras

mnist = keras.datasets.mnist
(train_images, train_labels), (test_images, test_labels) = mnist.load_data()
train_images = train_images / 255.0
test_images = test_images / 255.0

model = keras.Sequential([
  keras.layers.InputLayer(input_shape=(28, 28)),
  keras.layers.Reshape(target_shape=(28, 28, 1)),
  keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation='relu'),
  keras.layers.MaxPooling2D(pool_size=(2, 2)),
  keras.layers.Flatten(),
  keras.layers.Dense(10)
])
model.compile(optimizer='adam',
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=['accuracy'])
model.fit(train_images, train_labels, epochs=4, validation_split=0.1, verbose=0)
_, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)

import tensorflow_model_optimization as tfmot

prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
batch_size = 128
epochs = 2
validation_split = 0.1
num_images = train_images.shape[0] * (1 - validation_split)
end_step = np.ceil(num_images / batch_size).astype(np.int32) * epochs
pruning_params = {
      'pruning_schedule': tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.50,
                                                               final_sparsity=0.80,
                                                               begin_step=0,
                                                               end_step=end_step)
}
model_for_pruning = prune_low_magnitude(model, **pruning_params)
model_for_pruning.compile(optimizer='adam',
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=['accuracy'])
logdir = tempfile.mkdtemp()
callbacks = [
  tfmot.sparsity.keras.UpdatePruningStep(),
  tfmot.sparsity.keras.PruningSummaries(log_dir=logdir),
]
model_for_pruning.fit(train_images, train_labels,
                  batch_size=batch_size, epochs=epochs, validation_split=validation_split,
                  callbacks=callbacks, verbose=0)
_, model_for_pruning_accuracy = model_for_pruning.evaluate(test_images, test_labels, verbose=0)

model_for_export = tfmot.sparsity.keras.strip_pruning(model_for_pruning)
_, pruned_keras_file = tempfile.mkstemp('.h5')
keras.models.save_model(model_for_export, pruned_keras_file, include_optimizer=False)
"""

#: The port: tfmot's imports and namespace, and nothing else.
PORT = [
    ("from tensorflow_model_optimization.python.core.keras.compat import keras", "import keras"),
    ("import tensorflow_model_optimization as tfmot", "import lth_keras"),
    ("tfmot.sparsity.keras.", "lth_keras.tfmot."),
]
#: Offline and small (see the module docstring).
SMALLER = [
    ("mnist.load_data()", "small_mnist()"),
    ("batch_size = 128", "batch_size = 8"),
]


def _small_mnist():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(500, 28, 28)).astype("uint8")
    labels = rng.integers(0, 10, size=500).astype("uint8")
    return (images[:450], labels[:450]), (images[450:], labels[450:])


def _sparsity(array):
    return int((np.asarray(array) == 0).sum())


@pytest.fixture(scope="module")
def ported():
    script = GUIDE
    for old, new in PORT + SMALLER:
        assert old in script
        script = script.replace(old, new)
    assert "tfmot" not in script.replace("lth_keras.tfmot", "")
    namespace = {"small_mnist": _small_mnist}
    keras.backend.clear_session()  # the guide's layers get their default names (conv2d, dense)
    exec(compile(script, "ported_guide.py", "exec"), namespace)  # noqa: S102 (our own text)
    return namespace


def test_the_guide_ported_by_its_import_ends_at_tfmot_sparsities(ported):
    # 405 training images, batch 8: 51 steps an epoch, end_step 102; tfmot prunes at
    # step 100 (frequency 100), to PolynomialDecay's value there.
    schedule = ported["pruning_params"]["pruning_schedule"]
    assert int(ported["end_step"]) == 102
    (pruner,) = ported["callbacks"][0].pruners
    updates = pruner.history[-1]["updates"]
    assert [u["step"] for u in updates] == [100]
    assert [u["sparsity"] for u in updates] == [schedule.sparsity(100)]
    masks = lth_keras.get_masks(ported["model_for_pruning"])
    # tfmot's count at 0.79999774: conv 108 weights keep round(21.6) = 22, dense 20280 keep 4056.
    assert {k: int(m.sum()) for k, m in masks.items()} == {
        "conv2d/kernel": 22,
        "dense/kernel": 4056,
    }
    assert keep_count(108, schedule.sparsity(100)) == 22
    export = ported["model_for_export"]
    assert not lth_keras.masked_layers(export)
    kernels = {layer.name: layer.kernel for layer in export.layers if hasattr(layer, "kernel")}
    assert {name: _sparsity(k) for name, k in kernels.items()} == {"conv2d": 86, "dense": 16224}
    for name, kernel in kernels.items():
        assert (np.asarray(kernel)[~masks[f"{name}/kernel"]] == 0).all()
    assert os.path.getsize(ported["pruned_keras_file"]) > 0
    assert os.listdir(os.path.join(ported["logdir"], "metrics"))


def _mlp():
    return keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu", name="fc"),
            keras.layers.Dense(8, activation="relu", name="mid"),
            keras.layers.Dense(4, name="out"),
        ]
    )


def _fit(model, steps, callbacks, batch=4, shape=None):
    rng = np.random.default_rng(1)
    shape = shape or model.input_shape[1:]
    x = rng.normal(size=(steps * batch, *shape)).astype("float32")
    y = rng.integers(0, 4, size=steps * batch)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=batch, epochs=1, callbacks=callbacks, verbose=0)


def test_one_layer_inside_clone_model_keeps_its_weights_and_alone_is_pruned():
    base = _mlp()
    before = np.asarray(base.get_layer("mid").kernel).copy()

    def apply_pruning_to_mid(layer):
        if layer.name == "mid":
            return tfmot.prune_low_magnitude(layer, tfmot.ConstantSparsity(0.75, 0, frequency=1))
        return layer

    model = keras.models.clone_model(base, clone_function=apply_pruning_to_mid)
    assert np.array_equal(np.asarray(model.get_layer("mid").kernel), before)
    _fit(model, 3, [tfmot.UpdatePruningStep()])
    masks = lth_keras.get_masks(model)
    assert {k: int(m.sum()) for k, m in masks.items()} == {"mid/kernel": 32}  # 128 * 0.25


def test_an_unbuilt_layer_becomes_its_masked_twin():
    every_step = tfmot.ConstantSparsity(0.5, 0, frequency=1)
    layer = tfmot.prune_low_magnitude(keras.layers.Dense(4, name="d"), every_step, name="d2")
    assert isinstance(layer, lth_keras.MaskedDense) and not layer.built
    assert tfmot.prune_low_magnitude(keras.layers.Flatten()).__class__ is keras.layers.Flatten
    model = keras.Sequential([keras.Input((6,)), layer])
    _fit(model, 1, [tfmot.UpdatePruningStep()])
    assert int(lth_keras.get_masks(model)["d2/kernel"].sum()) == 12


class _MyDenseLayer(keras.layers.Dense, tfmot.PrunableLayer):
    def get_prunable_weights(self):  # tfmot's comprehensive guide: the bias too
        return [self.kernel, self.bias]


def test_layers_given_input_shape_are_built_and_masked_in_place():
    # tfmot's comprehensive guide builds Sequential models of pruned layers so.
    dense = keras.layers.Dense(20, input_shape=(6,))
    model = keras.Sequential([tfmot.prune_low_magnitude(dense), keras.layers.Flatten()])
    assert model.built and model.layers[0] is dense and lth_keras.masked_layers(model) == [dense]
    custom = tfmot.prune_low_magnitude(_MyDenseLayer(4, input_shape=(6,), name="my"))
    model = keras.Sequential([custom])
    assert list(lth_keras.get_masks(model)) == ["my/kernel", "my/bias"]
    with pytest.raises(ValueError, match="needs the layer 'mine' built"):
        tfmot.prune_low_magnitude(_MyDenseLayer(4, name="mine"))


def test_two_by_four_and_unstructured_layers_prune_with_their_own_schedules():
    # tfmot's 2:4 guide: m-by-n layers get their mask once, at step 1; others follow a schedule.
    base = _mlp()
    unstructured = tfmot.ConstantSparsity(0.5, begin_step=2, frequency=1)

    def prune(layer):
        if layer.name == "fc":
            return tfmot.prune_low_magnitude(layer, sparsity_m_by_n=(2, 4))
        if layer.name == "mid":
            return tfmot.prune_low_magnitude(layer, pruning_schedule=unstructured)
        return layer

    model = keras.models.clone_model(base, clone_function=prune)
    callback = tfmot.UpdatePruningStep()
    _fit(model, 3, [callback])
    assert len(callback.pruners) == 2
    masks = lth_keras.get_masks(model)
    groups = masks["fc/kernel"].reshape(3, 4, 16)  # 4 consecutive inputs of each unit
    assert (groups.sum(axis=1) == 2).all()
    assert int(masks["mid/kernel"].sum()) == 64 and "out/kernel" not in masks
    steps = {
        type(p.targets.structure): [u["step"] for u in p.history[-1]["updates"]]
        for p in callback.pruners
    }
    assert steps == {NM: [1], type(lth_keras.pruning.Unstructured()): [2, 3]}


def test_block_size_prunes_whole_blocks_of_inputs():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="d")])
    tfmot.prune_low_magnitude(
        model,
        tfmot.ConstantSparsity(0.5, 0, frequency=1),
        block_size=(4, 1),
        block_pooling_type="MAX",
    )
    (layer,) = lth_keras.masked_layers(model)
    assert layer._lth_tfmot_params.structure == Blocks(4, pooling="max")
    _fit(model, 1, [tfmot.UpdatePruningStep()])
    blocks = lth_keras.get_masks(model)["d/kernel"].reshape(4, 4, 8)
    assert (blocks.all(axis=1) | ~blocks.any(axis=1)).all()  # each block whole
    assert int(blocks.all(axis=1).sum()) == keep_count(32, 0.5)


class _Scale(keras.layers.Layer, tfmot.PrunableLayer):
    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 4), name="kernel")
        self.unpruned = self.add_weight(shape=(input_shape[-1], 4), name="unpruned")

    def call(self, x):
        return x @ self.kernel + x @ self.unpruned

    def get_prunable_weights(self):
        return [self.kernel]


class _EveryStep(tfmot.PruningSchedule):
    def __call__(self, step):
        return True, np.float32(0.25 * min(step, 3))

    def get_config(self):
        return {}


def test_a_prunable_layer_and_a_schedule_of_ones_own():
    model = keras.Sequential([keras.Input((8,)), _Scale(name="s")])
    tfmot.prune_low_magnitude(model, pruning_schedule=_EveryStep())
    callback = tfmot.UpdatePruningStep()
    _fit(model, 3, [callback])
    assert list(lth_keras.get_masks(model)) == ["s/kernel"]
    updates = callback.pruners[0].history[-1]["updates"]
    assert [(u["step"], int(round(32 * u["weights_remaining"]))) for u in updates] == [
        (1, 24),
        (2, 16),
        (3, 8),
    ]


def test_numpy_int_steps_and_prune_scope_loading(tmp_path):
    schedule = tfmot.PolynomialDecay(0.5, 0.8, np.int64(0), np.int32(10))
    assert schedule.get_config()["end_step"] == 10 and type(schedule.end_step) is int
    model = tfmot.prune_low_magnitude(_mlp(), schedule)
    _fit(model, 2, [tfmot.UpdatePruningStep()])
    model.save(tmp_path / "m.keras")
    with tfmot.prune_scope():
        loaded = keras.saving.load_model(tmp_path / "m.keras")
    for key, mask in lth_keras.get_masks(model).items():
        assert np.array_equal(lth_keras.get_masks(loaded)[key], mask)
    with pytest.raises(ValueError, match="no layer marked for pruning"):
        _fit(loaded, 1, [tfmot.UpdatePruningStep()])
    assert tfmot.strip_pruning(_mlp()).__class__ is keras.Sequential


class SubclassedMLP(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(16, activation="relu", name="hidden")
        self.head = keras.layers.Dense(4, name="head")

    def call(self, x):
        return self.head(self.hidden(x))


def test_a_subclassed_model_which_tfmot_refused_is_pruned():
    model = SubclassedMLP()
    model(np.zeros((1, 12), "float32"))
    model = tfmot.prune_low_magnitude(model, tfmot.ConstantSparsity(0.75, 0, frequency=1))
    _fit(model, 1, [tfmot.UpdatePruningStep()], shape=(12,))
    masks = lth_keras.get_masks(model)
    assert {k: int(m.sum()) for k, m in masks.items()} == {"hidden/kernel": 48, "head/kernel": 16}
    assert lth_keras.masked_layers(tfmot.strip_pruning(model)) == []

    class NoConfig(SubclassedMLP):
        def __init__(self):  # cannot be rebuilt from its config
            super().__init__()

    model = NoConfig()
    model(np.zeros((1, 12), "float32"))
    with pytest.raises(ValueError, match="in_place=True"):
        tfmot.strip_pruning(tfmot.prune_low_magnitude(model))


def _xnnpack_model():
    inputs = keras.Input((9, 9, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="valid", name="stem")(x)
    x = keras.layers.Conv2D(8, 1, name="pointwise")(x)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    return keras.Model(inputs, keras.layers.Flatten()(x))


def test_prune_for_latency_on_xnnpack_masks_the_1x1_convolutions_only():
    model = tfmot.prune_low_magnitude(
        _xnnpack_model(), pruning_policy=tfmot.PruneForLatencyOnXNNPack()
    )
    assert list(lth_keras.get_masks(model)) == ["pointwise/kernel"]
    with pytest.raises(ValueError, match="ZeroPadding2D"):
        tfmot.prune_low_magnitude(_mlp(), pruning_policy=tfmot.PruneForLatencyOnXNNPack())
    full = _xnnpack_model()
    without_end = keras.Model(full.input, full.get_layer("pointwise").output)
    with pytest.raises(ValueError, match="GlobalAveragePooling2D"):
        tfmot.PruneForLatencyOnXNNPack().ensure_model_supports_pruning(without_end)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block_pooling_type": "SUM"}, "block_pooling_type='SUM'"),
        ({"block_size": (1, 4)}, r"block_size=\(1, 4\)"),
        ({"block_size": (2,)}, r"block_size=\(2,\)"),
        ({"sparsity_m_by_n": (4, 4)}, r"sparsity_m_by_n=\(4, 4\)"),
        ({"sparsity_m_by_n": (2, 4), "block_size": (4, 1)}, "not both"),
        ({"pruning_schedule": lth_keras.pruning.Rounds()}, "LotteryPruner"),
    ],
    ids=["pooling", "block-width", "block-pair", "m-by-n", "both", "rounds"],
)
def test_invalid_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfmot.prune_low_magnitude(_mlp(), **kwargs)


def test_what_is_not_a_model_is_refused():
    with pytest.raises(ValueError, match="Received: a value of type str"):
        tfmot.prune_low_magnitude("model")
    with pytest.raises(ValueError, match="strip_masks"):
        tfmot.strip_pruning(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="log_dir=''"):
        tfmot.PruningSummaries(log_dir="")
    with pytest.raises(NotImplementedError, match="get_prunable_weights"):
        tfmot.PrunableLayer().get_prunable_weights()
    with pytest.raises(ValueError, match="two scalars"):
        _Vector().sparsity(1)


class _Vector(tfmot.PruningSchedule):
    def __call__(self, step):
        return True, [0.1, 0.2]


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tfmot's loop uses GradientTape"
)
def test_tfmot_custom_training_loop(tmp_path):
    import tensorflow as tf

    # tfmot's comprehensive guide, "custom training loop", with its import changed.
    rng = np.random.default_rng(0)
    x_train = rng.normal(size=(20, 12)).astype("float32")
    y_train = keras.utils.to_categorical(rng.integers(0, 4, 20), 4)
    model_for_pruning = tfmot.prune_low_magnitude(
        _mlp(), tfmot.PolynomialDecay(0.5, 0.8, begin_step=0, end_step=2, frequency=1)
    )
    loss = keras.losses.categorical_crossentropy
    optimizer = keras.optimizers.Adam()
    unused_arg = -1
    model_for_pruning.optimizer = optimizer
    step_callback = tfmot.UpdatePruningStep()
    step_callback.set_model(model_for_pruning)
    log_callback = tfmot.PruningSummaries(log_dir=str(tmp_path))
    log_callback.set_model(model_for_pruning)
    step_callback.on_train_begin()
    for _ in range(2):
        log_callback.on_epoch_begin(epoch=unused_arg)
        step_callback.on_train_batch_begin(batch=unused_arg)
        with tf.GradientTape() as tape:
            logits = model_for_pruning(x_train, training=True)
            loss_value = loss(y_train, logits)
            grads = tape.gradient(loss_value, model_for_pruning.trainable_variables)
            optimizer.apply_gradients(
                zip(grads, model_for_pruning.trainable_variables, strict=True)
            )
        step_callback.on_epoch_end(batch=unused_arg)
    updates = step_callback.pruners[0].history[-1]["updates"]
    assert [u["step"] for u in updates] == [1, 2]  # the optimizer's iterations plus one
    masks = lth_keras.get_masks(model_for_pruning)  # 0.8 at step 2: keep_count(n, 0.8)
    assert {k: int(m.sum()) for k, m in masks.items()} == {
        "fc/kernel": 38,
        "mid/kernel": 26,
        "out/kernel": 6,
    }
    assert os.listdir(tmp_path / "metrics")
