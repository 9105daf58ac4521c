"""TensorBoard logs of experiments (TensorFlow only).

`<logdir>/<kind>/round_XX` holds the training curves of one job (loss and
accuracies against the iteration); `<logdir>/summary` holds one point per
round: weights remaining, test accuracy at early stopping and at the end,
the early-stopping iteration, the training steps spent to find the mask
(`mask_iterations`), the early-bird iteration and distance where recorded,
and the sparsity (fraction pruned) of every kernel under `sparsity/`.
"""

import errno
import os

import tensorflow as tf

from lth_keras._io import WriteError

__all__ = ["write_job"]


def write_job(logdir, row, records):
    """Writes one finished job (a ticket round or a control) to TensorBoard.

    TensorBoard event files are appended to, not replaced; a write that
    fails (a full disk) raises `lth_keras._io.WriteError`.

    Args:
        logdir: The TensorBoard folder of the run.
        row: The job's result row (see `lth_keras.experiments.report`).
        records: The job's evaluation records (see `EvalRecorder`).

    Example:

    ```python
    write_job("runs/lenet/tensorboard", row, records)
    ```
    """
    try:
        _write(logdir, row, records)
    except (tf.errors.OpError, OSError) as error:
        message = getattr(error, "message", None) or str(error)
        space = "space" in message.lower()
        code = errno.ENOSPC if space else errno.EIO
        raise WriteError.wrap(OSError(code, message), os.path.join(logdir, "events")) from error


def _write(logdir, row, records):
    kind, round_ = row["kind"], int(row["round"])
    curves = tf.summary.create_file_writer(os.path.join(logdir, kind, f"round_{round_:02d}"))
    with curves.as_default():
        for record in records:
            for key, value in record.items():
                if key != "iteration":
                    tf.summary.scalar(key, value, step=record["iteration"])
    curves.close()
    summary = tf.summary.create_file_writer(os.path.join(logdir, "summary"))
    with summary.as_default():
        prefix = "" if kind == "ticket" else f"{kind}/"
        for key in (
            "weights_remaining",
            "test_accuracy_es",
            "test_accuracy_final",
            "es_iteration",
            "train_accuracy",
        ):
            tf.summary.scalar(prefix + key, row[key], step=round_)
        for key in ("mask_iterations", "early_bird_iteration", "early_bird_distance"):
            if row.get(key) is not None:
                tf.summary.scalar(prefix + key, row[key], step=round_)
        for key, value in row.items():
            if key.startswith("overlap@"):
                tf.summary.scalar(prefix + key.replace("@", "_p"), value, step=round_)
        if kind == "ticket":
            for kernel, fraction in row["layers"].items():
                tf.summary.scalar(f"sparsity/{kernel}", 1.0 - fraction, step=round_)
    summary.close()
