"""Live progress of a training job: iterations, validation accuracy, elapsed time, ETA.

On a terminal the line updates in place after every evaluation; otherwise
(a log file, a pipe) a line is written per evaluation. Nothing happens
between evaluations, so training is not slowed: the callback only overrides
`on_epoch_end` (one epoch is one evaluation period in the runner), and Keras
keeps dispatching batches asynchronously.
"""

import sys
import time

import keras

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds):
    """`h:mm:ss` or `m:ss`.

    Example:

    ```python
    format_seconds(3725)  # '1:02:05'
    ```
    """
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress(keras.callbacks.Callback):
    """Reports a job's progress after every evaluation period.

    Args:
        label: What is training, e.g. `"ticket round 3 (51.2%)"`.
        total: The iteration the job ends at.
        start: The iteration it starts (or resumes) at.
        eval_every: Iterations per period (one Keras epoch).
        stream: Where to write. Defaults to `None`, meaning `sys.stdout`.
        tty: Whether `stream` is a terminal. Defaults to `None`, meaning
            `stream.isatty()`.

    Example:

    ```python
    model.fit(..., steps_per_epoch=1000, callbacks=[Progress("ticket round 1", 5000, 0, 1000)])
    ```
    """

    def __init__(self, label, total, start, eval_every, stream=None, tty=None):
        super().__init__()
        self.label = label
        self.total = total
        self.start = start
        self.eval_every = eval_every
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self._began = None
        self._width = 0

    def on_train_begin(self, logs=None):
        self._began = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        iteration = (epoch + 1) * self.eval_every
        elapsed = time.perf_counter() - self._began
        done = iteration - self.start
        eta = elapsed / done * (self.total - iteration) if done > 0 else 0.0
        accuracy = logs.get("val_accuracy")
        parts = [
            self.label,
            f"{iteration:>{len(str(self.total))}}/{self.total} it",
            "val acc " + (f"{float(accuracy):.4f}" if accuracy is not None else "-"),
            f"{format_seconds(elapsed)} elapsed",
            f"ETA {format_seconds(eta)}",
        ]
        line = " | ".join(parts)
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def on_train_end(self, logs=None):
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
