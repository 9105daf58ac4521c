"""TFDS pipelines: real MNIST, CIFAR-10 through tfds.testing.mock_data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lth_keras import data


@pytest.fixture(scope="module")
def mnist():
    return data.load(
        "mnist",
        batch_size=32,
        validation_examples=500,
        train_examples=2000,
        test_examples=300,
        seed=3,
    )


def _batches(dataset, n):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(n)]


def test_mnist_splits_and_normalisation(mnist):
    assert (mnist.train_size, mnist.input_shape, mnist.num_classes) == (2000, (28, 28, 1), 10)
    images = np.concatenate([x for x, _ in _batches(mnist.validation, 1)])
    assert images.shape == (500, 28, 28, 1)
    assert images.dtype == np.float32 and images.min() == 0.0 and images.max() == 1.0
    assert sum(len(y) for _, y in _batches(mnist.test, 10)) == 300
    assert sum(len(y) for _, y in _batches(mnist.train_eval, 10)) == 2000
    # The validation images are the last 500 of TFDS's 60,000 training images.
    last = tfds.load("mnist", split="train[-500:]", as_supervised=True, batch_size=-1)
    np.testing.assert_array_equal(images * 255, last[0].numpy().astype(np.float32))


def test_training_stream_is_seeded_and_resumable(mnist):
    first = _batches(mnist.train(), 70)  # crosses an epoch boundary (62.5 batches)
    again = _batches(mnist.train(), 70)
    resumed = _batches(mnist.train(start_step=50), 20)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    for (x1, y1), (x2, y2) in zip(first[50:], resumed, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert all(x.shape == (32, 28, 28, 1) for x, _ in first)
    # Each epoch is shuffled anew.
    assert not np.array_equal(first[0][1], first[63][1])


def test_cifar10_through_mock_data():
    with tfds.testing.mock_data(num_examples=120):
        splits = data.load("cifar10", batch_size=8, validation_examples=20, augment=True, seed=1)
        assert (splits.train_size, splits.input_shape, splits.num_classes) == (100, (32, 32, 3), 10)
        ((x, y),) = _batches(splits.train(), 1)
        ((again, _),) = _batches(splits.train(), 1)
        raw = next(iter(splits.raw_train.shuffle(100, seed=1).batch(8)))[0].numpy()
    assert x.shape == (8, 32, 32, 3) and y.shape == (8,)
    np.testing.assert_array_equal(x, again)  # augmentation is seeded by stream position
    # Per-channel normalisation: (x / 255 - mean) / std.
    plain = (raw / 255.0 - np.array(data._CIFAR_MEAN)) / np.array(data._CIFAR_STD)
    assert x.min() >= plain.min() - 1e-5 - 0.5 / 0.24  # padding zeros normalise to -mean/std
    assert not np.allclose(x, plain.astype(np.float32))  # crops and flips changed the images


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "svhn"}, "name='svhn'"),
        ({"name": "mnist", "validation_examples": 60000}, "validation_examples=60000"),
    ],
    ids=["name", "validation"],
)
def test_load_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load(batch_size=8, **kwargs)
