"""Live progress lines of a job."""

import io

import pytest

from lth_keras.experiments.progress import Progress, format_seconds


@pytest.mark.parametrize(
    "seconds, text", [(0, "0:00"), (59.6, "1:00"), (125, "2:05"), (3725, "1:02:05")]
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def _run(progress, epochs, start_epoch=0):
    progress.on_train_begin()
    for epoch in range(start_epoch, epochs):
        progress.on_epoch_end(epoch, {"val_accuracy": 0.5 + epoch / 100})
    progress.on_train_end()


def test_a_line_per_evaluation_when_not_a_terminal():
    out = io.StringIO()
    _run(Progress("ticket round 1", 3000, 1000, 1000, stream=out, tty=False), 3, start_epoch=1)
    lines = out.getvalue().splitlines()
    assert [line.split(" | ")[:3] for line in lines] == [
        ["ticket round 1", "2000/3000 it", "val acc 0.5100"],
        ["ticket round 1", "3000/3000 it", "val acc 0.5200"],
    ]
    assert lines[0].split(" | ")[3].endswith("elapsed") and lines[0].split(" | ")[4].startswith(
        "ETA "
    )
    assert lines[-1].endswith("ETA 0:00")


def test_one_updating_line_on_a_terminal():
    out = io.StringIO()
    _run(Progress("reinit round 2", 2000, 0, 1000, stream=out, tty=True), 2)
    text = out.getvalue()
    assert "\n" not in text
    assert text.count("\r") == 4  # two updates, then the line is cleared (\r...\r)
    assert text.endswith("\r") and text.rstrip("\r").endswith(" ")
