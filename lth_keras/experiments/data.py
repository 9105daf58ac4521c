"""TFDS input pipelines for MNIST and CIFAR-10 (TensorFlow only).

The paper's protocol: the last `validation_examples` images of the training
split are held out for validation (early stopping); the rest train. Images
are held in memory as `uint8` (see `decoded`) and normalised on the fly
(MNIST to [0, 1], CIFAR-10 per channel).

The training stream is a function of each example's position in it: the
example at position `i` is image `P_e(i mod n)` of the `n` training images,
where `e = i // n` is its epoch and `P_e` a stateless pseudorandom
permutation keyed by the seed and `e` (the op behind
`tf.random.experimental.index_shuffle`), so every epoch is shuffled anew
without a shuffle buffer. Optional augmentation (random crop after 4-pixel
padding, horizontal flip) draws its offsets from a keyed permutation of `i`
too. Each batch is gathered from memory in one operation, and
`train(start_step=k)` starts at position `k * batch_size` at once, with the
exact stream a run interrupted at step `k` would have seen. Under a
multi-worker strategy every worker takes its share of each global batch.
`TFDS_DATA_DIR` is honoured by TFDS itself.
"""

import dataclasses
import os
import socket
import typing

import tensorflow as tf

from lth_keras.experiments.config import DATASETS
from lth_keras.experiments.decoded import DataDamagedError, decoded_splits
from lth_keras.options import check_choice

__all__ = ["DataDamagedError", "DataUnavailableError", "Splits", "load", "load_config"]

_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)
_EVAL_BATCH = 1000
# A training stream's positions run to 2**62. Augmentation draws one of
# 9 * 9 * 2 (crop offsets, flip) from a permutation of 2**40 values.
_STREAM_END = 2**62
_AUGMENT_DRAWS = 2**40


def _normalizer(name):
    if name == "mnist":
        return lambda image: tf.cast(image, tf.float32) / 255.0
    mean, std = tf.constant(_CIFAR_MEAN), tf.constant(_CIFAR_STD)
    return lambda image: (tf.cast(image, tf.float32) / 255.0 - mean) / std


def _permuted(positions, seed, stream, size):
    """Maps stream positions through keyed pseudorandom permutations of `[0, size)`.

    Position `p` (an int64 vector's element) goes to the image of
    `p mod size` under the permutation keyed by `(seed, stream, p // size)`.
    """
    fill = tf.ones_like(positions)
    keys = tf.stack([fill * seed, fill * stream, positions // size], axis=1)
    return tf.raw_ops.RandomIndexShuffle(
        index=positions % size, seed=keys, max_index=tf.constant(size - 1, tf.int64)
    )


def _augment(images, seed, positions):
    """Random crops of the 4-pixel-padded images and horizontal flips, keyed by position."""
    draws = _permuted(positions, seed, 1, _AUGMENT_DRAWS)
    offset_y, offset_x, flip = draws % 9, draws // 9 % 9, draws // 81 % 2 == 1
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]])
    rows = offset_y[:, None] + tf.range(height, dtype=tf.int64)[None]
    cols = offset_x[:, None] + tf.range(width, dtype=tf.int64)[None]
    cropped = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    return tf.where(flip[:, None, None, None], tf.reverse(cropped, axis=[2]), cropped)


def _shardable(dataset):
    """Options of every pipeline: multi-worker sharding by data, no autotuning.

    With the `DATA` policy each worker takes its share of every global batch
    (the files of a TFDS split cannot be divided between workers evenly).

    tf.data's autotuning thread sleeps in periods that double (10 ms, 20 ms,
    ... 5.12 s, 10.24 s) and deleting an iterator waits for it to wake, so
    every `fit` and `evaluate` ended on such a boundary: 1-10 s lost per job,
    a third of a LeNet round. These pipelines are light; fixed parallelism
    loses nothing, and the numbers they feed are unchanged.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.autotune.enabled = False
    return dataset.with_options(options)


@dataclasses.dataclass
class Splits:
    """The data of one experiment.

    Attributes:
        name: TFDS name.
        train_images, train_labels: The training examples (`uint8` images),
            in memory as tensors.
        validation, test, train_eval: Batched, normalised evaluation sets
            (`train_eval` is the training set, for train accuracy).
        input_shape, num_classes, train_size: Facts about the data.
        batch_size, augment, seed: Settings of the training stream.

    Example:

    ```python
    splits = data.load("mnist", batch_size=60)
    model.fit(splits.train(), steps_per_epoch=1000, validation_data=splits.validation)
    ```
    """

    name: str
    train_images: tf.Tensor
    train_labels: tf.Tensor
    validation: tf.data.Dataset
    test: tf.data.Dataset
    train_eval: tf.data.Dataset
    input_shape: tuple
    num_classes: int
    train_size: int
    batch_size: int
    augment: bool
    seed: int
    _gathered: typing.Any = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def train(self, start_step=0):
        """The infinite training stream of batches, from step `start_step`.

        Args:
            start_step: Number of batches already consumed. Defaults to `0`.

        Returns:
            A `tf.data.Dataset` of `(images, labels)` batches.

        Example:

        ```python
        batches = splits.train(start_step=1000)
        ```
        """
        if self._gathered is None:
            self._gathered = self._batch_function()
        # The batch op is on the positions, so a distribution strategy can
        # split every global batch between replicas and workers.
        stream = (
            tf.data.Dataset.range(start_step * self.batch_size, _STREAM_END)
            .batch(self.batch_size, drop_remainder=True)
            .map(self._gathered, num_parallel_calls=2)
        )
        return _shardable(stream.prefetch(2))

    def _batch_function(self):
        """`positions -> (images, labels)`, traced once for all the streams of these splits.

        tf.data traces a plain function again for every new stream (80 ms
        here, at each job's start); the streams share one concrete function.
        """
        normalize = _normalizer(self.name)
        images, labels, augment = self.train_images, self.train_labels, self.augment
        seed, size = tf.constant(self.seed, tf.int64), self.train_size

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
        def gathered(positions):
            chosen = _permuted(positions, seed, 0, size)
            batch = tf.gather(images, chosen)
            if augment:
                batch = _augment(batch, seed, positions)
            # Normalising whole batches is much cheaper than image by image.
            return normalize(batch), tf.gather(labels, chosen)

        return gathered


class DataUnavailableError(FileNotFoundError):
    """A data set is neither in the TFDS data directory nor downloadable."""


# Where TFDS downloads each data set from; reachable or not decides, within
# seconds, whether a missing data set can be downloaded.
_DOWNLOAD_HOSTS = {"mnist": "storage.googleapis.com", "cifar10": "www.cs.toronto.edu"}


def _reachable(host, timeout=3.0):
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        return str(error)
    return None


def _read(name, split):
    """`tfds.load` of a prepared data set; downloads it only if that can work.

    TFDS retries an impossible download for minutes; here a missing data set
    on a machine that cannot reach its download host fails at once.
    """
    import tensorflow_datasets as tfds  # only without a decoded copy (see `decoded`)

    kwargs = dict(split=split, as_supervised=True, shuffle_files=False)
    try:
        return tfds.load(name, download=False, **kwargs)
    except AssertionError:  # TFDS: "could not find data in <dir>"
        pass
    problem = _reachable(_DOWNLOAD_HOSTS[name])
    if problem is not None:
        folder = os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
        raise DataUnavailableError(
            f"{name} is not in the TFDS data directory {folder} and cannot be downloaded "
            f"({_DOWNLOAD_HOSTS[name]}: {problem}). Set TFDS_DATA_DIR to a folder holding "
            f"a prepared {name} (<folder>/{name}/<version>/...), copy one there, or run once "
            "with network access."
        )
    return tfds.load(name, download=True, **kwargs)


def _examples(source, start, stop):
    """Examples `[start, stop)` of a split's `(images, labels)` (`stop=None`: to its end).

    The arrays are sliced; a `tf.data` cache of them would only copy them
    again (0.1-0.3 s before the first training step).
    """
    images, labels = source
    return tf.data.Dataset.from_tensor_slices((images[start:stop], labels[start:stop]))


def load_config(config):
    """`load` with the data fields of an `ExperimentConfig` (data set, sizes, augmentation, seed).

    Args:
        config: A `lth_keras.experiments.ExperimentConfig`.

    Returns:
        A `Splits`.

    Example:

    ```python
    splits = load_config(lth_keras.experiments.preset("lenet"))
    ```
    """
    return load(
        config.dataset,
        batch_size=config.batch_size,
        validation_examples=config.validation_examples,
        train_examples=config.train_examples,
        test_examples=config.test_examples,
        train_eval_examples=config.train_eval_examples,
        augment=config.augment,
        seed=config.seed,
    )


def load(
    name,
    *,
    batch_size,
    validation_examples=5000,
    train_examples=None,
    test_examples=None,
    train_eval_examples=None,
    augment=False,
    seed=0,
):
    """Loads MNIST or CIFAR-10 from TFDS and builds the pipelines.

    Args:
        name: `"mnist"` or `"cifar10"`.
        batch_size: Training batch size.
        validation_examples: Training images held out for validation.
            Defaults to `5000`.
        train_examples: Use only this many of the other training images.
            Defaults to `None` (all).
        test_examples: Use only this many test images. Defaults to `None`.
        train_eval_examples: `train_eval` holds only the first this many
            training images. Defaults to `None` (all).
        augment: Augment the training stream. Defaults to `False`.
        seed: Seed of the shuffle and the augmentation. Defaults to `0`.

    Returns:
        A `Splits`.

    Raises:
        ValueError: If `name` is unknown or the validation split leaves no
            training images.
        DataUnavailableError: If the data set is not in the TFDS data
            directory and its download host cannot be reached (within
            seconds, instead of TFDS's minutes of retries).
        DataDamagedError: If a file of the data set is missing, truncated
            or unreadable (the message names the data set, its folder and
            the file).

    Example:

    ```python
    splits = load("mnist", batch_size=60)
    model.fit(splits.train(), steps_per_epoch=1000, validation_data=splits.validation)
    ```
    """
    check_choice(name, "name", DATASETS)

    sources, features = decoded_splits(name, ("train", "test"), lambda s: _read(name, s))
    total = len(sources["train"][1])
    if not 0 < validation_examples < total:
        raise ValueError(
            f"Received an invalid value for `validation_examples`, expected an int in "
            f"(0, {total}) for {name}. Received: validation_examples={validation_examples}"
        )
    train_size = total - validation_examples
    if train_examples is not None:
        train_size = min(train_size, train_examples)
    train_eval_size = min(train_size, train_eval_examples or train_size)

    normalize = _normalizer(name)

    def evaluation(dataset):
        return _shardable(
            dataset.batch(_EVAL_BATCH)
            .map(lambda images, labels: (normalize(images), labels))
            .prefetch(tf.data.AUTOTUNE)
        )

    return Splits(
        name=name,
        train_images=tf.convert_to_tensor(sources["train"][0][:train_size]),
        train_labels=tf.convert_to_tensor(sources["train"][1][:train_size]),
        validation=evaluation(_examples(sources["train"], total - validation_examples, total)),
        test=evaluation(_examples(sources["test"], 0, test_examples)),
        train_eval=evaluation(_examples(sources["train"], 0, train_eval_size)),
        input_shape=features["input_shape"],
        num_classes=features["num_classes"],
        train_size=train_size,
        batch_size=batch_size,
        augment=augment,
        seed=seed,
    )
