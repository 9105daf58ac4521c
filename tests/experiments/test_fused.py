"""Fused training: networks trained together equal networks trained alone, run for run."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from helpers import MNIST_DIR, pythonpath

import lth_keras
from lth_keras import masks as masks_lib
from lth_keras.experiments import fused as fused_lib
from lth_keras.experiments import runner, trials
from lth_keras.experiments.models import lenet_300_100
from lth_keras.experiments.presets import preset

TINY = dict(
    rounds=1,
    iterations=40,
    eval_every=20,
    train_examples=600,
    validation_examples=300,
    test_examples=300,
    controls=("reinit",),
    trials=2,
    width=0.2,
)


def _lenet(seed, steps_per_execution=5):
    keras.utils.set_random_seed(seed)
    model = lth_keras.prunable(lenet_300_100(width=0.1))
    masks = lth_keras.get_masks(model)
    rng = np.random.default_rng(seed)
    lth_keras.set_masks(model, {k: rng.random(m.shape) < 0.5 for k, m in masks.items()})
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
        steps_per_execution=steps_per_execution,
    )
    return model


@pytest.fixture
def batches():
    rng = np.random.default_rng(0)
    xs = [rng.random((1200, 28, 28, 1), dtype=np.float32) for _ in range(3)]
    ys = [rng.integers(0, 10, 1200) for _ in range(3)]
    return xs, ys, rng.random((130, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 130)


def test_networks_trained_fused_equal_networks_trained_alone(batches):
    xs, ys, x_val, y_val = batches
    alone = []
    for i in range(3):
        model = _lenet(i)
        history = model.fit(
            xs[i],
            ys[i],
            batch_size=60,
            epochs=2,
            steps_per_epoch=10,
            shuffle=False,
            validation_data=(x_val, y_val),
            verbose=0,
        )
        alone.append((model.get_weights(), history.history))
    members = [_lenet(i) for i in range(3)]
    fused = fused_lib.FusedModel(members)
    fused.compile_members(jit_compile=True, steps_per_execution=5)
    history = fused.fit(
        xs,
        ys,
        batch_size=60,
        epochs=2,
        steps_per_epoch=10,
        shuffle=False,
        validation_data=([x_val] * 3, [y_val] * 3),
        verbose=0,
    ).history
    for i, member in enumerate(members):
        weights, logs = alone[i]
        for a, b in zip(weights, member.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)  # masks and initial copies included
        assert fused_lib.network_logs({k: v for k, v in history.items()}, i) == logs
        assert int(member.optimizer.iterations) == 20
        for mask, kernel in zip(
            lth_keras.get_masks(member).values(),
            masks_lib.get_kernels(member).values(),
            strict=True,
        ):
            assert not np.any(kernel[~mask])  # pruned weights stayed zero


def test_each_network_keeps_its_own_step_and_learning_rate(batches):
    xs, ys, _, _ = batches
    members = [_lenet(0), _lenet(1)]
    members[1].optimizer.build(members[1].trainable_variables)
    members[1].optimizer.iterations.assign(100)  # starts later in its schedule
    fused = fused_lib.FusedModel(members)
    fused.compile_members(jit_compile=True, steps_per_execution=5)
    fused.fit(xs[:2], ys[:2], batch_size=60, epochs=1, steps_per_epoch=10, verbose=0)
    assert [int(m.optimizer.iterations) for m in members] == [10, 110]
    assert len(fused.optimizer.variables) == 1 + 1 + sum(
        len(m.optimizer.variables) for m in members
    )


def test_fit_together_refuses_trainings_of_different_periods():
    class Stub:
        def __init__(self, job, start, periods):
            self.job, self.start_period, self.periods = job, start, periods

    fuser = fused_lib.Fuser(True, 1)
    with pytest.raises(ValueError, match="start or end at different periods"):
        fuser.fit_together([Stub("ticket-r01", 0, 2), Stub("ticket-r01", 1, 2)])


def test_network_logs():
    logs = {
        "loss": 3.0,
        "net1_loss": 0.3,
        "net1_accuracy": 0.5,
        "val_net1_loss": 0.4,
        "val_net1_accuracy": 0.6,
        "net0_loss": 9.0,
    }
    assert fused_lib.network_logs(logs, 1) == {
        "loss": 0.3,
        "accuracy": 0.5,
        "val_loss": 0.4,
        "val_accuracy": 0.6,
    }
    assert fused_lib.network_logs(None, 0) is None


def _rows(path):
    with open(os.path.join(path, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        row.pop("wall_seconds")
    return rows


def _run_off(tmp_path_factory, name, tiny):
    path = tmp_path_factory.mktemp(name)
    runner.run(preset("lenet", **tiny), path, verbose=0, fuse="off")
    return path


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    return _run_off(tmp_path_factory, "sequential", TINY)


@pytest.mark.slow
def test_a_fused_run_gives_the_rows_of_a_sequential_run(sequential, tmp_path, capsys):
    rows = runner.run(preset("lenet", **TINY), tmp_path, verbose=1, fuse="on")
    out = capsys.readouterr().out
    assert "trained fused" in out.splitlines()[0]
    assert "trials 0,1 | reinit round 1" in out
    assert [(r["trial"], r["round"], r["kind"]) for r in rows] == [
        (t, r, k) for t in (0, 1) for r, k in ((0, "ticket"), (1, "ticket"), (1, "reinit"))
    ]
    assert _rows(tmp_path) == _rows(sequential)
    for t in (0, 1):
        assert _rows(tmp_path / f"trial_{t}") == _rows(sequential / f"trial_{t}")
        for r in (0, 1):
            a = np.load(tmp_path / f"trial_{t}" / "masks" / f"round_{r:02d}.npz")
            b = np.load(sequential / f"trial_{t}" / "masks" / f"round_{r:02d}.npz")
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])
    # Each trial is the single run of its seed: same config, same rows.
    single = preset("lenet", **dict(TINY, trials=1, seed=1))
    stored = json.loads((tmp_path / "trial_1" / "config.json").read_text())["config"]
    assert (
        stored == single.to_dict()
        and single.hash() == preset("lenet", **dict(TINY, trials=1, seed=1)).hash()
    )
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("trial,round,kind,")
    assert (tmp_path / "plots" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


_SCRIPT = """
import sys
from lth_keras.experiments import preset, runner
runner.run(preset("lenet", **{tiny}), sys.argv[1], verbose=0, fuse=sys.argv[2],
           checkpoint_every=1)
"""


def _run_killed(run_dir, fuse, stop, tiny=TINY, watch="trial_1"):
    """Runs the tiny trials in a child; SIGKILLs it once `stop(<watch>'s progress)` holds."""
    env = dict(
        os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=pythonpath(), TFDS_DATA_DIR=MNIST_DIR
    )
    script = _SCRIPT.format(tiny=repr(tiny))
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(run_dir), fuse],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress_file = os.path.join(run_dir, watch, "progress.json")
    while child.poll() is None:
        try:
            with open(progress_file) as f:
                progress = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            progress = None
        if stop is not None and progress is not None and stop(progress):
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    _, err = child.communicate()
    return child.returncode, err


@pytest.mark.slow
def test_a_killed_fused_run_resumes_fused_or_not_to_the_same_rows(sequential, tmp_path):
    def in_reinit(progress):
        return (progress.get("checkpoint") or {}).get("job") == "reinit-r01"

    code, err = _run_killed(tmp_path, "on", in_reinit)
    assert code == -signal.SIGKILL, err[-2000:]
    # Killed inside the fused reinit controls; resumed one trial after another.
    code, err = _run_killed(tmp_path, "off", None)
    assert code == 0, err[-2000:]
    assert _rows(tmp_path) == _rows(sequential)


CONTROLS = dict(TINY, controls=("reinit", "random", "pft"))


@pytest.fixture(scope="module")
def controls_sequential(tmp_path_factory):
    return _run_off(tmp_path_factory, "controls_sequential", CONTROLS)


def _nothing_left(path):
    """No unfinished-job entry in `progress.json`, no checkpoint file, in each trial."""
    for t in (0, 1):
        progress = json.loads((path / f"trial_{t}" / "progress.json").read_text())
        assert not {"checkpoint", "start", "fused"} & set(progress)
        assert not os.listdir(path / f"trial_{t}" / "checkpoints")


@pytest.mark.slow
def test_trials_and_controls_fused_give_the_rows_of_a_sequential_run(
    controls_sequential, tmp_path, capsys
):
    runner.run(preset("lenet", **CONTROLS), tmp_path, verbose=1, fuse="on")
    out = capsys.readouterr().out
    # The three controls of both trials: six networks in one fit.
    assert "trials 0,1 | reinit,random,pft round 1" in out
    assert _rows(tmp_path) == _rows(controls_sequential)
    _nothing_left(tmp_path)


@pytest.mark.slow
def test_the_controls_of_a_one_trial_run_fused_give_its_sequential_rows(
    controls_sequential, tmp_path, capsys
):
    config = preset("lenet", **dict(CONTROLS, trials=1))
    runner.run(config, tmp_path, verbose=1, fuse="on")
    out = capsys.readouterr().out
    assert "the controls of a round that start at the same iteration train together" in out
    assert "reinit,random,pft round 1 | 40/40 it" in out
    assert "reinit round  1 | 20/40 it" not in out  # one line for the fused fit, not one each
    # Trial 0 of the sequential run is the run of this config.
    assert _rows(tmp_path) == _rows(controls_sequential / "trial_0")


@pytest.mark.slow
@pytest.mark.parametrize("resume", ["on", "off"])
def test_controls_killed_while_fused_resume_to_the_same_rows(controls_sequential, tmp_path, resume):
    def in_slot(progress):
        slot = (progress.get("fused") or {}).get("pft-r01") or {}
        return "checkpoint" in slot and "start" in slot

    code, err = _run_killed(tmp_path, "on", in_slot, CONTROLS)
    assert code == -signal.SIGKILL, err[-2000:]
    # Resumed fused, or one job after another: each control from its own checkpoint.
    code, err = _run_killed(tmp_path, resume, None, CONTROLS)
    assert code == 0, err[-2000:]
    assert _rows(tmp_path) == _rows(controls_sequential)
    _nothing_left(tmp_path)


@pytest.mark.slow
def test_gradual_pft_fused_and_killed_gives_the_rows_of_a_sequential_run(tmp_path):
    # Gradual pruning inside the job: the pruners act on each network's own steps.
    tiny = dict(TINY, iterations=60, eval_every=10, controls=("pft",), pft_schedule="polynomial")
    expected = runner.run(preset("lenet", **tiny), tmp_path / "sequential", verbose=0, fuse="off")
    assert [(r["kind"], r["es_iteration"] >= 30) for r in expected if r["round"] == 1] == [
        ("ticket", True),
        ("pft", True),
    ] * 2

    def in_pft(progress):
        entry = progress.get("checkpoint") or {}
        return entry.get("job") == "pft-r01" and entry.get("period", 0) >= 2  # mid-pruning

    code, err = _run_killed(tmp_path / "fused", "on", in_pft, tiny)
    assert code == -signal.SIGKILL, err[-2000:]
    code, err = _run_killed(tmp_path / "fused", "on", None, tiny)
    assert code == 0, err[-2000:]
    assert _rows(tmp_path / "fused") == _rows(tmp_path / "sequential")


@pytest.mark.slow
def test_a_fused_run_on_jax_gives_the_rows_of_a_sequential_run(tmp_path):
    pytest.importorskip("jax")
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=pythonpath(),
        TFDS_DATA_DIR=MNIST_DIR,
        KERAS_BACKEND="jax",
    )
    script = _SCRIPT.format(tiny=repr(dict(TINY, controls=("reinit", "random"))))
    for fuse in ("on", "off"):
        result = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / fuse), fuse],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    backend = json.loads((tmp_path / "on" / "trial_0" / "config.json").read_text())
    assert backend["versions"]["backend"] == "jax"
    assert _rows(tmp_path / "on") == _rows(tmp_path / "off")


@pytest.mark.parametrize(
    "changes, fuse, reason",
    [
        (dict(trials=1), "auto", "one trial and at most one control a round"),
        (dict(early_bird=True, early_bird_window=2), "on", "early-bird"),
        (dict(), "auto", "a CPU (fused networks were measured no faster"),
    ],
    ids=["one-trial", "early-bird", "cpu"],
)
def test_what_is_not_fused_and_why(changes, fuse, reason):
    config = preset("lenet", **dict(TINY, **changes))
    from lth_keras.experiments.models import build_model
    from lth_keras.experiments.placement import Placement

    shape = (32, 32, 3) if config.dataset == "cifar10" else (28, 28, 1)
    model = lth_keras.prunable(build_model(config.model, shape, 10, config.width))
    found, hard = trials.fuse_reason(config, Placement(None), model)
    assert reason in found
    assert hard == (reason.startswith("one trial") or reason == "early-bird")


def test_fuse_on_where_fusing_cannot_work_is_refused(tmp_path):
    config = preset("lenet", **dict(TINY, early_bird=True, early_bird_window=2))
    refused = r"fuse='on', but the networks cannot be fused with early-bird"
    with pytest.raises(ValueError, match=refused):
        runner.run(config, tmp_path / "run", verbose=0, fuse="on")
    assert not os.path.exists(tmp_path / "run")  # refused before the directory is made
    with pytest.raises(ValueError, match=r"Received: fuse='sometimes'"):
        runner.run(config, tmp_path / "run", verbose=0, fuse="sometimes")


def test_on_an_accelerator_only_small_models_fuse(monkeypatch):
    from lth_keras.experiments.models import build_model
    from lth_keras.experiments.placement import Placement

    monkeypatch.setattr(trials, "_accelerator", lambda: "GPU")
    for changes, fuses in ((dict(), True), (dict(model="conv2", dataset="cifar10"), False)):
        config = preset("lenet", **dict(TINY, **changes))
        shape = (32, 32, 3) if config.dataset == "cifar10" else (28, 28, 1)
        model = lth_keras.prunable(build_model(config.model, shape, 10, config.width))
        found, hard = trials.fuse_reason(config, Placement(None), model)
        assert (found is None) if fuses else ("multiply-adds" in found), found
        assert not hard


def test_multiply_adds_of_lenet():
    model = lth_keras.prunable(lenet_300_100())
    assert trials.multiply_adds(model) == 784 * 300 + 300 * 100 + 100 * 10


class _Crash(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["checkpoint", "start"])
def test_a_damaged_fused_slot_restarts_its_control_to_the_same_rows(damaged, tmp_path, monkeypatch):
    from lth_keras.experiments import jobs

    config = preset("lenet", **dict(TINY, trials=1, controls=("reinit", "random")))
    reference = tmp_path / "reference"
    runner.run(config, reference, verbose=0, fuse="off")
    monkeypatch.setattr(runner, "CHECKPOINT_SECONDS", 0.0)  # one at every period but the last
    finish = jobs.Jobs.finish_together

    def crash(self, finished, files, **replace):
        if finished[0][0].startswith("reinit"):
            raise _Crash()
        return finish(self, finished, files, **replace)

    monkeypatch.setattr(jobs.Jobs, "finish_together", crash)
    run_dir = tmp_path / "run"
    with pytest.raises(_Crash):
        runner.run(config, run_dir, verbose=0, fuse="on")
    monkeypatch.undo()
    progress = json.loads((run_dir / "progress.json").read_text())
    slot = progress["fused"]["random-r01"]
    assert progress["checkpoint"]["job"] == "reinit-r01" and slot["checkpoint"]["period"] == 1
    if damaged == "checkpoint":
        name = next(n for n in slot["checkpoint"]["files"] if n.endswith(".h5"))
    else:
        name = slot["start"]
    (run_dir / name).write_bytes(b"damaged")
    with pytest.warns(UserWarning, match=f"{name} altered or truncated: random-r01 starts again"):
        runner.run(config, run_dir, verbose=0, fuse="on")
    assert _rows(run_dir) == _rows(reference)
    assert not os.listdir(run_dir / "checkpoints")


def test_fuse_on_with_nothing_to_fuse_is_refused_and_leaves_nothing(tmp_path):
    config = preset("lenet", **dict(TINY, trials=1, controls=("reinit",)))
    refused = r"fuse='on', but the networks cannot be fused with one trial and at most one"
    with pytest.raises(ValueError, match=refused):
        runner.run(config, tmp_path / "run", verbose=0, fuse="on")
    assert not os.path.exists(tmp_path / "run")  # refused before the directory is made


@pytest.mark.slow
def test_a_control_resumed_alone_takes_its_slot_and_restarts_whole_if_its_start_is_damaged(
    tmp_path, monkeypatch
):
    from lth_keras.experiments import jobs, state

    config = preset("lenet", **dict(TINY, trials=1, iterations=60, controls=("reinit", "random")))
    reference = tmp_path / "reference"
    runner.run(config, reference, verbose=0, fuse="off")
    monkeypatch.setattr(runner, "CHECKPOINT_SECONDS", 0.0)  # one at every period but the last
    save, finish = state.RunState.save_checkpoint, jobs.Jobs.finish_together

    def crash_at_period_2(self, job, model, period, *args, **kwargs):
        if period == 2 and not job.startswith("ticket"):
            raise _Crash()
        return save(self, job, model, period, *args, **kwargs)

    def crash_finishing_random(self, finished, files, **replace):
        if finished[0][0].startswith("random"):
            raise _Crash()
        return finish(self, finished, files, **replace)

    run_dir = tmp_path / "run"
    monkeypatch.setattr(state.RunState, "save_checkpoint", crash_at_period_2)
    with pytest.raises(_Crash):  # fused: both controls checkpointed at period 1
        runner.run(config, run_dir, verbose=0, fuse="on")
    monkeypatch.setattr(state.RunState, "save_checkpoint", save)
    monkeypatch.setattr(jobs.Jobs, "finish_together", crash_finishing_random)
    with pytest.raises(_Crash):  # alone: reinit finishes, random trains on from its slot
        runner.run(config, run_dir, verbose=0, fuse="off")
    monkeypatch.undo()
    progress = json.loads((run_dir / "progress.json").read_text())
    # random's slot moved whole to the next job's entries.
    assert "fused" not in progress
    assert progress["checkpoint"]["job"] == progress["start"]["job"] == "random-r01"
    (run_dir / progress["start"]["file"]).write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="random-r01 starts again from its beginning"):
        runner.run(config, run_dir, verbose=0, fuse="off")
    assert _rows(run_dir) == _rows(reference)  # the overlaps too: from the job's true start


@pytest.mark.slow
def test_late_rewinding_fuses_only_the_controls_that_start_together(tmp_path, capsys):
    # reinit and pft start at iteration 0; random rewinds to iteration 20.
    tiny = dict(TINY, trials=1, rewind_iteration=20, controls=("reinit", "pft", "random"))
    expected = runner.run(preset("lenet", **tiny), tmp_path / "off", verbose=0, fuse="off")
    capsys.readouterr()
    rows = runner.run(preset("lenet", **tiny), tmp_path / "on", verbose=1, fuse="on")
    out = capsys.readouterr().out
    assert "reinit,pft round 1" in out and "random round 1" not in out
    assert [dict(r, wall_seconds=0) for r in rows] == [dict(r, wall_seconds=0) for r in expected]


def test_a_keras_distribution_is_not_fused(monkeypatch):
    from lth_keras.experiments.placement import Placement

    monkeypatch.setattr(trials.keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(trials.keras.distribution, "distribution", lambda: object())
    reason = trials.cannot_fuse(preset("lenet", **TINY), Placement(None))
    assert reason == "a keras.distribution (fused networks train on one device)"
