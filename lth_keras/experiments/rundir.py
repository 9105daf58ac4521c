"""Run directories: atomic files, checksums, and a guard on the config.

Every file is written to a temporary name in the same folder, flushed to
disk and renamed into place, so a killed process leaves either the old file
or the new one, never half of one. `progress.json` is the run's single
source of truth: it lists finished jobs with their results and the SHA-256
of every file they produced, and is itself replaced atomically, after the
files it names. Reading a file through `RunDir` checks its checksum, so a
truncated or corrupted file raises `CorruptRunError` instead of being used.

Opening a run directory validates `config.json` (its layout here, its
fields through `check`) and the layout of `progress.json`;
`damaged_files()` lists every recorded file that is missing or differs from
its checksum (see `lth_keras.experiments.verify`). The lock file exists while
a run holds the directory and is removed when it ends; `discard()` removes
what a run that failed before recording any progress wrote, so a failed start
leaves nothing behind.

A run directory's files are untrusted input (directories are copied, synced
and downloaded with a paper's results), so every name is checked before it
is read, written or deleted: it must be relative and normalised, name a file
of a kind a run makes (`FILE_KINDS`), and resolve inside the directory (no
`..`, no symlink leading out). A name that fails raises `CorruptRunError`
and nothing is touched.
"""

import contextlib
import hashlib
import io
import json
import os
import re
import warnings
import zipfile
import zlib

import numpy as np

from lth_keras._io import WriteError, atomic_write, render_to_bytes
from lth_keras._io import sha256_file as _sha256
from lth_keras._npz import read_npz
from lth_keras.experiments.runlock import RunDirInUseError, acquire, release

__all__ = [
    "FILE_KINDS",
    "CorruptRunError",
    "RunDir",
    "RunDirInUseError",
    "WriteError",
    "describe",
    "recorded_files",
]

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
        check: `check(stored_config)` raises `ValueError` if the config in
            `config.json` is not a valid config (e.g. edited by hand); the
            message names the field. Defaults to `None` (no check).

    Raises:
        RunDirInUseError: If another live process holds the directory
            (its message names the process).
        ValueError: If the directory holds a run with a different config,
            or `path` is a file.
        CorruptRunError: If its `config.json` or `progress.json` is
            unreadable or malformed (the message names the file and field).

    Example:

    ```python
    run = RunDir("runs/lenet", config.to_dict())
    run.save_npz("masks/round_00.npz", masks)
    run.progress["done"]
    ```
    """

    def __init__(self, path, config, extra=None, write_to=None, defaults=None, check=None):
        self.path = os.path.abspath(path)
        self.write_path = os.path.abspath(write_to or path)
        self._locked = write_to is None  # workers of a multi-worker run only read it
        self.created = not os.path.lexists(self.path)  # this process made the folder
        self.fresh = False  # this process wrote config.json: the run starts here
        self._digests = {}  # name -> (SHA-256, stat) of files checked by this process
        if self._locked:
            acquire(self.path)
        try:
            self._open(config, extra, defaults or {}, check)
        except BaseException:
            self.close()
            raise

    def close(self):
        """Releases the run directory's lock (also released when the process ends)."""
        if self._locked:
            self._locked = False
            release(self.path)

    def _open(self, config, extra, defaults, check):
        config_path = os.path.join(self.path, "config.json")
        if os.path.exists(config_path):
            stored_file = self._read_json(config_path)
            stored = _check_config_file(config_path, stored_file, check)
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
            self.fresh = True
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
                f"'files', found {describe(progress)}. Delete the run directory to start over."
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
        except (OSError, ValueError, RecursionError) as error:
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

    def commit(self, done=None, files=None, forget=(), **replace):
        """Records progress and writes `progress.json` atomically.

        Call it after the files it names are written, so the record never
        points at a file that is not complete; and before deleting the files
        it supersedes (`forget`), so it never points at a deleted one.

        Args:
            done: Dict of finished jobs to add (`job -> result row`).
            files: Dict of files to add (`name -> SHA-256`).
            forget: Names of files no longer part of the run, dropped from
                the record (delete them with `remove` after the commit).
                Defaults to `()`.
            **replace: Top-level entries to set (or remove, with `None`).

        Example:

        ```python
        run.commit(done={"ticket-r00": row}, files={"masks/round_00.npz": sha})
        ```
        """
        kept = {k: v for k, v in self.progress["files"].items() if k not in set(forget)}
        progress = {
            **self.progress,
            "done": {**self.progress["done"], **(done or {})},
            "files": {**kept, **(files or {})},
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
        actual = self._sha256(name, path)
        if actual != digest:
            raise CorruptRunError(
                f"{path} is corrupted: its SHA-256 is {actual[:12]}..., the run recorded "
                f"{digest[:12]}.... Delete the run directory (or restore the file) to go on."
            )
        return path

    def _sha256(self, name, path):
        """The file's SHA-256, computed once per process while the file is unchanged."""
        stat = os.stat(path)
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        known = self._digests.get(name)
        if known is None or known[1] != key:
            known = self._digests[name] = (_sha256(path), key)
        return known[0]

    def damaged_files(self):
        """Every recorded file that is missing or differs from its recorded SHA-256.

        The files are those of `progress["files"]` and of the entries that
        record their own (the unfinished job's checkpoint).

        Returns:
            `{name: "missing"}` or `{name: "altered or truncated"}`, in name order.
        """
        damaged = {}
        for name, digest in sorted(recorded_files(self.progress).items()):
            path = self._readable(name)
            if not os.path.isfile(path):
                damaged[name] = "missing"
            elif self._sha256(name, path) != digest:
                damaged[name] = "altered or truncated"
        return damaged

    def discard(self):
        """Removes what this process wrote to a run it started, when nothing was recorded.

        For a run that fails before its first job is done or checkpointed:
        its `config.json`, `flags.json`, `progress.json` and recorded files
        go, and the folder too if this process created it and nothing else
        is in it, so that a corrected command starts afresh. A run that did
        not start here (`fresh` is false) is left as it is.

        Returns:
            Whether anything was removed.
        """
        progress = self.progress if hasattr(self, "progress") else {"done": {}}
        recorded = progress.get("done") or progress.get("checkpoint") or progress.get("fused")
        if not self.fresh or recorded:
            return False
        names = ["config.json", "flags.json", "progress.json", *recorded_files(progress)]
        for name in names:
            with contextlib.suppress(OSError):  # best effort: the run's own error matters
                os.remove(self.file(name))
        for folder in sorted({n.split("/")[0] for n in names if "/" in n}):
            with contextlib.suppress(OSError):  # only if empty
                os.rmdir(os.path.join(self.write_path, folder))
        self.fresh = False
        self.close()
        if self.created:
            with contextlib.suppress(OSError):
                os.rmdir(self.path)
        return True

    def load_npz(self, name, digest=None):
        """Loads a verified `.npz` into a dict of arrays (memory bounded by the file's size)."""
        path = self.verified(name, digest)
        try:
            return read_npz(path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise CorruptRunError(
                f"{path} is not a readable array file ({error}). The run directory is damaged "
                "or was crafted; delete it to start over."
            ) from error

    def remove(self, *names):
        """Deletes superseded files and forgets their checksums (at the next commit).

        Forget them in the commit that supersedes them (`commit(forget=...)`)
        first: a process killed between the two then leaves a stray file,
        never a record of a deleted one.

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


def recorded_files(progress):
    """`{name: SHA-256}` of every file `progress.json` records.

    Those of its `files`, and of its entries that record their own (the
    unfinished jobs' checkpoints, `checkpoint` and those of the slots of
    `fused`; the round end's are in `files` too).
    """
    files = dict(progress.get("files") or {})
    entries = [value for key, value in progress.items() if key not in ("files", "done", "fused")]
    fused = progress.get("fused")
    for slot in fused.values() if isinstance(fused, dict) else ():
        entries.append(slot.get("checkpoint") if isinstance(slot, dict) else None)
    for value in entries:
        if isinstance(value, dict):
            entry = value.get("files")
            for name, digest in entry.items() if isinstance(entry, dict) else ():
                files.setdefault(name, digest)
    return files


def _check_config_file(path, stored, check):
    """The run config `config.json` holds, after checking the file's fields."""
    problem = None
    config = stored.get("config") if isinstance(stored, dict) else None
    versions = stored.get("versions", {}) if isinstance(stored, dict) else {}
    if not isinstance(stored, dict):
        problem = f"expected a mapping, found {describe(stored)}"
    elif not isinstance(config, dict):
        problem = f"field `config` holds no run config (found {describe(config)})"
    elif not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
        problem = (
            f"field `versions`: expected a mapping of names to strings, found {describe(versions)}"
        )
    elif not isinstance(stored.get("hash", ""), str):
        problem = f"field `hash`: expected a string, found {describe(stored['hash'])}"
    elif check is not None:
        try:
            check(config)
        except ValueError as error:
            problem = f"field `config`: {error}"
    if problem:
        raise CorruptRunError(
            f"{path} is damaged: {problem}. Restore the file (or undo the edit), or delete the "
            "run directory to start over."
        )
    return config


def describe(value):
    """A short description of a JSON value, for error messages: `'a list'`, `"the string 'x'"`."""
    if isinstance(value, dict):
        return f"a mapping with keys {sorted(map(str, value))[:6]}"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, bool):
        return f"the boolean {value}"
    return f"the {type(value).__name__} {value!r:.40}"


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
