"""Run directories: atomic files, checksums, and a guard on the config.

Every file is written to a temporary name in the same folder, flushed to
disk and renamed into place, so a killed process leaves either the old file
or the new one, never half of one. `progress.json` is the run's single
source of truth: it lists finished jobs with their results and the SHA-256
of every file they produced, and is itself replaced atomically, after the
files it names. Reading a file through `RunDir` checks its checksum, so a
truncated or corrupted file raises `CorruptRunError` instead of being used.
"""

import contextlib
import hashlib
import io
import json
import os

import numpy as np

from lth_keras._io import atomic_write
from lth_keras._io import sha256_file as _sha256

__all__ = ["CorruptRunError", "RunDir"]


class CorruptRunError(RuntimeError):
    """A file of a run directory is missing, truncated or altered."""


def _json_bytes(value):
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


class RunDir:
    """A run directory holding one experiment's config, files and progress.

    Args:
        path: The directory; created if missing.
        config: A JSON-ready dict describing the run. If the directory
            already holds a different config, nothing is written and
            `ValueError` is raised.
        extra: JSON-ready dict stored beside the config (library versions,
            ...), not compared. Defaults to `None`.
        write_to: For the non-chief workers of a multi-worker run: read the
            run from `path` but write every file under `write_to` instead
            (reads look there first). Defaults to `None`.

    Raises:
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

    def __init__(self, path, config, extra=None, write_to=None):
        self.path = os.path.abspath(path)
        self.write_path = os.path.abspath(write_to or path)
        config_path = os.path.join(self.path, "config.json")
        if os.path.exists(config_path):
            stored = self._read_json(config_path).get("config")
            if not isinstance(stored, dict):
                raise CorruptRunError(
                    f"{config_path} holds no run config. The run directory is damaged; "
                    "delete it to start over."
                )
            if stored != config:
                changed = sorted(
                    k for k in set(stored) | set(config) if stored.get(k) != config.get(k)
                )
                raise ValueError(
                    f"The run directory {self.path} holds a run with a different config "
                    f"(differences in: {changed}). Use another directory, or delete this "
                    "one to start over."
                )
        else:
            self.write_json("config.json", {"config": config, **(extra or {})})
        progress_path = os.path.join(self.path, "progress.json")
        self.progress = (
            self._read_json(progress_path)
            if os.path.exists(progress_path)
            else {"done": {}, "files": {}}
        )

    def file(self, name):
        """Absolute path of `name`: where it is written (and read first)."""
        return os.path.join(self.write_path, name)

    def _readable(self, name):
        written = self.file(name)
        return written if os.path.exists(written) else os.path.join(self.path, name)

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
        """Calls `save(tmp_path)` and renames the result to `name` atomically.

        For writers that need a path (e.g. `model.save_weights`). The
        temporary path keeps the extension of `name`.

        Returns:
            The SHA-256 of the written file.
        """
        target = self.file(name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        base, ext = os.path.splitext(os.path.basename(name))
        if name.endswith(".weights.h5"):
            ext = ".weights.h5"
        tmp = os.path.join(os.path.dirname(target), f".tmp-{os.getpid()}-{base}{ext}")
        try:
            save(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            digest = _sha256(tmp)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise
        return digest

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
        """Deletes superseded files and forgets their checksums (at the next commit)."""
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.file(name))
            self.progress["files"].pop(name, None)
