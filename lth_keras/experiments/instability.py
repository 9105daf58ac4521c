"""Instability analysis of a run's tickets (Frankle et al., ICML 2020), trained fused.

For a finished (or running) run, each trial `t`, each round `r` asked for
(round 0 is the dense network) and each rewind iteration `k`:

1. `W_k`: the trial's network at iteration `k` of its round 0. The run's
   rewind point (`rewind.ticket.npz`) is iteration `rewind_iteration`; for
   a run that rewinds to 0, the dense network is trained from it for `k`
   iterations on the trial's own data stream with a fresh optimizer, as its
   round 0 trained (a run with a late `rewind_iteration` is analysed at
   that `k` only, its stored rewind point);
2. two copies of `W_k` with round `r`'s mask (`masks/round_XX.npz`, pruned
   weights set to zero), the optimizer fresh at step `k` (as `LotteryPruner`
   rewinds), trained to the run's `iterations` on two other data orders
   (streams of seeds `seed + 7919 * (c + 1)`, copies `c = 0, 1`);
3. the test error along the line between the two trained copies
   (`lth_keras.connectivity.interpolation`, `alphas` points) and its barrier.

The masks are the run's, found rewinding to its `rewind_iteration`: at
another `k` this asks whether *that* mask is stable from `W_k`. The paper
analyses at each `k` the mask found rewinding to `k` (here: a run with
`rewind_iteration=k`, analysed at that `k`). Round 0 (dense) is the same
either way.

Every copy of one `k` trains in one fused fit (`lth_keras.experiments.fused`).
Results go to `<output_dir>/instability.json` after each `k`, so a rerun
skips what is done; `instability.png` plots error against `alpha`, a panel
per round, a line per `k` (mean over trials, min-max band).

Example:

```python
from lth_keras.experiments.instability import run_instability

run_instability("runs/lenet", rounds=(0, 7), rewind_iterations=(0, 1000))
```
"""

import dataclasses
import hashlib
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from lth_keras import masks as masks_lib
from lth_keras._io import atomic_write
from lth_keras.connectivity import interpolation
from lth_keras.experiments import data as data_lib
from lth_keras.experiments.config import ExperimentConfig
from lth_keras.experiments.fused import FusedModel, _quiet
from lth_keras.experiments.placement import Placement
from lth_keras.experiments.rundir import CorruptRunError
from lth_keras.experiments.trials import trial_config, trial_dir
from lth_keras.rewind import OptimizerReset
from lth_keras.tickets import load_ticket

__all__ = ["COPY_SEED_STEP", "plot", "run_instability"]

#: Copy `c` of a pair reads the training stream of seed `seed + COPY_SEED_STEP * (c + 1)`.
COPY_SEED_STEP = 7919


def run_instability(
    run_dir,
    rounds=(0,),
    rewind_iterations=(0,),
    trials=None,
    alphas=30,
    output_dir=None,
    verbose=1,
):
    """Runs the instability analysis of a run's tickets (see the module docstring).

    The run is only read (its files checked against the SHA-256s its
    `progress.json` records), so a run still training can be analysed for
    the rounds it has finished.

    Args:
        run_dir: The run directory (of one trial, or of several: then each
            `trial_<t>` is analysed).
        rounds: Rounds whose masks are analysed; round 0 is the dense
            network. Defaults to `(0,)`.
        rewind_iterations: The iterations `k`: multiples of the run's
            `eval_every` below its `iterations`; for a run with a late
            `rewind_iteration`, only that one (its stored rewind point).
            Defaults to `(0,)`.
        trials: The trials to analyse. Defaults to `None` (all).
        alphas: Points on each line. Defaults to `30`.
        output_dir: Where results go. Defaults to `<run_dir>/instability`.
        verbose: `0` silent, `1` a line per `k` and per curve. Defaults to `1`.

    Returns:
        The result entries: one dict per (trial, round, `k`) with `alphas`,
        `errors`, `barrier`, `end_errors` and `weights_remaining`.

    Raises:
        ValueError: For a round or trial the run does not have or has not
            finished, or a `k` it cannot rewind to.
        lth_keras.experiments.rundir.CorruptRunError: For a damaged file.

    Example:

    ```python
    entries = run_instability("runs/lenet", rounds=(0, 7), rewind_iterations=(0, 1000))
    [(e["round"], e["k"], e["barrier"]) for e in entries]
    ```
    """
    config = _read_config(run_dir)
    trials = list(range(config.trials)) if trials is None else list(trials)
    _check_request(config, rounds, rewind_iterations, trials)
    output_dir = output_dir or os.path.join(run_dir, "instability")
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "instability.json")
    results = []
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    done = {(e["trial"], e["round"], e["k"]) for e in results}
    for k in rewind_iterations:
        wanted = [(t, r) for t in trials for r in rounds if (t, r, k) not in done]
        if not wanted:
            continue
        began = time.perf_counter()
        results += _analyse(config, run_dir, k, wanted, alphas, verbose)
        atomic_write(path, (json.dumps(results, indent=1) + "\n").encode())
        if verbose:
            print(f"k={k}: {len(wanted)} pairs in {time.perf_counter() - began:.0f} s", flush=True)
    entries = [
        e
        for e in results
        if e["trial"] in trials and e["round"] in rounds and e["k"] in rewind_iterations
    ]
    if entries:
        atomic_write(os.path.join(output_dir, "instability.png"), _png(entries))
    return entries


def _read_config(run_dir):
    with open(os.path.join(run_dir, "config.json")) as f:
        return ExperimentConfig.from_dict(json.load(f)["config"])


def _check_request(config, rounds, rewind_iterations, trials):
    """Refuses rounds, trials and `k`s the run cannot have, before anything trains."""
    for name, values, top in (("rounds", rounds, config.rounds), ("trials", trials, None)):
        top = config.trials - 1 if top is None else top
        if any(not 0 <= v <= top for v in values):
            raise ValueError(
                f"Received an invalid value for `{name}`, expected values in [0, {top}] for "
                f"this run. Received: {name}={list(values)}"
            )
    late = config.rewind_iteration
    for k in rewind_iterations:
        if k % config.eval_every or not 0 <= k < config.iterations or (late and k != late):
            expected = (
                f"rewind_iteration={late}, the only rewind point this run stores"
                if late
                else f"multiples of eval_every={config.eval_every} below "
                f"iterations={config.iterations}"
            )
            raise ValueError(
                f"Received an invalid value in `rewind_iterations`, expected {expected}. "
                f"Received: {k}"
            )


def _trial_path(run_dir, config, trial):
    return trial_dir(run_dir, trial) if config.trials > 1 else run_dir


def _verified_file(folder, name):
    """A run file checked against the SHA-256 its `progress.json` records (read-only)."""
    with open(os.path.join(folder, "progress.json")) as f:
        digest = json.load(f)["files"].get(name)
    path = os.path.join(folder, name)
    if digest is None or not os.path.exists(path):
        raise ValueError(
            f"{path} is not recorded as complete: the run has not finished that round yet."
        )
    with open(path, "rb") as f:
        actual = hashlib.sha256(f.read()).hexdigest()
    if actual != digest:
        raise CorruptRunError(
            f"{path} is altered or truncated: its SHA-256 is not the recorded one."
        )
    return path


def _analyse(config, run_dir, k, wanted, alphas, verbose):
    """Trains the pairs of `wanted` `(trial, round)` from `W_k`, fused; returns their entries."""
    placement = Placement(None)
    splits = data_lib.load_config(config)
    members, meta = _pairs(config, run_dir, k, wanted, splits, placement)
    fused = FusedModel([model for model, _ in members])
    fused.compile_members(placement.jit_compile(config), placement.steps_per_execution(config))
    data = tf.data.Dataset.zip(tuple(stream for _, stream in members)).map(
        lambda *pairs: (tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
    )
    fused.fit(
        _quiet(data.prefetch(2)),
        epochs=1,
        steps_per_epoch=config.iterations - k,
        shuffle=False,
        verbose=0,
    )
    test = _arrays(splits.test)
    scratch = placement.compiled_model(config, splits)
    entries = []
    for i in range(0, len(members), 2):
        (t, r), (a, b) = meta[i], (members[i][0], members[i + 1][0])
        scratch.set_weights(a.get_weights())  # one model traces one predict function
        curve = interpolation(scratch, b, *test, alphas=alphas)
        kept = masks_lib.weights_remaining(a)[0]
        entries.append(
            {
                "trial": t,
                "round": r,
                "k": k,
                "weights_remaining": kept,
                "alphas": list(curve.alphas),
                "errors": list(curve.errors),
                "barrier": curve.barrier,
                "end_errors": [curve.errors[0], curve.errors[-1]],
            }
        )
        if verbose:
            print(
                f"trial {t} round {r:2d} ({100 * kept:6.2f}% remaining) k={k}: end errors "
                f"{curve.errors[0]:.4f}, {curve.errors[-1]:.4f}; barrier {curve.barrier:+.4f}",
                flush=True,
            )
    return entries


def _pairs(config, run_dir, k, wanted, splits, placement):
    """`([(model, stream)], [(trial, round)])`: two copies of `W_k` per pair, masked, ready."""
    members, meta = [], []
    for t in sorted({t for t, _ in wanted}):
        folder = _trial_path(run_dir, config, t)
        trial = trial_config(config, t)
        start = _weights_at(
            trial, dataclasses.replace(splits, seed=trial.seed), placement, folder, k
        )
        for r in [r for u, r in wanted if u == t]:
            with np.load(_verified_file(folder, f"masks/round_{r:02d}.npz")) as stored:
                masks = {key: stored[key] for key in stored.files}
            for copy in range(2):
                model = placement.compiled_model(trial, splits)
                model.set_weights(start)
                masks_lib.set_masks(model, masks)  # zeroes the pruned weights of W_k
                model.optimizer.build(model.trainable_variables)
                OptimizerReset(model.optimizer, model.trainable_variables).reset(iterations=k)
                seed = (trial.seed + COPY_SEED_STEP * (copy + 1)) % 2**32
                members.append((model, dataclasses.replace(splits, seed=seed).train(start_step=k)))
                meta.append((t, r))
    return members, meta


def _arrays(dataset):
    xs, ys = zip(*dataset.as_numpy_iterator(), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _weights_at(config, splits, placement, folder, k):
    """`W_k`: the trial's network at iteration `k` of its round 0.

    The rewind point (`rewind.ticket.npz`) is iteration `rewind_iteration`;
    with it 0, the dense network trains `k` iterations from it on the
    trial's own stream with a fresh optimizer, as round 0 trained.
    """
    keras.utils.set_random_seed(config.seed)
    model = placement.compiled_model(config, splits)
    load_ticket(_verified_file(folder, "rewind.ticket.npz")).apply(model, weights="rewind")
    if k > config.rewind_iteration:
        model.fit(splits.train(start_step=0), epochs=1, steps_per_epoch=k, shuffle=False, verbose=0)
    return model.get_weights()


def _png(entries):
    from lth_keras._io import render_to_bytes

    return render_to_bytes(lambda path: plot(entries, path), "instability.png")


def plot(entries, path):
    """Plots test error against `alpha`: a panel per round, a line per `k` (mean, min-max band).

    Args:
        entries: Result entries of `run_instability`.
        path: The PNG file to write.

    Example:

    ```python
    with open("runs/lenet/instability/instability.json") as f:
        plot(json.load(f), "instability.png")
    ```
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rounds = sorted({e["round"] for e in entries})
    figure, panels = pyplot.subplots(
        1,
        max(1, len(rounds)),
        figsize=(3.6 * max(1, len(rounds)), 3.8),
        dpi=100,
        sharey=True,
        squeeze=False,
    )
    for axes, r in zip(panels[0], rounds, strict=False):
        of_round = [e for e in entries if e["round"] == r]
        for k in sorted({e["k"] for e in of_round}):
            curves = np.array([e["errors"] for e in of_round if e["k"] == k]) * 100
            alphas = of_round[0]["alphas"]
            trials = f"{len(curves)} trial{'s' if len(curves) > 1 else ''}"
            axes.plot(alphas, curves.mean(0), marker=".", label=f"k = {k} ({trials})")
            axes.fill_between(alphas, curves.min(0), curves.max(0), alpha=0.2)
        remaining = 100 * of_round[0]["weights_remaining"]
        axes.set_title(f"round {r}: {remaining:.1f}% of weights", fontsize=10)
        axes.set_xlabel("interpolation alpha")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    panels[0][0].set_ylabel("test error (%)")
    figure.suptitle(
        "Test error between two copies trained from W_k on different data orders", fontsize=11
    )
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)
