"""Run directories: atomic files, checksums, and a guard on the config.

Every file is written to a temporary name in the same folder, flushed to
disk and renamed into place, so a killed process leaves either the old file
or the new one, never half of one. `progress.json` is the run's single
source of truth: it lists finished jobs with their results and the SHA-256
of every file they produced, and is itself replaced atomically, after the
files it names. Reading a file through `RunDir` checks its checksum, so a
truncated or corrupted file raises `CorruptRunError` instead of being used.

A run directory's files are untrusted input (directories are copied, synced
and downloaded with a paper's results), so every name is checked before it
is read, written or deleted: it must be relative and normalised, name a file
of a kind a run makes (`FILE_KINDS`), and resolve inside the directory (no
`..`, no symlink leading out). A name that fails raises `CorruptRunError`
and nothing is touched.
"""

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import socket
import sys
import time
import warnings

import numpy as np

from lth_keras._io import WriteError, atomic_write, render_to_bytes
from lth_keras._io import sha256_file as _sha256

__all__ = ["FILE_KINDS", "CorruptRunError", "RunDir", "RunDirInUseError", "WriteError"]

_JOB = r"[a-z][a-z0-9_]*-r\d{2,4}(-full)?"
#: The names of the files a run writes; no other name is read, written or deleted.
FILE_KINDS = re.compile(
    r"(config|progress|flags)\.json|metrics\.(csv|jsonl)|summary\.txt|ticket\.keras"
    r"|rewind\.ticket\.npz|tensorboard|plots/[a-z0-9_]+\.png|masks/round_\d{2,4}\.npz"
    r"|tickets/round_\d{2,4}\.ticket\.npz|records/" + _JOB + r"\.json"
    r"|state/round_\d{2,4}(\.weights\.h5|-snapshot\.npz)"
    r"|checkpoints/" + _JOB + r"(-p\d{4,6}(\.weights\.h5|-snapshot\.npz)|-start\.npz)"
)


class CorruptRunError(RuntimeError):
    """A file of a run directory is missing, truncated or altered."""


class RunDirInUseError(RuntimeError):
    """Another live process runs in this run directory."""


_LOCK = "lock"
_held = {}  # run directory -> [file descriptor, holders in this process]


def _describe(holder):
    if not isinstance(holder, dict):
        return "another process"
    command = " ".join(holder.get("argv", []))[:200]
    return (
        f"process {holder.get('pid')} on {holder.get('host')} (started "
        f"{holder.get('started')}{': ' + command if command else ''})"
    )


def _acquire(path):
    """Takes the run directory's lock for this process (re-entrant within it).

    The lock is an exclusive `flock` on `<path>/lock`, which the kernel
    releases when the holding process ends, however it ends: a lock left by
    a killed run (SIGKILL included) is free for the next run at once. The
    file records who holds it, for the message a second run gets.
    """
    if path in _held:
        _held[path][1] += 1
        return
    os.makedirs(path, exist_ok=True)
    lock_path = os.path.join(path, _LOCK)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise WriteError.wrap(error, lock_path) from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = None
        with contextlib.suppress(OSError, ValueError):
            holder = json.loads(os.pread(fd, 4096, 0) or b"null")
        os.close(fd)
        raise RunDirInUseError(
            f"The run directory {path} is in use by {_describe(holder)}. "
            "Wait for that run to finish or stop it, or use another --output_dir."
        ) from None
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


def _release(path):
    entry = _held.get(path)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[path]
        with contextlib.suppress(OSError):
            fcntl.flock(entry[0], fcntl.LOCK_UN)
        os.close(entry[0])


def _json_bytes(value):
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _warn_if_versions_changed(path, stored, extra):
    """Warns when a run resumes on other library versions than it started with."""
    current = (extra or {}).get("versions")
    if not stored or not current or stored == current:
        return
    changed = ", ".join(
        f"{k} {stored.get(k)} -> {current.get(k)}"
        for k in sorted(set(stored) | set(current))
        if stored.get(k) != current.get(k)
    )
    warnings.warn(
        f"The run in {path} was started with other versions ({changed}). Finished jobs keep "
        "their results; the jobs trained from here on may differ from those of an "
        "uninterrupted run (lth_keras 0.4.0 changed the order of the training stream).",
        stacklevel=4,
    )


class RunDir:
    """A run directory holding one experiment's config, files and progress.

    Args:
        path: The directory; created if missing.
        config: A JSON-ready dict describing the run. If the directory
            already holds a different config, nothing is written and
            `ValueError` is raised.
        extra: JSON-ready dict stored beside the config (library versions,
            ...), not compared; a run resumed with other `extra["versions"]`
            than it started with gets a warning. Defaults to `None`.
        write_to: For the non-chief workers of a multi-worker run: read the
            run from `path` but write every file under `write_to` instead
            (reads look there first), without taking the directory's lock
            (the chief holds it). Defaults to `None`.
        defaults: The config's default values: a key missing from a stored
            config counts as its default (so runs started before a field
            was added resume). Defaults to `None`.

    Raises:
        RunDirInUseError: If another live process holds the directory
            (its message names the process).
        ValueError: If the directory holds a run with a different config.
        CorruptRunError: If its `config.json` or `progress.json` is
            unreadable.

    Example:

    ```python
    run = RunDir("runs/lenet", config.to_dict())
    run.save_npz("masks/round_00.npz", masks)
    run.progress["done"]
    ```
    """

    def __init__(self, path, config, extra=None, write_to=None, defaults=None):
        self.path = os.path.abspath(path)
        self.write_path = os.path.abspath(write_to or path)
        self._locked = write_to is None  # workers of a multi-worker run only read it
        if self._locked:
            _acquire(self.path)
        try:
            self._open(config, extra, defaults or {})
        except BaseException:
            self.close()
            raise

    def close(self):
        """Releases the run directory's lock (also released when the process ends)."""
        if self._locked:
            self._locked = False
            _release(self.path)

    def _open(self, config, extra, defaults):
        config_path = os.path.join(self.path, "config.json")
        if os.path.exists(config_path):
            stored_file = self._read_json(config_path)
            stored = stored_file.get("config")
            if not isinstance(stored, dict):
                raise CorruptRunError(
                    f"{config_path} holds no run config. The run directory is damaged; "
                    "delete it to start over."
                )
            # A key the stored config lacks (a field added by a later
            # version) matches when the new config has its default value.
            stored = {**{k: v for k, v in defaults.items() if k in config}, **stored}
            if stored != config:
                changed = sorted(
                    k for k in set(stored) | set(config) if stored.get(k) != config.get(k)
                )
                raise ValueError(
                    f"The run directory {self.path} holds a run with a different config "
                    f"(differences in: {changed}). Use another directory, or delete this "
                    "one to start over."
                )
            _warn_if_versions_changed(self.path, stored_file.get("versions"), extra)
        else:
            self.write_json("config.json", {"config": config, **(extra or {})})
        progress_path = os.path.join(self.path, "progress.json")
        self.progress = (
            self._read_json(progress_path)
            if os.path.exists(progress_path)
            else {"done": {}, "files": {}}
        )
        self._check_progress(progress_path)

    def _check_progress(self, progress_path):
        """Refuses a `progress.json` whose layout or recorded file names are not a run's."""
        progress = self.progress
        files = progress.get("files") if isinstance(progress, dict) else None
        done = progress.get("done") if isinstance(progress, dict) else None
        if not isinstance(files, dict) or not isinstance(done, dict):
            raise CorruptRunError(
                f"{progress_path} is damaged: expected a mapping with the mappings 'done' and "
                f"'files', found {_shape(progress)}. Delete the run directory to start over."
            )
        for name in _recorded_names(progress):
            self.file(name)
        for name, digest in files.items():
            if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
                raise CorruptRunError(
                    f"{progress_path} is damaged: the checksum recorded for {name!r} is not a "
                    f"SHA-256 (received {digest!r}). Delete the run directory to start over."
                )

    def file(self, name):
        """Absolute path of `name`: where it is written (and read first).

        Raises:
            CorruptRunError: If `name` is not the name of a run file inside
                the directory (see the module docstring).
        """
        return _inside(self.write_path, name)

    def _readable(self, name):
        written = self.file(name)
        return written if os.path.lexists(written) else _inside(self.path, name)

    @staticmethod
    def _read_json(path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as error:
            raise CorruptRunError(
                f"Cannot read {path}: {error}. The run directory is damaged; "
                "delete it (or the file) to start over."
            ) from error

    # Writing ---------------------------------------------------------------

    def write_bytes(self, name, data):
        """Writes a file atomically and returns its SHA-256."""
        atomic_write(self.file(name), data)
        return hashlib.sha256(data).hexdigest()

    def write_json(self, name, value):
        """Writes JSON atomically and returns its SHA-256."""
        return self.write_bytes(name, _json_bytes(value))

    def save_npz(self, name, arrays, compress=True):
        """Writes a dict of arrays as an `.npz`; returns its SHA-256.

        Compression pays for masks (booleans); float weights barely compress,
        so checkpoints pass `compress=False`.
        """
        buffer = io.BytesIO()
        (np.savez_compressed if compress else np.savez)(buffer, **arrays)
        return self.write_bytes(name, buffer.getvalue())

    def save_with(self, name, save):
        """Calls `save(path)` and writes what it wrote to `name` atomically.

        For writers that need a path (e.g. `model.save_weights`): they write
        to a memory-backed scratch file named like `name` (see
        `lth_keras._io.render_to_bytes`), and the bytes go to the run
        directory with `write_bytes`.

        Returns:
            The SHA-256 of the written file.

        Raises:
            WriteError: If the file cannot be written.
        """
        base = os.path.basename(name)
        return self.write_bytes(name, render_to_bytes(save, base))

    def commit(self, done=None, files=None, **replace):
        """Records progress and writes `progress.json` atomically.

        Call it after the files it names are written, so the record never
        points at a file that is not complete.

        Args:
            done: Dict of finished jobs to add (`job -> result row`).
            files: Dict of files to add (`name -> SHA-256`).
            **replace: Top-level entries to set (or remove, with `None`).

        Example:

        ```python
        run.commit(done={"ticket-r00": row}, files={"masks/round_00.npz": sha})
        ```
        """
        progress = {
            **self.progress,
            "done": {**self.progress["done"], **(done or {})},
            "files": {**self.progress["files"], **(files or {})},
        }
        for key, value in replace.items():
            if value is None:
                progress.pop(key, None)
            else:
                progress[key] = value
        self.write_json("progress.json", progress)
        self.progress = progress  # only once it is on disk

    # Reading ---------------------------------------------------------------

    def verified(self, name, digest=None):
        """Path of `name` after checking its SHA-256 against the record.

        Args:
            name: File name inside the run directory.
            digest: Expected SHA-256. Defaults to `None`, meaning the one
                `progress["files"]` records.

        Returns:
            The absolute path.

        Raises:
            CorruptRunError: If the file is missing, has no recorded
                checksum, or its content differs.
        """
        path = self._readable(name)
        digest = digest or self.progress["files"].get(name)
        if digest is None or not os.path.exists(path):
            raise CorruptRunError(
                f"{path} is missing or was never recorded as complete. The run directory "
                "is damaged; delete it to start over."
            )
        actual = _sha256(path)
        if actual != digest:
            raise CorruptRunError(
                f"{path} is corrupted: its SHA-256 is {actual[:12]}..., the run recorded "
                f"{digest[:12]}.... Delete the run directory (or restore the file) to go on."
            )
        return path

    def load_npz(self, name, digest=None):
        """Loads a verified `.npz` into a dict of arrays."""
        with np.load(self.verified(name, digest), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def remove(self, *names):
        """Deletes superseded files and forgets their checksums (at the next commit).

        Raises:
            CorruptRunError: If a name is not that of a run file inside the
                directory; nothing is deleted then.
        """
        paths = [self.file(name) for name in names]  # every name checked first
        for name, path in zip(names, paths, strict=True):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            self.progress["files"].pop(name, None)


def _recorded_names(progress):
    """Every file name `progress.json` records: its `files`, and those of its entries.

    Entries such as the checkpoint, the round end and a job's start name
    their files under `"files"` (a mapping from name) or `"file"` (a name).
    """
    for key, value in progress.items():
        if key == "files" and isinstance(value, dict):
            yield from value
        elif key == "file":
            yield value
        elif isinstance(value, dict) and key != "done":
            yield from _recorded_names(value)


def _shape(value):
    """A short description of a JSON value's type, for error messages."""
    if isinstance(value, dict):
        return f"a mapping with keys {sorted(value)[:6]}"
    return f"a {type(value).__name__}"


def _inside(root, name):
    """`root/name` after checking that `name` is a run file's name that stays inside `root`."""
    if (
        not isinstance(name, str)
        or os.path.isabs(name)
        or "\\" in name
        or os.path.normpath(name) != name
        or not FILE_KINDS.fullmatch(name)
    ):
        raise CorruptRunError(
            f"The run directory {root} names a file {name!r}, which is not a file a run "
            "writes (relative, inside the directory, of a known kind). The run directory "
            "is damaged or was crafted; nothing was read or deleted. Delete it to start over."
        )
    path = os.path.join(root, name)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise CorruptRunError(
            f"{path} leads outside the run directory {root} (a symbolic link); nothing was "
            "read or deleted. The run directory is damaged or was crafted: delete it to "
            "start over."
        )
    return path
