"""A persistent cache of XLA-compiled programs, across processes.

Every process that trains with `jit_compile=True` compiles its train and
evaluation steps again: about 1.4 s of CPU time for LeNet-300-100 on this
project's 2-core machine, a third of the time from the start of an example
script to its first training step. TensorFlow can keep the compiled programs
on disk (`TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=...`) and load them
in the next process whose program is the same; `enable_compile_cache()` sets
that up. A cached program is the very machine code XLA would compile again,
so the numbers do not change (tested).

TensorFlow reads `TF_XLA_FLAGS` once, at the first XLA compilation of the
process: call it before anything is compiled. The folder's name holds the
TensorFlow version and a digest of the CPU's model and features, so a cache
shared by several machines (a network home folder) never hands one a program
compiled for another CPU.
"""

import hashlib
import os
import platform

import tensorflow as tf

from lth_keras._io import cache_folder

__all__ = ["enable_compile_cache"]

_FLAG = "--tf_xla_persistent_cache_directory"


def _cpu_digest():
    """A digest of what a compiled CPU program depends on: machine, model, features."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            lines = [
                line
                for line in f.read().splitlines()
                if line.startswith(("model name", "flags", "Features"))
            ]
        text += "\n".join(sorted(set(lines)))
    except OSError:
        text += platform.processor()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def enable_compile_cache(folder=None):
    """Keeps XLA-compiled programs on disk so later processes skip compiling them.

    Sets `TF_XLA_FLAGS` (keeping any other flags in it) unless it already
    names a cache folder, which is then left as the user set it.

    Args:
        folder: The cache folder. Defaults to `None`, meaning
            `$LTH_KERAS_CACHE/xla/tf<version>-<CPU digest>` (see
            `lth_keras._io.cache_folder`).

    Returns:
        The folder in use.

    Raises:
        ValueError: If `folder` is not a non-empty string without spaces
            (`TF_XLA_FLAGS` is split at spaces).

    Example:

    ```python
    from lth_keras.tensorflow.compile_cache import enable_compile_cache

    enable_compile_cache()  # first thing in a script, before any training
    ```
    """
    flags = os.environ.get("TF_XLA_FLAGS", "")
    for token in flags.split():
        if token.startswith(_FLAG + "="):
            return token.split("=", 1)[1]
    if folder is None:
        folder = os.path.join(cache_folder(), "xla", f"tf{tf.__version__}-{_cpu_digest()}")
    if not isinstance(folder, str) or not folder or any(c.isspace() for c in folder):
        raise ValueError(
            "Received an invalid value for `folder`, expected a path without spaces "
            f"(TF_XLA_FLAGS is split at spaces). Received: folder={folder!r}"
        )
    os.makedirs(folder, exist_ok=True)
    os.environ["TF_XLA_FLAGS"] = f"{flags} {_FLAG}={folder}".strip()
    return folder
