"""Test Liu et al.'s (ICML 2021) claims on real MNIST: weight correlation, tickets, PFT.

For each network (LeNet-300-100; Conv-2 on 28x28x1 MNIST) and each optimiser
setting (SGD with momentum 0.9 at a small and a large learning rate, and the
Adam 1.2e-3 LeNet preset for context), for every seed: iterative magnitude
pruning with the ticket, the random re-initialisation (`reinit`) and pruning
& fine-tuning (`pft`) at every round, all with the same iterations, and the
overlap ratio R_p of every job (see `lth_keras.analysis`). Writes, under
`--output_dir`, one run directory per (network, setting, seed) and
`summary.md`: one table per claim with means and min-max over seeds, and a
verdict per claim by the rules stated there:

- (a) R_p(θ0, θT) of the dense network is ≈ p at the large rate and clearly
  above p at the small one;
- (b) the ticket beats `reinit` at the small rate only;
- (c) PFT is ahead of the ticket at the large rate, at equal iterations.

With `--pft_schedules=oneshot,polynomial`, each (network, setting, seed) also
gets a run whose `pft` arm prunes gradually, tfmot's way
(`pft_schedule="polynomial"`: the trained dense network pruned along
`PolynomialDecay` to the ticket's per-kernel counts over the first half of
the job, then fine-tuned), and `summary.md` compares it with the ticket and
with one-shot PFT at every round, at equal iterations per job.

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python benchmarks/reproduce_correlation.py

Runs resume: rerun the same command after an interruption.
"""

import json
import os
import statistics

from absl import app, flags

flags.DEFINE_list("models", ["lenet", "conv2"], "Networks.")
flags.DEFINE_list("seeds", ["0", "1"], "Seeds, one run each.")
flags.DEFINE_float("small_lr", 0.01, "The small SGD learning rate.")
flags.DEFINE_float("large_lr", 0.1, "The large SGD learning rate.")
flags.DEFINE_integer("rounds", 7, "Pruning rounds (7: about 21% of LeNet's weights).")
flags.DEFINE_integer("lenet_iterations", 5000, "Training steps per job, LeNet.")
flags.DEFINE_integer("conv_iterations", 1000, "Training steps per job, Conv-2.")
flags.DEFINE_float("conv_width", 0.25, "Conv-2 width: 0.25 is 16 filters and 64-unit fc layers.")
flags.DEFINE_integer("conv_rounds", 3, "Pruning rounds of Conv-2 (3 at 0.45: 17% of weights).")
flags.DEFINE_float("conv_rate", 0.45, "Conv-2 fc rate per round; conv and output layers: half.")
flags.DEFINE_integer("conv_eval_every", 250, "Steps between evaluations, Conv-2.")
flags.DEFINE_integer("eval_every", 500, "Steps between evaluations.")
flags.DEFINE_bool("adam", True, "Also the Adam 1.2e-3 setting (the LeNet preset), for context.")
flags.DEFINE_list(
    "pft_schedules",
    ["oneshot"],
    "PFT arms: oneshot (the ticket's mask at once) and/or polynomial (gradual, tfmot's way).",
)
flags.DEFINE_string("output_dir", "runs/reproduce_correlation", "Parent folder of the runs.")
FLAGS = flags.FLAGS

PS = (0.1, 0.2, 0.3, 0.4, 0.5)


def settings():
    out = {
        f"sgd{FLAGS.small_lr:g}": dict(optimizer="sgd", learning_rate=FLAGS.small_lr),
        f"sgd{FLAGS.large_lr:g}": dict(optimizer="sgd", learning_rate=FLAGS.large_lr),
    }
    if FLAGS.adam:
        out["adam0.0012"] = dict(optimizer="adam", learning_rate=1.2e-3)
    return out


def config_for(model, setting, seed, pft_schedule="oneshot"):
    from lth_keras.experiments import preset

    if model == "lenet":
        shape = dict(
            rounds=FLAGS.rounds,
            iterations=FLAGS.lenet_iterations,
            eval_every=min(FLAGS.eval_every, FLAGS.lenet_iterations),
        )
    else:
        shape = dict(
            width=FLAGS.conv_width,
            rounds=FLAGS.conv_rounds,
            rate=FLAGS.conv_rate,
            output_rate=FLAGS.conv_rate / 2,
            layer_rates=(("Conv2D", FLAGS.conv_rate / 2),),
            iterations=FLAGS.conv_iterations,
            eval_every=min(FLAGS.conv_eval_every, FLAGS.conv_iterations),
        )
    return preset(
        model,
        dataset="mnist",
        augment=False,
        controls=("reinit", "pft") if pft_schedule == "oneshot" else ("pft",),
        pft_schedule=pft_schedule,
        momentum=0.9,
        overlap_ps=PS,
        seed=seed,
        **shape,
        **setting,
    )


def _stats(values):
    return statistics.mean(values), min(values), max(values)


def _cell(values, digits=4):
    mean, low, high = _stats(values)
    return f"{mean:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def claim_a(runs, model, small, large):
    lines = [
        f"| p | R_p, lr {small} | R_p, lr {large} |",
        "|---|---|---|",
    ]
    above = []
    for p in PS:
        key = f"overlap@{p:g}"
        cells = []
        for name in (small, large):
            values = [rows[(0, "ticket")][key] for rows in runs[(model, name)]]
            cells.append(_cell(values, 3))
            above.append((name, p, statistics.mean(values) - p))
        lines.append(f"| {p:g} | {cells[0]} | {cells[1]} |")
    small_excess = [d for name, _, d in above if name == small]
    large_excess = [d for name, _, d in above if name == large]
    holds = all(s > 0.05 for s in small_excess) and all(
        abs(x) <= 0.5 * s for x, s in zip(large_excess, small_excess, strict=True)
    )
    verdict = ("holds" if holds else "does not hold") + (
        f": R_p - p is {min(small_excess):+.3f} to {max(small_excess):+.3f} at lr {small} and "
        f"{min(large_excess):+.3f} to {max(large_excess):+.3f} at lr {large} (rule: above p by "
        "more than 0.05 at the small rate for every p, and at the large rate within half of "
        "that excess)"
    )
    return lines, verdict


def _by_round(runs, kind, metric):
    rounds = sorted({r for rows in runs for (r, k) in rows if k == kind})
    return {r: [rows[(r, kind)][metric] for rows in runs if (r, kind) in rows] for r in rounds}


def claim_table(runs, kinds, metric="test_accuracy_es"):
    """Rows: round, remaining, then `metric` of each kind (mean, min-max over seeds)."""
    header = "| round | remaining | " + " | ".join(kinds) + " |"
    lines = [header, "|" + "---|" * (2 + len(kinds))]
    wins = []
    first = _by_round(runs, kinds[0], metric)
    for round_ in sorted(first):
        if round_ == 0:
            continue
        remaining = statistics.mean(rows[(round_, kinds[0])]["weights_remaining"] for rows in runs)
        cells = [_cell(_by_round(runs, k, metric).get(round_, [float("nan")])) for k in kinds]
        lines.append(f"| {round_} | {100 * remaining:.1f}% | " + " | ".join(cells) + " |")
        values = [statistics.mean(_by_round(runs, k, metric)[round_]) for k in kinds]
        wins.append(values[0] - values[1])
    return lines, wins


def _comparison(title, table, ahead_text):
    """A titled table of two arms and the line counting the rounds the first is ahead."""
    lines, wins = table
    ahead = sum(w > 0 for w in wins)
    return [
        title,
        "",
        *lines,
        "",
        f"{ahead_text} in {ahead} of {len(wins)} rounds "
        f"(mean margin {statistics.mean(wins):+.4f}).",
        "",
    ]


def summary(runs):
    out = ["# Liu et al. (ICML 2021) on MNIST: the numbers", ""]
    names = list(settings())
    small, large = names[0], names[1]
    for model in FLAGS.models:
        out += [f"## {model}", ""]
        lines, verdict = claim_a(runs, model, small, large)
        out += ["(a) R_p(θ0, θT) of the dense network, mean (min-max) over seeds:", ""]
        out += lines + ["", f"Verdict (a): {verdict}.", ""]
        present = [name for name in names if (model, name) in runs]
        for name in present:
            out += _comparison(
                f"(b) test accuracy at early stopping, {name}: ticket vs reinit",
                claim_table(runs[(model, name)], ["ticket", "reinit"]),
                "Ticket ahead of reinit",
            )
        for name in present:
            for metric in ("test_accuracy_es", "test_accuracy_final"):
                out += _comparison(
                    f"(c) {metric}, {name}: PFT vs ticket, equal iterations",
                    claim_table(runs[(model, name)], ["pft", "ticket"], metric),
                    "PFT ahead of the ticket",
                )
        for name in present:
            if not any(GRADUAL in {k for _, k in rows} for rows in runs[(model, name)]):
                continue
            for metric in ("test_accuracy_es", "test_accuracy_final"):
                out += _comparison(
                    f"(c, gradual) {metric}, {name}: gradual PFT vs ticket, equal iterations",
                    claim_table(runs[(model, name)], [GRADUAL, "ticket"], metric),
                    "Gradual PFT ahead of the ticket",
                )
                out += _comparison(
                    f"(c, gradual) {metric}, {name}: gradual PFT vs one-shot PFT",
                    claim_table(runs[(model, name)], [GRADUAL, "pft"], metric),
                    "Gradual PFT ahead of one-shot PFT",
                )
            out += _es_iterations(runs[(model, name)], name)
    return "\n".join(out) + "\n"


#: The kind under which the gradual runs' `pft` rows join the one-shot runs' rows.
GRADUAL = "pft-gradual"


def _es_iterations(runs, name):
    """Early-stopping iterations of the ticket and both PFTs per round (mean over seeds)."""
    kinds = ["ticket", "pft", GRADUAL]
    lines = [f"Early-stopping iteration, {name} (mean over seeds):", ""]
    lines += ["| round | " + " | ".join(kinds) + " |", "|" + "---|" * (1 + len(kinds))]
    for round_ in sorted(_by_round(runs, GRADUAL, "es_iteration")):
        cells = [
            f"{statistics.mean(_by_round(runs, k, 'es_iteration')[round_]):.0f}" for k in kinds
        ]
        lines.append(f"| {round_} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv):
    del argv
    from lth_keras.experiments import report, run

    runs = {}
    for model in FLAGS.models:
        for name, setting in settings().items():
            if model != "lenet" and name.startswith("adam"):
                continue
            for seed in FLAGS.seeds:
                config = config_for(model, setting, int(seed))
                folder = os.path.join(FLAGS.output_dir, f"{model}-{name}-seed{seed}")
                rows = run(config, folder, verbose=1)
                found = {(r["round"], r["kind"]): r for r in rows}
                if "polynomial" in FLAGS.pft_schedules:
                    config = config_for(model, setting, int(seed), "polynomial")
                    rows = run(config, f"{folder}-gradual", verbose=1)
                    for r in rows:
                        if r["kind"] == "ticket":  # the same seed trains the same tickets
                            same = (
                                r["test_accuracy_es"]
                                == found[(r["round"], "ticket")]["test_accuracy_es"]
                            )
                            print(f"{folder}-gradual round {r['round']}: same ticket: {same}")
                        else:
                            found[(r["round"], GRADUAL)] = r
                runs.setdefault((model, name), []).append(found)
    for key, group in runs.items():
        plain = [[r for r in g.values() if r["kind"] != GRADUAL] for g in group]
        rows = report.summarize(plain)
        stem = os.path.join(FLAGS.output_dir, "-".join(key))
        report.plot_overlap(rows, f"{stem}-overlap.png")
        report.plot(rows, "test_accuracy_es", f"{stem}-accuracy.png")
        with open(f"{stem}.json", "w") as f:
            json.dump(rows, f, indent=2)
    text = summary(runs)
    with open(os.path.join(FLAGS.output_dir, "summary.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    app.run(main)
