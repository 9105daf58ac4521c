"""tf.distribute: MirroredStrategy in process, MultiWorkerMirroredStrategy with 2 processes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from helpers import MNIST_DIR, REPO, pythonpath

from lth_keras.tensorflow import distribute


def start_workers(argv, n=2):
    """Starts `n` workers of one cluster on loopback, ports from the OS."""
    procs = []
    for index, tf_config in enumerate(distribute.local_cluster(n)):
        env = dict(
            os.environ,
            PYTHONPATH=pythonpath(),
            TF_CPP_MIN_LOG_LEVEL="3",
            TFDS_DATA_DIR=MNIST_DIR,
            TF_CONFIG=tf_config,
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, *argv(index)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def wait_all(procs, timeout=300):
    results = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in results]


def single(script_args):
    env = dict(
        os.environ, PYTHONPATH=pythonpath(), TF_CPP_MIN_LOG_LEVEL="3", TFDS_DATA_DIR=MNIST_DIR
    )
    env.pop("TF_CONFIG", None)
    result = subprocess.run(
        [sys.executable, *script_args], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_strategy_names():
    assert distribute.get_strategy("default") is tf.distribute.get_strategy()
    mirrored = distribute.get_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2  # the two logical CPUs of conftest
    assert distribute.is_chief(mirrored)
    with pytest.raises(ValueError, match="strategy='horovod'"):
        distribute.get_strategy("horovod")


def test_local_cluster_gives_each_worker_its_task_and_distinct_ports():
    configs = [json.loads(c) for c in distribute.local_cluster(3)]
    workers = configs[0]["cluster"]["worker"]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == {"worker": workers} for c in configs)
    assert len(set(workers)) == 3
    assert all(w.startswith("localhost:") and int(w.split(":")[1]) > 0 for w in workers)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_workers"):
            distribute.local_cluster(bad)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_two_workers_match_a_single_device_run(method, tmp_path):
    script = os.path.join(REPO, "tests", "tf_backend", "multi_worker_fit.py")
    wait_all(start_workers(lambda i: [script, "multi", str(tmp_path / f"w{i}.npz"), method]))
    single([script, "single", str(tmp_path / "single.npz"), method])
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    reference = np.load(tmp_path / "single.npz")
    assert w0.files == reference.files
    for key in reference.files:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)  # every worker alike
        if key.startswith("mask:"):
            np.testing.assert_array_equal(w0[key], reference[key], err_msg=key)
        else:
            np.testing.assert_allclose(w0[key], reference[key], atol=1e-5, err_msg=key)
    assert any(w0[k].mean() < 1 for k in w0.files if k.startswith("mask:"))


LENET = [
    "--rounds=1",
    "--iterations=40",
    "--eval_every=20",
    "--validation_examples=200",
    "--train_examples=600",
    "--test_examples=200",
    "--controls=reinit",
    "--verbose=1",
]


def _masks(run_dir):
    return {r: np.load(run_dir / "masks" / f"round_{r:02d}.npz") for r in (0, 1)}


@pytest.mark.slow
def test_experiment_with_two_workers_chief_writes_and_resumes(tmp_path):
    example = os.path.join(REPO, "examples", "lenet_mnist.py")
    reference = tmp_path / "single"
    single([example, *LENET, f"--output_dir={reference}"])
    run_dir = tmp_path / "multi"

    def argv(_):
        # A checkpoint after every evaluation, so that one exists to resume from.
        return [
            example,
            *LENET,
            "--strategy=multi_worker",
            "--checkpoint_every=1",
            f"--output_dir={run_dir}",
        ]

    # Kill worker 1 inside round 1, then the chief (which waits for it).
    procs = start_workers(argv)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            progress = json.loads((run_dir / "progress.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            progress = {}
        if (progress.get("checkpoint") or {}).get("job") == "ticket-r01":
            break
        exited = [p for p in procs if p.poll() is not None]
        if exited:  # the peer of a dead worker would wait for it forever
            for p in procs:
                p.kill()
            pytest.fail(f"a worker exited early: {exited[0].communicate()[1][-3000:]}")
        time.sleep(0.01)
    else:
        for p in procs:
            p.kill()
        pytest.fail("the workers never reached a checkpoint of round 1 (ticket-r01)")
    procs[1].send_signal(signal.SIGKILL)
    time.sleep(1)
    procs[0].send_signal(signal.SIGKILL)
    for p in procs:
        p.communicate()
    outputs = wait_all(start_workers(argv))
    assert "winning ticket" in outputs[0] and outputs[1] == ""  # only the chief reports
    for r, masks in _masks(reference).items():
        multi = _masks(run_dir)[r]
        for key in masks.files:
            np.testing.assert_array_equal(multi[key], masks[key])
    # Nothing but the chief's files: no worker temporary folders were left.
    names = {p.name for p in run_dir.rglob("*")}
    assert not any(name.startswith((".tmp", "lth_keras-worker")) for name in names)


def test_multi_worker_fix_is_scoped():
    from keras.src.backend.tensorflow import trainer

    from lth_keras import _compat

    original = trainer.reduce_per_replica
    with _compat.multi_worker_reduce_fix():
        with _compat.multi_worker_reduce_fix():
            assert trainer.reduce_per_replica is not original
        assert trainer.reduce_per_replica is not original
    assert trainer.reduce_per_replica is original
