"""Small file helpers shared by ticket files, exports and run directories."""

import contextlib
import hashlib
import os
import tempfile

__all__ = ["atomic_write", "sha256_file"]


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


def atomic_write(path, data):
    """Writes bytes to `path` atomically (temporary file, fsync, rename).

    Args:
        path: Destination path.
        data: Bytes to write.

    Example:

    ```python
    atomic_write("run/config.json", b"{}")
    ```
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600; readable like any other file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
