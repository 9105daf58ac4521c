"""The lock of a run directory: one live run per directory.

`acquire(path)` takes an exclusive `flock` on `<path>/lock`, which the
kernel releases when the holding process ends, however it ends (SIGKILL
included), so a killed run's lock is free at once. The file records who
holds it, for the message a second run gets; the last holder removes it
when the run ends, while still holding the lock.
"""

import contextlib
import fcntl
import json
import os
import socket
import sys
import time

from lth_keras._io import WriteError

__all__ = ["RunDirInUseError", "acquire", "release"]


class RunDirInUseError(RuntimeError):
    """Another live process runs in this run directory."""


_LOCK = "lock"
_held = {}  # run directory -> [file descriptor, holders in this process]


def _describe(holder):
    if not isinstance(holder, dict):
        return "another process"
    argv = holder.get("argv")
    command = " ".join(map(str, argv))[:200] if isinstance(argv, list) else ""
    return (
        f"process {holder.get('pid')} on {holder.get('host')} (started "
        f"{holder.get('started')}{': ' + command if command else ''})"
    )


def acquire(path):
    """Takes the run directory's lock for this process (re-entrant within it).

    The lock is an exclusive `flock` on `<path>/lock`, which the kernel
    releases when the holding process ends, however it ends: a lock left by
    a killed run (SIGKILL included) is free for the next run at once. The
    file records who holds it, for the message a second run gets.
    """
    if path in _held:
        _held[path][1] += 1
        return
    _make_folder(path)
    fd = _lock_file(path)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "argv": sys.argv,
    }
    data = json.dumps(holder).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:
        pass  # the lock holds without its description (e.g. a full disk)
    _held[path] = [fd, 1]


def _make_folder(path):
    """Creates the run directory; a file in its place is a usage error, not a disk error."""
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(
            f"Cannot use {path} as a run directory: it or a folder above it is a file. Use "
            "another --output_dir, or move the file away."
        ) from None
    except OSError as error:
        raise WriteError.wrap(error, os.path.join(path, _LOCK)) from error


def _lock_file(path):
    """Opens `<path>/lock` and takes its `flock`; returns the file descriptor.

    The last holder removes the file while it still holds the lock, so a
    process that opened the old file before that gets the lock of a file no
    longer in the folder: it notices (another inode, or none, under the
    name) and tries again with the new file.
    """
    lock_path = os.path.join(path, _LOCK)
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise WriteError.wrap(error, lock_path) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = None
            with contextlib.suppress(OSError, ValueError, RecursionError):
                holder = json.loads(os.pread(fd, 4096, 0) or b"null")
            os.close(fd)
            raise RunDirInUseError(
                f"The run directory {path} is in use by {_describe(holder)}. "
                "Wait for that run to finish or stop it, or use another --output_dir."
            ) from None
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            return fd
        os.close(fd)  # removed by the run that held it: lock the new file


def release(path):
    """Drops one hold; the last removes the lock file, then releases the lock."""
    entry = _held.get(path)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[path]
        with contextlib.suppress(OSError):
            os.remove(os.path.join(path, _LOCK))
        with contextlib.suppress(OSError):
            fcntl.flock(entry[0], fcntl.LOCK_UN)
        os.close(entry[0])
