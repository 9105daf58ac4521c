"""Fused training against sequential training: network-iterations per second, side by side.

Three measurements, each alternating fused and sequential blocks in one
process and printing the ratios (fused / sequential):

1. ``--part=steps``: N masked LeNet-300-100s (N from ``--networks``) trained
   in one fused model (`lth_keras.experiments.fused.FusedModel`) against the
   same N trained one after another, each its own `fit`; MNIST-sized random
   batches of 60, XLA, 100 steps per compiled call, no evaluation.
2. ``--part=runner``: a full runner job set, `run(preset("lenet",
   trials=5, rounds=1, controls=("reinit", "random"), iterations=...,
   eval_every=100))` on real MNIST, `fuse="on"` against `fuse="off"`
   (20 jobs; fresh run directories, compile included).
3. ``--part=eval``: the cost of evaluating every 100 iterations in a fused
   run: the same fused job set with ``eval_every=100`` against one
   evaluation at the end (``eval_every=iterations``), beside its floor by
   arithmetic (the multiply-adds of the evaluations over those of training).
4. ``--part=plain``: the ceiling without lth_keras: N plain Keras
   LeNet-300-100s (no masks) as one multi-output model, one loss each and
   one optimizer (``--optimizer``), against the same N plain models trained
   one after another; what the issue's first measurement did.

Usage::

    KERAS_BACKEND=jax python benchmarks/fused_throughput.py --part=steps
    KERAS_BACKEND=jax python benchmarks/fused_throughput.py --part=plain --optimizer=adam
    TFDS_DATA_DIR=../shared/data/tensorflow_datasets \
        python benchmarks/fused_throughput.py --part=runner
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lth_keras  # noqa: E402
from lth_keras.experiments import models, training  # noqa: E402
from lth_keras.experiments.fused import FusedModel  # noqa: E402
from lth_keras.experiments.presets import preset  # noqa: E402


def _lenet(seed):
    keras.utils.set_random_seed(seed)
    model = lth_keras.prunable(models.lenet_300_100())
    config = preset("lenet")
    return training.compile_for(model, config, steps_per_execution=100, jit_compile=True)


def _timed(fit):
    began, cpu = time.perf_counter(), time.process_time()
    fit()
    return time.perf_counter() - began, time.process_time() - cpu


def steps_part(networks, steps, blocks):
    rng = np.random.default_rng(0)
    x = rng.random((steps * 60, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, steps * 60)
    print(f"{keras.backend.backend()}, {steps} steps a block, {blocks} blocks each way")
    print(f"{'N':>3} {'fused net-it/s':>15} {'sequential':>11} {'ratio':>6} {'CPU ratio':>9}")
    for n in networks:
        alone = [_lenet(i) for i in range(n)]
        together = [_lenet(i) for i in range(n)]
        fused = FusedModel(together)
        fused.compile_members(jit_compile=True, steps_per_execution=100)

        def sequential(alone=alone):
            for model in alone:
                model.fit(x, y, batch_size=60, epochs=1, steps_per_epoch=steps, verbose=0)

        def one_fit(fused=fused, n=n):
            fused.fit([x] * n, [y] * n, batch_size=60, epochs=1, steps_per_epoch=steps, verbose=0)

        _report(n, steps, blocks, sequential, one_fit)


def _plain_net(index, optimizer):
    keras.utils.set_random_seed(index)
    model = models.lenet_300_100()
    return model, _compiled(model, optimizer)


def _compiled(model, optimizer, outputs=1):
    made = keras.optimizers.Adam(1.2e-3) if optimizer == "adam" else keras.optimizers.SGD(0.1)
    model.compile(
        made,
        [keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * outputs,
        metrics=[["accuracy"]] * outputs,
        jit_compile=True,
        steps_per_execution=100,
    )
    return model


def plain_part(networks, steps, blocks, optimizer):
    rng = np.random.default_rng(0)
    x = rng.random((steps * 60, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, steps * 60)
    print(
        f"{keras.backend.backend()}, plain Keras (no lth_keras), {optimizer}, {steps} steps a "
        f"block, {blocks} blocks each way"
    )
    print(f"{'N':>3} {'fused net-it/s':>15} {'sequential':>11} {'ratio':>6} {'CPU ratio':>9}")
    for n in networks:
        alone = [_plain_net(i, optimizer)[1] for i in range(n)]
        inputs = [keras.Input((28, 28, 1), name=f"in{i}") for i in range(n)]
        outputs = []
        for i, x_i in enumerate(inputs):
            net = _plain_net(i, optimizer)[0]
            net.name = f"net{i}"
            outputs.append(net(x_i))
        together = _compiled(keras.Model(inputs, outputs), optimizer, outputs=n)

        def sequential(alone=alone):
            for model in alone:
                model.fit(x, y, batch_size=60, epochs=1, steps_per_epoch=steps, verbose=0)

        def one_fit(together=together, n=n):
            together.fit(
                [x] * n, [y] * n, batch_size=60, epochs=1, steps_per_epoch=steps, verbose=0
            )

        _report(n, steps, blocks, sequential, one_fit)


def _report(n, steps, blocks, sequential, one_fit):
    sequential(), one_fit()  # compile both
    times = {"fused": [], "sequential": []}
    for _ in range(blocks):
        times["fused"].append(_timed(one_fit))
        times["sequential"].append(_timed(sequential))
    fused_wall = statistics.median(t[0] for t in times["fused"])
    seq_wall = statistics.median(t[0] for t in times["sequential"])
    fused_cpu = statistics.median(t[1] for t in times["fused"])
    seq_cpu = statistics.median(t[1] for t in times["sequential"])
    print(
        f"{n:>3} {n * steps / fused_wall:>15,.0f} {n * steps / seq_wall:>11,.0f} "
        f"{seq_wall / fused_wall:>6.2f} {seq_cpu / fused_cpu:>9.2f}",
        flush=True,
    )


def _runner(config, fuse, folder):
    from lth_keras.experiments import runner

    shutil.rmtree(folder, ignore_errors=True)
    return _timed(lambda: runner.run(config, folder, verbose=0, fuse=fuse))


def runner_part(iterations, repeats, eval_every):
    config = preset(
        "lenet",
        trials=5,
        rounds=1,
        controls=("reinit", "random"),
        iterations=iterations,
        eval_every=eval_every,
    )
    work = tempfile.mkdtemp(prefix="fused-bench-")
    jobs = 5 * 4
    print(
        f"{keras.backend.backend()}: runner, {jobs} jobs of {iterations} iterations, "
        f"evaluation every {eval_every}, {repeats} repeats each way"
    )
    times = {"on": [], "off": []}
    for _ in range(repeats):
        for fuse in ("on", "off"):
            times[fuse].append(_runner(config, fuse, os.path.join(work, fuse)))
            wall, cpu = times[fuse][-1]
            print(f"  fuse={fuse}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    on = statistics.median(t[0] for t in times["on"])
    off = statistics.median(t[0] for t in times["off"])
    print(
        f"runner: fused {jobs * iterations / on:,.0f} net-it/s, sequential "
        f"{jobs * iterations / off:,.0f} net-it/s, ratio {off / on:.2f} (medians)"
    )


def eval_part(iterations, repeats):
    work = tempfile.mkdtemp(prefix="fused-eval-")
    print(
        f"{keras.backend.backend()}: fused runner, 20 jobs of {iterations} iterations, "
        f"evaluation every 100 against once at the end, {repeats} repeats"
    )
    times = {100: [], iterations: []}
    for _ in range(repeats):
        for every in (100, iterations):
            config = preset(
                "lenet",
                trials=5,
                rounds=1,
                controls=("reinit", "random"),
                iterations=iterations,
                eval_every=every,
            )
            times[every].append(_runner(config, "on", os.path.join(work, str(every))))
            print(f"  eval_every={every}: {times[every][-1][0]:.1f} s wall", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    often = statistics.median(t[0] for t in times[100])
    once = statistics.median(t[0] for t in times[iterations])
    print(f"evaluation every 100 iterations: {often / once - 1:+.1%} of the time (medians)")
    _eval_floor(repeats)


def _eval_floor(repeats):
    """One network, no runner: an evaluation of 5,000 images against 100 training steps."""
    rng = np.random.default_rng(0)
    x = rng.random((6000, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 6000)
    model = _lenet(0)
    model.fit(x, y, batch_size=60, epochs=1, steps_per_epoch=100, verbose=0)  # compile
    model.evaluate(x[:5000], y[:5000], batch_size=1000, verbose=0)
    train, evaluate = [], []
    for _ in range(max(repeats, 5)):
        train.append(_timed(lambda: model.fit(x, y, batch_size=60, epochs=1, verbose=0))[0])
        evaluate.append(
            _timed(lambda: model.evaluate(x[:5000], y[:5000], batch_size=1000, verbose=0))[0]
        )
    ratio = statistics.median(evaluate) / statistics.median(train)
    print(
        f"floor without the runner: one evaluation of 5,000 images (batch 1,000) takes "
        f"{ratio:.0%} of 100 training steps (batch 60), one network, each a compiled call "
        "(medians)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("steps", "runner", "eval", "plain"), default="steps")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--networks", default="1,2,5,8,16")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--eval_every", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.part == "steps":
        steps_part([int(n) for n in args.networks.split(",")], args.steps, args.blocks)
    elif args.part == "plain":
        plain_part(
            [int(n) for n in args.networks.split(",")], args.steps, args.blocks, args.optimizer
        )
    elif args.part == "runner":
        runner_part(args.iterations, args.repeats, args.eval_every)
    else:
        eval_part(args.iterations, args.repeats)


if __name__ == "__main__":
    main()
