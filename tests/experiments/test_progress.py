"""Live progress lines of a job."""

import io

import pytest

from lth_keras.experiments import progress as progress_lib
from lth_keras.experiments.presets import preset
from lth_keras.experiments.progress import Progress, RunProgress, format_seconds, job_name


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
    assert text.count("\r") == 5  # "starting", two updates, then the line is cleared (\r...\r)
    assert text.endswith("\r") and text.rstrip("\r").endswith(" ")


class Clock:
    """A `time.perf_counter` the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_lib.time, "perf_counter", clock)
    return clock


CONFIG = preset("lenet", rounds=2, iterations=2000, eval_every=500, controls=("reinit",))


def test_job_name():
    assert job_name("reinit", 3) == "reinit-r03"


@pytest.mark.parametrize(
    "progress, tail",
    [
        ({"done": {}, "files": {}}, "; a new run"),
        (
            {"done": {"ticket-r00": {}, "ticket-r01": {}}, "files": {}},
            "; resuming: 2 of 5 jobs done",
        ),
        (
            {
                "done": {"ticket-r00": {}, "ticket-r01": {}},
                "files": {},
                "checkpoint": {"job": "reinit-r01", "period": 2},
            },
            "; resuming: 2 of 5 jobs done, reinit round 1 from its checkpoint at iteration 1,000",
        ),
        (
            {"done": {"ticket-r00": {}}, "checkpoint": {"job": "ticket-r01", "period": 3}},
            "; resuming: 1 of 5 jobs done, ticket round 1 from its checkpoint at iteration 1,500",
        ),
        (
            {
                "done": {
                    job: {}
                    for job in (
                        "ticket-r00",
                        "ticket-r01",
                        "reinit-r01",
                        "ticket-r02",
                        "reinit-r02",
                    )
                }
            },
            "; finished already (5 of 5 jobs), reporting",
        ),
    ],
    ids=["new", "resumed", "resumed-checkpoint", "resumed-ticket", "finished"],
)
def test_first_line_says_what_runs_where_and_from_where(progress, tail):
    line = RunProgress(CONFIG, "runs/x", progress).first_line()
    assert line == (
        "lenet on mnist: 5 jobs (2 pruning rounds, controls reinit) of up to 2,000 iterations; "
        "run directory runs/x" + tail
    )


def test_first_line_of_one_round_without_controls():
    config = preset("lenet", rounds=1, iterations=3000, eval_every=1000)
    assert RunProgress(config, "d", {"done": {}}).first_line() == (
        "lenet on mnist: 2 jobs (1 pruning round) of up to 3,000 iterations; run directory d; "
        "a new run"
    )


def test_positions_count_jobs_of_the_whole_run():
    run = RunProgress(CONFIG, "d", {"done": {}})
    assert [run.position(job) for job in run.jobs] == [f"job {k} of 5" for k in range(1, 6)]
    assert run.position("ticket-r01-full") == "job 2 of 5"  # an early-bird evaluation round


def test_run_eta_is_the_iterations_left_at_this_process_speed(clock):
    run = RunProgress(CONFIG, "d", {"done": {"ticket-r00": {}}})
    assert run.eta("ticket-r01", 0, 2000) is None  # nothing timed yet
    run.begin_job()
    clock.now += 10.0  # 500 iterations in 10 s: 0.02 s per iteration
    # 1,500 left in this job, 2,000 in each of reinit-r01, ticket-r02, reinit-r02.
    assert run.eta("ticket-r01", 500, 1500) == pytest.approx(0.02 * 7500)
    clock.now += 30.0
    run.end_job("ticket-r01", 2000)  # 2,000 iterations in 40 s
    run.begin_job()  # the clock keeps running from the first job
    assert run.eta("reinit-r01", 0, 2000) == pytest.approx(0.02 * 6000)


def test_late_resetting_jobs_count_from_the_rewind_iteration(clock):
    run = RunProgress(CONFIG.replace(rewind_iteration=500), "d", {"done": {}})
    run.begin_job()
    clock.now += 1.0  # 100 iterations: 0.01 s each
    # Rewinding tickets train 1,500 iterations from round 1 on; reinit starts at 0.
    left = 1900 + 1500 + 2000 + 1500 + 2000
    assert run.eta("ticket-r00", 100, 1900) == pytest.approx(0.01 * left)


def test_closing_line_gives_the_wall_time_and_where_results_are(clock):
    run = RunProgress(CONFIG, "runs/x", {"done": {"ticket-r00": {}}})
    clock.now += 125.0
    assert run.closing_line() == (
        "finished 5 jobs in 2:05 (1 finished before this run); "
        "results in runs/x (metrics.csv, summary.txt, plots/)"
    )
    fresh = RunProgress(CONFIG, "runs/x", {"done": {}})
    assert fresh.closing_line().startswith("finished 5 jobs in 0:00; results in runs/x")


def test_job_lines_carry_the_position_and_the_run_eta(clock):
    run = RunProgress(CONFIG, "d", {"done": {}})
    out = io.StringIO()
    progress = Progress(
        "ticket round 0", 2000, 0, 500, stream=out, tty=False, run=(run, "ticket-r00")
    )
    progress.on_train_begin()
    clock.now += 5.0
    progress.on_epoch_end(0, {"val_accuracy": 0.9})
    progress.on_train_end()
    assert out.getvalue() == (
        "job 1 of 5 | ticket round 0 |  500/2000 it | val acc 0.9000 | 0:05 elapsed | ETA 0:15 "
        "| run ETA 1:35\n"  # 0.01 s per iteration, 9,500 iterations left
    )
    assert progress.trained == 500


def test_terminal_line_shows_the_job_at_once():
    run = RunProgress(CONFIG, "d", {"done": {}})
    out = io.StringIO()
    progress = Progress(
        "reinit round 1", 2000, 1000, 500, stream=out, tty=True, run=(run, "reinit-r01")
    )
    progress.on_train_begin()
    assert out.getvalue() == "\rjob 3 of 5 | reinit round 1 | 1000/2000 it | starting"
