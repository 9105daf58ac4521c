"""Small file helpers shared by ticket files, exports and run directories.

Writes are atomic (temporary file, fsync, rename) and fail with a
`WriteError` that names the file, its folder and, when the disk is full, the
space needed and free; nothing half-written is left behind.
"""

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile

__all__ = [
    "WriteError",
    "atomic_write",
    "cache_folder",
    "free_bytes",
    "render_to_bytes",
    "sha256_file",
]


def cache_folder():
    """lth_keras's cache folder.

    `$LTH_KERAS_CACHE`, else `$XDG_CACHE_HOME/lth_keras` or `~/.cache/lth_keras`.

    It holds decoded data sets (`lth_keras.experiments.decoded`) and compiled
    XLA programs (`lth_keras.tensorflow.compile_cache`).
    """
    if os.environ.get("LTH_KERAS_CACHE"):
        return os.environ["LTH_KERAS_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lth_keras")


def sha256_file(path):
    """The SHA-256 of a file, as hexadecimal."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_mode():
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def free_bytes(folder):
    """Bytes free for this user on the file system holding `folder` (None if unknown)."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def _megabytes(count):
    return f"{count / 1e6:.1f} MB"


class WriteError(OSError):
    """A file could not be written (full disk, read-only folder, permissions).

    The message names the file and its folder and, for a full disk, the
    space needed and free. `errno`, `strerror` and `filename` are those of
    the underlying error.
    """

    @classmethod
    def wrap(cls, error, path, size=None):
        """A `WriteError` describing `error` while writing `size` bytes to `path`."""
        folder = os.path.dirname(os.path.abspath(path))
        message = f"cannot write {os.path.basename(path)} in {folder}: {error.strerror or error}"
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            free = free_bytes(folder)
            needs = f"it needs {_megabytes(size)}" if size is not None else "more space is needed"
            message += f" ({needs}, {_megabytes(free) if free is not None else 'unknown'} free)"
        wrapped = cls(error.errno, message, path)
        return wrapped

    def __str__(self):
        return self.strerror


def _check_space(folder, path, size):
    free = free_bytes(folder)
    if free is not None and size > free:
        raise WriteError.wrap(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path, size)


def atomic_write(path, data):
    """Writes bytes to `path` atomically (temporary file, fsync, rename).

    Args:
        path: Destination path.
        data: Bytes to write.

    Raises:
        WriteError: If the folder cannot be created or written (the
            destination is unchanged then).

    Example:

    ```python
    atomic_write("run/config.json", b"{}")
    ```
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        _check_space(folder, path, len(data))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    except WriteError:
        raise
    except OSError as error:
        raise WriteError.wrap(error, path, len(data)) from error
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600; readable like any other file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise WriteError.wrap(error, path, len(data)) from error
        raise


def _scratch_root():
    """A memory-backed folder when there is one (Linux's /dev/shm), else the temp folder."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return None


def render_to_bytes(save, suffix):
    """Runs `save(path)` on a scratch path and returns the bytes it wrote.

    The scratch folder is memory-backed where possible, so writers that
    need a path (h5py, zip) never meet a full destination disk themselves:
    h5py can crash the process when a disk fills while it closes a file.
    The bytes then go to their destination with `atomic_write`.

    Args:
        save: A function of a path, e.g. `model.save_weights`.
        suffix: The file name the writer expects (its extension matters).

    Returns:
        The bytes written.
    """
    try:
        scratch = tempfile.mkdtemp(prefix="lth_keras-", dir=_scratch_root())
    except OSError:
        scratch = tempfile.mkdtemp(prefix="lth_keras-")
    try:
        path = os.path.join(scratch, suffix)
        save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
