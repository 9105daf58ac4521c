"""Decoded copies of TFDS splits, cached as `.npz` files (TensorFlow only).

TFDS stores MNIST and CIFAR-10 images PNG-encoded; decoding the 60,000
training images takes about 4-6 s on a CPU core, paid by every process at
its first training step. The decoded split, in TFDS's deterministic file
order (`shuffle_files=False`), is kept in a cache folder and read back in
0.2 s as the same elements in the same order, so the training stream (and
every result) is unchanged.

The cache is keyed by the data set's name, version and split and by the
name, size and modification time of its TFDS record files, so new or
changed data is decoded again. It lives in `$LTH_KERAS_CACHE`, else
`$XDG_CACHE_HOME/lth_keras`, else `~/.cache/lth_keras`; a cache that
cannot be written is skipped. Splits with no record files on disk (TFDS's
`mock_data` in tests) are never cached.
"""

import glob
import hashlib
import io
import json
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from lth_keras._io import atomic_write, cache_folder

__all__ = ["cache_folder", "decoded_split"]


def _cache_path(name, split):
    """The cache file of a split, or `None` if its record files are not on disk."""
    try:
        builder = tfds.builder(name)
        folder = os.fspath(builder.data_dir)
    except Exception:  # noqa: BLE001 - no builder data: nothing to key a cache on
        return None
    files = sorted(glob.glob(os.path.join(folder, f"{name}-{split}.*")))
    if not files:
        return None
    stats = [(os.path.basename(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]
    key = hashlib.sha256(json.dumps([name, split, folder, stats]).encode()).hexdigest()[:16]
    version = os.path.basename(folder)
    return os.path.join(cache_folder(), f"{name}-{version}-{split}-{key}.npz")


def decoded_split(name, split, read):
    """A split as `(uint8 image, label)` elements, decoded once and cached.

    Args:
        name: The TFDS name.
        split: `"train"` or `"test"`.
        read: `read(split)` gives the split from TFDS (`as_supervised=True`,
            `shuffle_files=False`), used when there is no usable cache.

    Returns:
        A `tf.data.Dataset` with the same elements in the same order as
        `read(split)`.
    """
    path = _cache_path(name, split)
    if path is not None and os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as data:
                images, labels = data["images"], data["labels"]
            return tf.data.Dataset.from_tensor_slices((images, labels))
        except (OSError, ValueError, KeyError):
            pass  # damaged: decode again below
    dataset = read(split)
    if path is None:
        return dataset
    batches = list(tfds.as_numpy(dataset.batch(10000)))
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    buffer = io.BytesIO()
    np.savez(buffer, images=images, labels=labels)
    try:
        atomic_write(path, buffer.getvalue())
    except OSError:
        pass  # the cache is optional
    return tf.data.Dataset.from_tensor_slices((images, labels))
