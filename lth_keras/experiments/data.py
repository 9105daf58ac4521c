"""TFDS input pipelines for MNIST and CIFAR-10 (TensorFlow only).

The paper's protocol: the last `validation_examples` images of the training
split are held out for validation (early stopping); the rest train. Images
are held in memory as `uint8` (see `decoded`) and normalised on the fly
(MNIST to [0, 1], CIFAR-10 per channel). The training stream is shuffled with a seed, repeated, and
optionally augmented (random crop after 4-pixel padding, horizontal flip)
with stateless random ops seeded by the example's position in the stream,
so `train(start_step=k)` continues the exact stream a run interrupted at
step `k` would have seen. Under a multi-worker strategy every worker takes
its share of each global batch. `TFDS_DATA_DIR` is honoured by TFDS itself.
"""

import dataclasses
import os
import socket

import tensorflow as tf

from lth_keras.experiments.config import DATASETS
from lth_keras.experiments.decoded import decoded_splits
from lth_keras.options import check_choice

__all__ = ["DataUnavailableError", "Splits", "load"]

_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)
_EVAL_BATCH = 1000


def _normalizer(name):
    if name == "mnist":
        return lambda image: tf.cast(image, tf.float32) / 255.0
    mean, std = tf.constant(_CIFAR_MEAN), tf.constant(_CIFAR_STD)
    return lambda image: (tf.cast(image, tf.float32) / 255.0 - mean) / std


def _augment(image, seed, index):
    """Crop and flip, seeded by `(seed, 2 * index)` and `(seed, 2 * index + 1)`."""
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    image = tf.image.stateless_random_crop(
        padded, tf.shape(image), seed=tf.stack([seed, 2 * index])
    )
    return tf.image.stateless_random_flip_left_right(image, seed=tf.stack([seed, 2 * index + 1]))


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
        raw_train: The `(uint8 image, label)` training examples, in memory.
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
    raw_train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    train_eval: tf.data.Dataset
    input_shape: tuple
    num_classes: int
    train_size: int
    batch_size: int
    augment: bool
    seed: int

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
        normalize = _normalizer(self.name)
        augment, seed = self.augment, self.seed

        def augmented(index, example):
            image, label = example
            return _augment(image, tf.constant(seed, tf.int64), index), label

        stream = self.raw_train.shuffle(
            self.train_size, seed=self.seed, reshuffle_each_iteration=True
        ).repeat()
        if augment:
            stream = (
                stream.enumerate()
                .skip(start_step * self.batch_size)
                .map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
            )
        else:
            stream = stream.skip(start_step * self.batch_size)
        # Normalising whole batches is much cheaper than image by image.
        stream = stream.batch(self.batch_size, drop_remainder=True).map(
            lambda images, labels: (normalize(images), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return _shardable(stream.prefetch(tf.data.AUTOTUNE))


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


def _size(source):
    """The number of examples of a split from `decoded_splits`."""
    if isinstance(source, tf.data.Dataset):
        return int(source.cardinality())
    return len(source[1])


def _examples(source, start, stop):
    """Examples `[start, stop)` of a split from `decoded_splits` (`stop=None`: to its end).

    Decoded arrays are sliced (a `tf.data` cache of them would only copy
    them again, 0.1-0.3 s before the first training step); a split read
    from TFDS is cached after its first pass.
    """
    if isinstance(source, tf.data.Dataset):
        part = source.skip(start) if start else source
        return (part if stop is None else part.take(stop - start)).cache()
    images, labels = source
    return tf.data.Dataset.from_tensor_slices((images[start:stop], labels[start:stop]))


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

    Example:

    ```python
    splits = load("mnist", batch_size=60)
    model.fit(splits.train(), steps_per_epoch=1000, validation_data=splits.validation)
    ```
    """
    check_choice(name, "name", DATASETS)

    sources, features = decoded_splits(name, ("train", "test"), lambda s: _read(name, s))
    total = _size(sources["train"])
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
        raw_train=_examples(sources["train"], 0, train_size),
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
