"""Keeps TensorFlow's C++ log lines off the terminal of the example scripts.

Import it before anything that loads TensorFlow. TensorFlow 2.21 writes its
start-up lines ("oneDNN custom operations are on", "Could not find cuda
drivers", ...) from C++ straight to file descriptor 2, before
`TF_CPP_MIN_LOG_LEVEL` is read, so they can only be filtered there: standard
error goes through a pipe whose reader drops C++ log lines (`I0000 ...`,
`W0000 ...`, `E0000 ...`) and forwards everything else at once, Python
tracebacks and our own messages included. `--tf_logs` on the command line
leaves standard error alone.
"""

import atexit
import os
import re
import sys
import threading

_CPP_LOG = re.compile(
    rb"^(?:[IWE]\d{4} [\d:.]+ +\d+ [^ ]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog)"
)


def _forward(read_fd, out_fd):
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = re.split(rb"(?<=[\n\r])", pending)
        kept = b"".join(line for line in lines if not _CPP_LOG.match(line))
        if kept:
            os.write(out_fd, kept)
    if pending and not _CPP_LOG.match(pending):
        os.write(out_fd, pending)
    os.close(read_fd)


def _install():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    read_fd, write_fd = os.pipe()
    terminal = os.dup(2)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_forward, args=(read_fd, terminal), daemon=True)
    thread.start()

    def restore():
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes the pipe's last write end: the reader sees EOF
        thread.join(timeout=5)

    atexit.register(restore)


if "--tf_logs" not in sys.argv:
    _install()
