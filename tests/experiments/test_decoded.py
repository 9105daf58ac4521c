"""The decoded-split cache: warm loads without TFDS, content keys, invalidation."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers import MNIST_DIR, pythonpath

from lth_keras.experiments import decoded

_SIZES = {"train": 6, "test": 4}


@pytest.fixture
def fake_tfds(tmp_path, monkeypatch):
    """A TFDS data folder whose MNIST record files are stand-ins, and an empty cache."""
    folder = tmp_path / "tfds" / "mnist" / "3.0.1"
    folder.mkdir(parents=True)
    for split in _SIZES:
        (folder / f"mnist-{split}.tfrecord-00000-of-00001").write_bytes(split.encode())
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    # TFDS read TFDS_DATA_DIR when it was imported.
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setenv("LTH_KERAS_CACHE", str(tmp_path / "cache"))
    return folder


class _Reader:
    """`read(split)`: small uint8 images whose pixels say their split and index."""

    def __init__(self):
        self.calls = []

    def __call__(self, split):
        self.calls.append(split)
        n = _SIZES[split]
        offset = 100 if split == "test" else 0
        images = (np.arange(n, dtype=np.uint8) + offset)[:, None, None, None] * np.ones(
            (1, 28, 28, 1), np.uint8
        )
        labels = np.arange(n, dtype=np.int64) % 10
        return tf.data.Dataset.from_tensor_slices((images, labels))


def _check(sources):
    for split, n in _SIZES.items():
        images, labels = sources[split]
        offset = 100 if split == "test" else 0
        np.testing.assert_array_equal(images[:, 0, 0, 0], np.arange(n) + offset)
        np.testing.assert_array_equal(labels, np.arange(n) % 10)


def test_cold_then_warm_without_tfds(fake_tfds, monkeypatch):
    read = _Reader()
    sources, features = decoded.decoded_splits("mnist", ("train", "test"), read)
    _check(sources)
    assert features == {"input_shape": (28, 28, 1), "num_classes": 10}
    assert read.calls == ["train", "test"]
    with open(decoded._index_path("mnist")) as f:
        assert json.load(f)["folder"] == str(fake_tfds)

    def no_tfds(*args):
        raise AssertionError("the warm path went through TFDS")

    monkeypatch.setattr(decoded, "_cold", no_tfds)
    sources, again = decoded.decoded_splits("mnist", ("train", "test"), read)
    _check(sources)
    assert again == features and read.calls == ["train", "test"]


def test_copied_data_reuses_the_decoded_copy(fake_tfds):
    read = _Reader()
    decoded.decoded_splits("mnist", ("train", "test"), read)
    record = fake_tfds / "mnist-train.tfrecord-00000-of-00001"
    stat = record.stat()
    os.utime(record, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a fresh copy
    sources, _ = decoded.decoded_splits("mnist", ("train", "test"), read)
    _check(sources)
    assert read.calls == ["train", "test"]  # same content: nothing decoded again


def test_changed_data_is_decoded_again(fake_tfds):
    read = _Reader()
    decoded.decoded_splits("mnist", ("train", "test"), read)
    (fake_tfds / "mnist-test.tfrecord-00000-of-00001").write_bytes(b"other test data")
    decoded.decoded_splits("mnist", ("train", "test"), read)
    assert read.calls == ["train", "test", "test"]


def test_stale_unindexed_copies_are_deleted(fake_tfds, tmp_path):
    read = _Reader()
    decoded.decoded_splits("mnist", ("train", "test"), read)
    cache = tmp_path / "cache"
    kept = sorted(cache.glob("mnist-*.npz"))
    week = decoded.STALE_SECONDS
    old = time.time() - week - 60
    stale = cache / "mnist-3.0.1-train-0123456789abcdef.npz"  # e.g. an older version's
    recent = cache / "mnist-3.0.1-test-fedcba9876543210.npz"
    other = cache / "cifar10-3.0.2-train-0123456789abcdef.npz"
    for path in (stale, recent, other):
        path.write_bytes(b"npz")
    for path in (stale, other, *kept):
        os.utime(path, (old, old))  # indexed copies are kept however old
    (fake_tfds / "mnist-test.tfrecord-00000-of-00001").write_bytes(b"changed test data")
    decoded.decoded_splits("mnist", ("train", "test"), read)  # goes through TFDS
    assert not stale.exists()
    assert recent.exists() and other.exists()  # unread for less than a week; another data set
    assert kept[1].exists()  # the train split's copy, still named by the new index
    assert not kept[0].exists()  # the old test copy: no index names it now, unread for a week
    assert len(list(cache.glob("mnist-*test*.npz"))) == 2  # the new one and `recent`


def test_damaged_index_falls_back_to_tfds(fake_tfds):
    read = _Reader()
    decoded.decoded_splits("mnist", ("train", "test"), read)
    with open(decoded._index_path("mnist"), "w") as f:
        f.write("{not json")
    sources, _ = decoded.decoded_splits("mnist", ("train", "test"), read)
    _check(sources)
    assert read.calls == ["train", "test"]  # the decoded copies are still found by content


@pytest.mark.slow
def test_a_warm_process_does_not_import_tfds():
    code = (
        "import sys\n"
        "from lth_keras.experiments import data\n"
        "data.load('mnist', batch_size=60)\n"
        "print('tensorflow_datasets' in sys.modules)\n"
    )
    env = dict(os.environ, TFDS_DATA_DIR=MNIST_DIR, PYTHONPATH=pythonpath())
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.split()[-1]
        for _ in range(2)  # the first may build the cache
    ]
    assert outputs[1] == "False"
