"""TFDS pipelines: real MNIST, CIFAR-10 through tfds.testing.mock_data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lth_keras.experiments import data


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


def _rows(images):
    return {image.tobytes(): index for index, image in enumerate(images)}


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
    # Each epoch is a permutation of the training images, shuffled anew.
    images = mnist.train_images.numpy()
    rows = _rows(images)
    stream = np.concatenate([x for x, _ in first])
    labels = np.concatenate([y for _, y in first])
    chosen = [rows[(image * 255).round().astype(np.uint8).tobytes()] for image in stream]
    np.testing.assert_array_equal(labels, mnist.train_labels.numpy()[chosen])
    assert sorted(chosen[:2000]) == list(range(2000))
    assert sorted(chosen[2000:]) == sorted(set(chosen[2000:]))  # no repeats in epoch 1 either
    assert chosen[2000:2240] != chosen[:240]
    # Another seed, another order.
    other = data.load("mnist", batch_size=32, validation_examples=500, train_examples=2000, seed=4)
    assert not np.array_equal(_batches(other.train(), 1)[0][1], first[0][1])
    # Every stream of one `Splits` reuses one traced batch function.
    assert mnist._gathered.experimental_get_tracing_count() == 1


def test_cifar10_through_mock_data():
    with tfds.testing.mock_data(num_examples=120):
        plain = data.load("cifar10", batch_size=8, validation_examples=20, seed=1)
        augmented = data.load("cifar10", batch_size=8, validation_examples=20, augment=True, seed=1)
        assert (plain.train_size, plain.input_shape, plain.num_classes) == (100, (32, 32, 3), 10)
        epoch = _batches(plain.train(), 12)
        first = _batches(augmented.train(), 20)  # crosses the 12.5-batch epoch
        again = _batches(augmented.train(), 20)
        resumed = _batches(augmented.train(start_step=13), 7)
    raw, raw_labels = plain.train_images.numpy(), plain.train_labels.numpy()
    # Without augmentation: exactly (x / 255 - mean) / std per channel, of
    # 96 different training images with their labels.
    mean, std = np.array(data._CIFAR_MEAN), np.array(data._CIFAR_STD)
    rows = _rows(raw)
    x = np.concatenate([x for x, _ in epoch])
    found = [rows[((image * std + mean) * 255).round().astype(np.uint8).tobytes()] for image in x]
    assert len(set(found)) == 96
    np.testing.assert_allclose(x, (raw[found] / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([y for _, y in epoch]), raw_labels[found])
    # Augmentation is keyed by stream position: the same stream, also when resumed.
    for (x1, _), (x2, _) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
    for (x1, y1), (x2, y2) in zip(first[13:], resumed, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    for (_, y1), (_, y2) in zip(first, epoch, strict=False):
        np.testing.assert_array_equal(y1, y2)  # the same examples, crops and flips aside
    assert not np.allclose(first[0][0], epoch[0][0])  # crops and flips changed the images


def test_augmentation_crops_and_flips_each_image():
    images = (np.arange(8 * 6 * 5 * 1) % 250).astype(np.uint8).reshape(8, 6, 5, 1) + 1
    positions = np.arange(8, dtype=np.int64)
    out = data._augment(images, np.int64(7), positions).numpy()
    draws = data._permuted(positions, np.int64(7), 1, data._AUGMENT_DRAWS).numpy()
    for image, result, draw in zip(images, out, draws, strict=True):
        dy, dx, flip = draw % 9, draw // 9 % 9, draw // 81 % 2 == 1
        padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
        expected = padded[dy : dy + 6, dx : dx + 5]
        np.testing.assert_array_equal(result, expected[:, ::-1] if flip else expected)
    assert set(draws // 81 % 2) == {0, 1}  # both branches checked above
    drawn = data._permuted(np.arange(4000, dtype=np.int64), np.int64(7), 1, data._AUGMENT_DRAWS)
    drawn = drawn.numpy()
    assert set(drawn % 9) == set(range(9)) and set(drawn // 9 % 9) == set(range(9))
    assert 0.45 < np.mean(drawn // 81 % 2) < 0.55


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


def test_train_eval_examples_is_the_first_of_the_training_images(mnist):
    sample = data.load(
        "mnist",
        batch_size=32,
        validation_examples=500,
        train_examples=2000,
        test_examples=300,
        train_eval_examples=700,
        seed=3,
    )
    full = np.concatenate([y for _, y in _batches(mnist.train_eval, 10)])
    part = [(x, y) for x, y in _batches(sample.train_eval, 10)]
    assert sum(len(y) for _, y in part) == 700
    np.testing.assert_array_equal(np.concatenate([y for _, y in part]), full[:700])
