"""Does the lottery-ticket effect survive structured sparsity? LeNet-300-100 on real MNIST.

For each structure (`unstructured`, `units`, `block:1x4`, `2:4`) and each
seed: iterative magnitude pruning with that structure, and at every round
the random re-initialisation control (`reinit`) trained on the ticket's
mask, all with the same iterations. Writes, under `--output_dir`, one run
directory per (structure, seed), `summary.md` (test accuracy at early
stopping and the early-stopping iteration, ticket vs reinit, mean and
min-max over seeds) and `summary.json`, and the plots
`<--plot_prefix>accuracy.png` and `<--plot_prefix>es_iteration.png`.

Rounds: by default 5 rounds at rate 0.488 per hidden layer and 0.271 for
the output layer, which are three of the paper's rounds (20% and 10%)
compounded (1 - 0.8**3, 1 - 0.9**3): the levels are those of the paper's
rounds 3, 6, 9, 12 and 15 (51.3% ... 3.6% unstructured) in a third of the
jobs. `2:4` keeps at most 2 of every 4 weights along the input axis and
stops pruning once every group is there (50%), so it runs `--nm_rounds`.
`block:1x16` is refused on LeNet (fc2 has 300 inputs, not a multiple of 16).

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python benchmarks/reproduce_structured.py

Runs resume: rerun the same command after an interruption.
"""

import json
import os
import statistics

from absl import app, flags

flags.DEFINE_list(
    "structures", ["unstructured", "units", "block:1x4", "2:4"], "Sparsity structures."
)
flags.DEFINE_list("seeds", ["0", "1"], "Seeds, one run per structure each.")
flags.DEFINE_integer("rounds", 5, "Pruning rounds (5 at the default rates: about 3.6%).")
flags.DEFINE_integer("nm_rounds", 3, "Pruning rounds of N:M structures (3 reach 2:4).")
flags.DEFINE_float("rate", 0.488, "Rate per round of the hidden layers.")
flags.DEFINE_float("output_rate", 0.271, "Rate per round of the output layer.")
flags.DEFINE_integer("iterations", 5000, "Training steps per job.")
flags.DEFINE_integer("eval_every", 500, "Steps between evaluations.")
flags.DEFINE_string("output_dir", "runs/reproduce_structured", "Parent folder of the runs.")
flags.DEFINE_string("plot_prefix", "docs/img/structured_", "Prefix of the two plots' paths.")
FLAGS = flags.FLAGS

METRICS = (("test_accuracy_es", 4, "accuracy"), ("es_iteration", 0, "es_iteration"))


def config_for(structure, seed):
    from lth_keras.experiments import preset

    rounds = FLAGS.nm_rounds if ":" in structure and "x" not in structure else FLAGS.rounds
    return preset(
        "lenet",
        structure=structure,
        rounds=rounds,
        rate=FLAGS.rate,
        output_rate=FLAGS.output_rate,
        iterations=FLAGS.iterations,
        eval_every=min(FLAGS.eval_every, FLAGS.iterations),
        controls=("reinit",),
        seed=seed,
    )


def _cell(values, digits):
    mean = statistics.mean(values)
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def table(runs, metric, digits):
    """Markdown rows of one structure: round, remaining, ticket, reinit, margin."""
    lines = [
        f"| round | remaining | ticket {metric} | reinit {metric} | ticket - reinit |",
        "|---|---|---|---|---|",
    ]
    margins = []
    for round_ in sorted({r for rows in runs for (r, _) in rows}):
        tickets = [rows[(round_, "ticket")][metric] for rows in runs]
        remaining = statistics.mean(rows[(round_, "ticket")]["weights_remaining"] for rows in runs)
        if round_ == 0:
            lines.append(f"| 0 | 100% | {_cell(tickets, digits)} | | |")
            continue
        reinits = [rows[(round_, "reinit")][metric] for rows in runs]
        margin = statistics.mean(tickets) - statistics.mean(reinits)
        margins.append(margin)
        lines.append(
            f"| {round_} | {100 * remaining:.1f}% | {_cell(tickets, digits)} | "
            f"{_cell(reinits, digits)} | {margin:+.{digits}f} |"
        )
    return lines, margins


def summary(runs):
    out = ["# Structured lottery tickets, LeNet-300-100 on MNIST", ""]
    for structure, group in runs.items():
        out += [f"## {structure}", ""]
        for metric, digits, _ in METRICS:
            lines, margins = table(group, metric, digits)
            out += lines + [""]
            if metric == "test_accuracy_es":
                ahead = sum(m > 0 for m in margins)
                out += [
                    f"Ticket ahead of reinit in {ahead} of {len(margins)} rounds "
                    f"(mean margin {statistics.mean(margins):+.4f}).",
                    "",
                ]
    return "\n".join(out) + "\n"


def plot(runs, metric, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(
        1, len(runs), figsize=(4 * len(runs), 3.4), sharex=True, sharey=True, squeeze=False
    )
    for ax, (structure, group) in zip(axes.flat, runs.items(), strict=False):
        for kind, style in (("ticket", "o-"), ("reinit", "s--")):
            rounds = sorted(r for (r, k) in group[0] if k == kind)
            x = [100 * group[0][(r, kind)]["weights_remaining"] for r in rounds]
            values = [[rows[(r, kind)][metric] for rows in group] for r in rounds]
            mean = [statistics.mean(v) for v in values]
            errors = [
                [m - min(v) for m, v in zip(mean, values, strict=True)],
                [max(v) - m for m, v in zip(mean, values, strict=True)],
            ]
            ax.errorbar(x, mean, yerr=errors, fmt=style, capsize=3, label=kind)
        ax.set_xscale("log")
        ax.set_xticks([100, 50, 20, 10, 5, 2])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(structure)
        ax.set_xlabel("% of weights remaining")
        ax.grid(alpha=0.3)
    axes.flat[0].invert_xaxis()  # shared: once for all panels
    axes.flat[0].set_ylabel(metric.replace("_", " "))
    axes.flat[0].legend()
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv):
    del argv
    from lth_keras.experiments import run

    runs = {}
    for structure in FLAGS.structures:
        for seed in FLAGS.seeds:
            config = config_for(structure, int(seed))
            folder = os.path.join(FLAGS.output_dir, f"{structure.replace(':', '_')}-seed{seed}")
            rows = run(config, folder, verbose=1)
            runs.setdefault(structure, []).append({(r["round"], r["kind"]): r for r in rows})
    text = summary(runs)
    with open(os.path.join(FLAGS.output_dir, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(FLAGS.output_dir, "summary.json"), "w") as f:
        flat = {s: [list(rows.values()) for rows in group] for s, group in runs.items()}
        json.dump(flat, f, indent=2)
    for metric, _, stem in METRICS:
        plot(runs, metric, f"{FLAGS.plot_prefix}{stem}.png")
    print(text)


if __name__ == "__main__":
    app.run(main)
