"""Decoded copies of TFDS splits, cached as `.npz` files.

TFDS stores MNIST and CIFAR-10 images PNG-encoded; decoding the 60,000
training images takes about 4-6 s on a CPU core, paid by every process at
its first training step. The decoded split, in TFDS's deterministic file
order (`shuffle_files=False`), is kept in a cache folder and read back in
0.2 s as the same elements in the same order, so the training stream (and
every result) is unchanged. In memory, the arrays need no `tf.data` cache
(whose first pass costs 0.1-0.3 s before the first training step).

A decoded split is named by a digest of its TFDS record files' content, so
a copy of the same data (a data folder copied or re-created elsewhere) reuses
it and new or changed data is decoded again (a split with no record files
on disk, as under TFDS's `mock_data` in tests, is decoded but never
cached). An index file per data set and
TFDS data directory remembers where TFDS found the data set, its features
and the name, size and modification time of every record file: while those
are unchanged, a process reads the cache without importing
`tensorflow_datasets` at all (0.5-0.8 s of imports and builder set-up).
The cache lives in `$LTH_KERAS_CACHE`, else `$XDG_CACHE_HOME/lth_keras`,
else `~/.cache/lth_keras`; a cache that cannot be written is skipped.
Whenever a process goes through TFDS, decoded files of the data set that no
index names and that no process has read for `STALE_SECONDS` (a week) are
deleted: those of data that changed or moved, or of older lth_keras versions.

Before decoding, the record files are checked against TFDS's
`dataset_info.json`: every shard present, their total size the one
recorded; a shard that cannot be read, or a split with fewer examples than
recorded, raises `DataDamagedError` naming the data set, its folder and the
file, instead of TensorFlow's `DataLossError` or `NotFoundError`.
"""

import contextlib
import glob
import hashlib
import importlib.util
import io
import json
import os
import sys
import time
import zipfile

import numpy as np

from lth_keras._io import atomic_write, cache_folder, sha256_file

__all__ = ["DataDamagedError", "cache_folder", "decoded_splits"]

#: Unindexed decoded files unread for this long are deleted (see above).
STALE_SECONDS = 7 * 24 * 3600


class DataDamagedError(ValueError):
    """A data set's files in the TFDS data directory are missing, truncated or unreadable."""

    def __init__(self, name, folder, file, problem):
        super().__init__(
            f"The {name} data in {folder} is damaged: {file} {problem}. Copy a complete {name} "
            f"there, or delete {folder} and let TFDS prepare {name} again."
        )


def _data_dir():
    """The default TFDS data directory of this process, as TFDS resolves it.

    TFDS reads `TFDS_DATA_DIR` once, when it is imported; until then the
    environment says what it will read.
    """
    constants = sys.modules.get("tensorflow_datasets.core.constants")
    if constants is not None:
        folder = os.fspath(constants.DATA_DIR)
    else:
        default = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
        folder = os.environ.get("TFDS_DATA_DIR", default)
    return os.path.abspath(os.path.expanduser(folder))


def _index_path(name):
    """The index file of `name` under this process's TFDS data directory and TFDS install."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    origin = spec.origin if spec is not None and spec.origin else ""
    try:
        installed = os.stat(origin).st_mtime_ns if origin else None
    except OSError:
        installed = None
    where = [name, _data_dir(), origin, installed]
    key = hashlib.sha256(json.dumps(where).encode()).hexdigest()[:16]
    return os.path.join(cache_folder(), f"{name}-index-{key}.json")


def _files(folder, name, split):
    """A split's record files, sorted (`[]` if none)."""
    return sorted(glob.glob(os.path.join(folder, f"{name}-{split}.*")))


def _stats(files):
    """`[[file name, size, mtime_ns], ...]` of record files."""
    return [[os.path.basename(f), os.path.getsize(f), os.stat(f).st_mtime_ns] for f in files]


def _read_npz(path, touch=False):
    """`(images, labels)` of a cached split, or `None` if it is missing or damaged.

    With `touch`, a file read is marked as used now (see `_prune`).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = data["images"], data["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if touch:
        with contextlib.suppress(OSError):
            os.utime(path)
    return arrays


def _prune(name, now):
    """Deletes `name`'s decoded files that no index names, unread for `STALE_SECONDS`."""
    folder = cache_folder()
    named = set()
    for index in glob.glob(os.path.join(folder, f"{name}-index-*.json")):
        try:
            with open(index) as f:
                named.update(entry["path"] for entry in json.load(f)["splits"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    for path in glob.glob(os.path.join(folder, f"{name}-*.npz")):
        with contextlib.suppress(OSError):
            if path not in named and now - os.stat(path).st_mtime > STALE_SECONDS:
                os.remove(path)


def _warm(name, splits):
    """`({split: (images, labels)}, features)` from the index alone, or `None`."""
    try:
        with open(_index_path(name)) as f:
            entry = json.load(f)
        known = entry["splits"]
        if any(split not in known for split in splits):
            return None
        if any(_stats(_files(entry["folder"], name, s)) != known[s]["stats"] for s in splits):
            return None
        features = {
            "input_shape": tuple(entry["features"]["input_shape"]),
            "num_classes": int(entry["features"]["num_classes"]),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None
    arrays = {}
    for split in splits:
        arrays[split] = _read_npz(known[split]["path"])
        if arrays[split] is None:
            return None
    return arrays, features


def _decoded_path(name, folder, split, files):
    """The cache file of a split, named by the content of its record files."""
    content = [[os.path.basename(f), os.path.getsize(f), sha256_file(f)] for f in files]
    key = hashlib.sha256(json.dumps([name, split, content]).encode()).hexdigest()[:16]
    return os.path.join(cache_folder(), f"{name}-{os.path.basename(folder)}-{split}-{key}.npz")


#: Bytes a TFRecord file adds to each example: its length and two CRCs.
_TFRECORD_FRAMING = 16


def _check_shards(name, folder, info, split, file_format):
    """Raises `DataDamagedError` for a missing shard or a split of the wrong size on disk.

    For TFRecord files the size is exact: TFDS records the bytes of the
    examples (`num_bytes`), and each adds 16 bytes of framing on disk.
    """
    expected = [os.fspath(p) for p in info.filepaths]
    missing = [p for p in expected if not os.path.exists(p)]
    if missing:
        raise DataDamagedError(name, folder, os.path.basename(missing[0]), "is missing")
    if file_format != "tfrecord" or not int(info.num_bytes or 0):
        return
    size = sum(os.path.getsize(p) for p in expected)
    recorded = int(info.num_bytes) + _TFRECORD_FRAMING * int(info.num_examples)
    if size != recorded:
        shard = os.path.basename(expected[0]) if len(expected) == 1 else f"one of {split}'s files"
        raise DataDamagedError(
            name,
            folder,
            shard,
            f"is truncated or altered (the {split} split has {size} bytes, "
            f"dataset_info.json gives {recorded})",
        )


def _decode(dataset, path=None, damaged=None):
    """Decodes `dataset` to arrays and keeps them at `path` (if given and writable).

    `damaged(error)` turns TensorFlow's error for an unreadable file into the
    error to raise (by default TensorFlow's is raised).
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        batches = list(tfds.as_numpy(dataset.batch(10000)))
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as error:
        if damaged is None:
            raise
        raise damaged(error) from error
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    if path is None:
        return images, labels
    buffer = io.BytesIO()
    np.savez(buffer, images=images, labels=labels)
    try:
        atomic_write(path, buffer.getvalue())
    except OSError:
        pass  # the cache is optional
    return images, labels


def _cold(name, splits, read):
    """Goes through TFDS: finds, decodes (or reuses) each split and writes the index."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name)
    image, label = builder.info.features["image"], builder.info.features["label"]
    features = {"input_shape": tuple(image.shape), "num_classes": label.num_classes}
    try:
        folder = os.fspath(builder.data_dir)
    except Exception:  # noqa: BLE001 - no builder data: nothing to key a cache on
        folder = None
    on_disk = folder is not None and any(_files(folder, name, split) for split in splits)
    if on_disk:  # not under TFDS's mock_data, which has no files
        file_format = str(getattr(builder.info.file_format, "value", builder.info.file_format))
        for split in splits:
            if split in builder.info.splits:  # recorded in dataset_info.json
                _check_shards(name, folder, builder.info.splits[split], split, file_format)
    datasets, entry = {}, {}
    for split in splits:
        files = _files(folder, name, split) if folder else []
        if not files:
            datasets[split] = _decode(read(split))
            continue
        stats = _stats(files)
        path = _decoded_path(name, folder, split, files)
        arrays = _read_npz(path, touch=True) if os.path.exists(path) else None
        if arrays is None:
            arrays = _decode(read(split), path, _unreadable(name, folder, files))
        recorded = (
            int(builder.info.splits[split].num_examples or 0) if split in builder.info.splits else 0
        )
        if recorded and len(arrays[1]) != recorded:
            raise DataDamagedError(
                name,
                folder,
                f"the {split} split",
                f"holds {len(arrays[1])} examples, dataset_info.json records {recorded}",
            )
        datasets[split] = arrays
        entry[split] = {"stats": stats, "path": path}
    # Only data TFDS found in the default data directory: the one the key names.
    inside = folder is not None and os.path.abspath(folder).startswith(_data_dir() + os.sep)
    if inside and len(entry) == len(splits):
        index = {
            "folder": folder,
            "features": {**features, "input_shape": list(features["input_shape"])},
            "splits": entry,
        }
        try:
            atomic_write(_index_path(name), json.dumps(index, indent=1).encode())
        except OSError:
            pass  # the cache is optional
    if entry:
        _prune(name, time.time())
    return datasets, features


def _unreadable(name, folder, files):
    """`DataDamagedError` of TensorFlow's error reading one of `files`."""

    def damaged(error):
        import tensorflow as tf

        message = getattr(error, "message", "") or str(error)
        named = [os.path.basename(f) for f in files if f in message]
        names = named or [os.path.basename(f) for f in files]
        file = names[0] if len(names) == 1 else f"one of {', '.join(names)}"
        if isinstance(error, tf.errors.NotFoundError):
            return DataDamagedError(name, folder, file, "cannot be found")
        return DataDamagedError(name, folder, file, "holds a truncated or corrupt record")

    return damaged


def decoded_splits(name, splits, read):
    """Splits as `(uint8 image, label)` arrays, decoded once and cached, with features.

    Args:
        name: The TFDS name.
        splits: The split names, e.g. `("train", "test")`.
        read: `read(split)` gives the split from TFDS (`as_supervised=True`,
            `shuffle_files=False`), used when there is no usable cache.

    Returns:
        `(sources, features)`: `{split: (images, labels)}`, NumPy arrays
        holding the elements of `read(split)` in its order, and
        `{"input_shape": tuple, "num_classes": int}` from TFDS's features.

    Example:

    ```python
    sources, features = decoded_splits("mnist", ("train", "test"), read)
    ```
    """
    warm = _warm(name, splits)
    return _cold(name, splits, read) if warm is None else warm
