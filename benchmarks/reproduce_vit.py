"""Winning tickets in a small ViT on real MNIST: the ticket against re-initialisation.

Iterative magnitude pruning of the `vit` preset (KerasHub `ViTBackbone`: 7x7
patches, hidden 64, 4 layers, 4 heads, MLP 128; Adam 1e-3, warm-up, batch
128), 20% of every attention, MLP and patch-embedding kernel and 10% of the
head per round, with the randomly re-initialised control (`reinit`) at every
round; one arm rewinds to iteration 0 (Frankle & Carbin 2019), another to a
later iteration k (late rewinding, Frankle et al. 2019/2020); both for every
seed. Writes, under `--output_dir`, one run directory per (arm, seed) and:

- `summary.md`: per arm, test accuracy at early stopping (and at the end)
  and the early-stopping iteration of ticket and reinit, each seed and the
  mean with min-max; the share of weights remaining per group (attention,
  MLP, patch embedding, head) at every round; the counts stated below;
- `summary.json`: the same numbers; `flags.json`: this script's flags;
- `vit_accuracy.png`, `vit_early_stopping.png`: one panel per arm;
- `vit_curves.png` (and a table in `summary.md`): validation accuracy at
  every evaluation of the dense network and of the last round's ticket and
  reinit, one panel per arm.

The counts, fixed before the runs: at each pruned round and in each seed,
whether the ticket's test accuracy at early stopping is above the reinit
control's, and whether it is at least the dense network's of the same seed
and arm (round 0).

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python benchmarks/reproduce_vit.py

Runs resume: rerun the same command after an interruption.
"""

import json
import os
import re
import statistics
import time

from absl import app, flags

flags.DEFINE_list("seeds", ["0", "1"], "Seeds, one run per seed and arm.")
flags.DEFINE_list("rewinds", ["0", "100"], "Rewind iterations, one arm each (0: the original).")
flags.DEFINE_integer("iterations", 1000, "Training steps per round (1,000 of 128: 2.3 epochs).")
flags.DEFINE_integer("eval_every", 100, "Steps between evaluations.")
flags.DEFINE_integer("rounds", 8, "Pruning rounds; 8 at 0.2 leave 16.8% of each kernel.")
flags.DEFINE_string("output_dir", "runs/reproduce_vit", "Parent folder of the runs.")
flags.DEFINE_integer("validation_examples", 5000, "Training images held out for validation.")
flags.DEFINE_integer("train_examples", None, "Train on this many images only (default: all).")
flags.DEFINE_integer("test_examples", None, "Test on this many images only (default: all).")
flags.DEFINE_integer("train_eval_examples", 10000, "Images train accuracy is measured on.")
flags.DEFINE_bool("jit_compile", True, "XLA; --nojit_compile starts sooner, runs slower.")
flags.DEFINE_bool(
    "report_only",
    False,
    "Train nothing: report the rows the runs under --output_dir hold so far (a run not "
    "finished is reported to the rounds it reached, and said so).",
)
FLAGS = flags.FLAGS
_FLAG_NAMES = (
    "seeds",
    "rewinds",
    "iterations",
    "eval_every",
    "rounds",
    "output_dir",
    "validation_examples",
    "train_examples",
    "test_examples",
    "train_eval_examples",
    "jit_compile",
)

#: Kernel groups, by a pattern of the mask keys the runner records.
GROUPS = (
    ("attention", r"/mha/"),
    ("MLP", r"/mlp/"),
    ("patch embedding", r"patch_embedding"),
    ("head", r"^output/"),
)


def configs():
    """`{(rewind, seed): ExperimentConfig}` in the order they run: by seed, then arm."""
    from lth_keras.experiments import preset

    out = {}
    for seed in FLAGS.seeds:
        for rewind in FLAGS.rewinds:
            out[(int(rewind), int(seed))] = preset(
                "vit",
                seed=int(seed),
                rounds=FLAGS.rounds,
                iterations=FLAGS.iterations,
                eval_every=FLAGS.eval_every,
                rewind_iteration=int(rewind),
                controls=("reinit",),
                validation_examples=FLAGS.validation_examples,
                train_examples=FLAGS.train_examples,
                test_examples=FLAGS.test_examples,
                train_eval_examples=FLAGS.train_eval_examples,
                jit_compile=FLAGS.jit_compile,
            )
    return out


def group_sizes():
    """Kernel entries per mask key of the `vit` model, and the key's group."""
    import lth_keras
    from lth_keras.experiments.models import build_model

    model = lth_keras.prunable(build_model("vit", (28, 28, 1)))
    sizes = {key: int(mask.size) for key, mask in lth_keras.get_masks(model).items()}
    group_of = {}
    for key in sizes:
        group_of[key] = next(name for name, pattern in GROUPS if re.search(pattern, key))
    return sizes, group_of


def group_shares(row, sizes, group_of):
    """The share of each group's kernel entries a row keeps, and of all masked entries."""
    kept, total = {}, {}
    for key, fraction in row["layers"].items():
        group = group_of[key]
        kept[group] = kept.get(group, 0) + fraction * sizes[key]
        total[group] = total.get(group, 0) + sizes[key]
    shares = {group: kept[group] / total[group] for group, _ in GROUPS}
    shares["attention + MLP"] = (kept["attention"] + kept["MLP"]) / (
        total["attention"] + total["MLP"]
    )
    shares["all masked"] = sum(kept.values()) / sum(total.values())
    return shares


def _stats(values):
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values)}


def summarize(runs, sizes, group_of):
    """Per arm and round: each seed's ticket and reinit numbers, and their mean/min/max."""
    out = {}
    for (rewind, seed), rows in runs.items():
        for row in rows:
            arm = out.setdefault(str(rewind), {})
            entry = arm.setdefault(row["round"], {"shares": group_shares(row, sizes, group_of)})
            kind = entry.setdefault(row["kind"], {"seeds": {}})
            kind["seeds"][seed] = {
                metric: row[metric]
                for metric in ("test_accuracy_es", "es_iteration", "test_accuracy_final")
            }
            kind["seeds"][seed]["wall_seconds"] = row["wall_seconds"]
    for arm in out.values():
        for entry in arm.values():
            for kind in ("ticket", "reinit"):
                if kind in entry:
                    seeds = entry[kind]["seeds"].values()
                    for metric in ("test_accuracy_es", "es_iteration", "test_accuracy_final"):
                        entry[kind][metric] = _stats([s[metric] for s in seeds])
    return out


def counts(summary):
    """The counts fixed before the runs, one line per arm and seed."""
    lines = []
    for rewind, arm in summary.items():
        dense = arm[0]["ticket"]["seeds"]
        for seed in dense:
            pruned = [r for r in sorted(arm) if seed in arm[r].get("reinit", {}).get("seeds", {})]
            ticket = {r: arm[r]["ticket"]["seeds"][seed]["test_accuracy_es"] for r in pruned}
            reinit = {r: arm[r]["reinit"]["seeds"][seed]["test_accuracy_es"] for r in pruned}
            above = [r for r in pruned if ticket[r] > reinit[r]]
            level = [r for r in pruned if ticket[r] >= dense[seed]["test_accuracy_es"]]
            lines.append(
                f"rewind {rewind}, seed {seed}: ticket above reinit in {len(above)} of "
                f"{len(pruned)} pruned rounds {above}; ticket at or above the dense network "
                f"({dense[seed]['test_accuracy_es']:.4f}) in {len(level)} of {len(pruned)} {level}"
            )
    return lines


def _cell(stats, digits):
    fmt = f"{{:.{digits}f}}"
    return f"{fmt.format(stats['mean'])} ({fmt.format(stats['min'])}-{fmt.format(stats['max'])})"


def markdown(summary, seeds):
    """Per arm: the seeds' table and the mean table; then the shares per group."""
    parts = []
    for rewind, arm in summary.items():
        head = "| round | attn+MLP left |" + "".join(
            f" seed {s} ticket | seed {s} reinit | seed {s} ticket ES | seed {s} reinit ES |"
            for s in seeds
        )
        lines = [f"### Rewind to iteration {rewind}: each seed", "", head]
        lines.append("|---:|---:|" + "---:|" * 4 * len(seeds))
        for round_, entry in sorted(arm.items()):
            cells = []
            for s in seeds:
                for metric, fmt in (("test_accuracy_es", "{:.4f}"), ("es_iteration", "{:.0f}")):
                    for kind in ("ticket", "reinit"):
                        value = entry.get(kind, {}).get("seeds", {}).get(s, {}).get(metric)
                        cells.append("" if value is None else fmt.format(value))
            left = 100 * entry["shares"]["attention + MLP"]
            lines.append(f"| {round_} | {left:.2f}% | " + " | ".join(cells) + " |")
        lines += ["", f"### Rewind to iteration {rewind}: mean (min-max) over seeds", ""]
        lines.append(
            "| round | attn+MLP left | ticket acc@ES | reinit acc@ES | ticket ES iter "
            "| reinit ES iter | ticket acc@end | reinit acc@end |"
        )
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for round_, entry in sorted(arm.items()):
            row = [f"{100 * entry['shares']['attention + MLP']:.2f}%"]
            for metric, digits in (
                ("test_accuracy_es", 4),
                ("es_iteration", 0),
                ("test_accuracy_final", 4),
            ):
                for kind in ("ticket", "reinit"):
                    row.append(_cell(entry[kind][metric], digits) if kind in entry else "")
            lines.append(f"| {round_} | " + " | ".join(row) + " |")
        parts.append("\n".join(lines))
    first = next(iter(summary.values()))
    names = [name for name, _ in GROUPS] + ["attention + MLP", "all masked"]
    lines = ["### Weights remaining per group (every arm and seed)", ""]
    lines.append("| round | " + " | ".join(names) + " |")
    lines.append("|---:|" + "---:|" * len(names))
    for round_, entry in sorted(first.items()):
        shares = entry["shares"]
        lines.append(f"| {round_} | " + " | ".join(f"{100 * shares[n]:.2f}%" for n in names) + " |")
    parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def plot(summary, metric, label, path):
    """One panel per arm: ticket and reinit against attention+MLP weights left, min-max bars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker

    arms = list(summary)
    figure, axes = pyplot.subplots(
        1, len(arms), figsize=(5.2 * len(arms), 4.4), dpi=100, sharey=True, squeeze=False
    )
    for axis, rewind in zip(axes[0], arms, strict=True):
        arm = summary[rewind]
        levels = [100 * arm[r]["shares"]["attention + MLP"] for r in sorted(arm)]
        for kind, name in (("ticket", "winning ticket"), ("reinit", "random reinit")):
            rounds = [r for r in sorted(arm) if kind in arm[r]]
            x = [100 * arm[r]["shares"]["attention + MLP"] for r in rounds]
            y = [arm[r][kind][metric]["mean"] for r in rounds]
            low = [arm[r][kind][metric]["mean"] - arm[r][kind][metric]["min"] for r in rounds]
            high = [arm[r][kind][metric]["max"] - arm[r][kind][metric]["mean"] for r in rounds]
            axis.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=name)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(ticker.FixedLocator(levels))
        axis.xaxis.set_major_formatter(ticker.FixedFormatter([f"{p:.1f}" for p in levels]))
        axis.xaxis.set_minor_locator(ticker.NullLocator())
        axis.tick_params(axis="x", labelrotation=45)
        axis.invert_xaxis()
        axis.grid(True, which="both", alpha=0.3)
        axis.set_xlabel("percent of attention + MLP weights remaining (log scale)")
        axis.set_title(f"rewind to iteration {rewind}", fontsize=10)
        axis.legend(fontsize=9)
    axes[0][0].set_ylabel(label)
    seeds = len(next(iter(next(iter(summary.values())).values()))["ticket"]["seeds"])
    figure.suptitle(
        f"Small ViT on MNIST: {label} as weights are pruned\n"
        f"mean of {seeds} seeds, bars from the lowest to the highest",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)


CURVES = (("dense", "ticket-r00"), ("ticket", "ticket-r{:02d}"), ("reinit", "reinit-r{:02d}"))


def curves(keys, last):
    """Validation accuracy per evaluation: `{rewind: {label: {iteration: [per seed]}}}`.

    Read from each run's evaluation records: the dense network (round 0) and
    round `last`'s ticket and reinit.
    """
    out = {}
    for rewind, seed in keys:
        records = os.path.join(FLAGS.output_dir, f"rewind{rewind}-seed{seed}", "records")
        arm = out.setdefault(str(rewind), {})
        for label, job in CURVES:
            with open(os.path.join(records, job.format(last) + ".json")) as f:
                for record in json.load(f):
                    points = arm.setdefault(label, {}).setdefault(record["iteration"], [])
                    points.append(record["val_accuracy"])
    return out


def curves_markdown(found, last, shares):
    lines = []
    for rewind, arm in found.items():
        left = f"{100 * shares[rewind]:.2f}%"
        lines += [
            f"### Rewind to iteration {rewind}: validation accuracy during training, "
            f"mean (min-max) over seeds",
            "",
            f"| iteration | dense | ticket, round {last} ({left}) | reinit, round {last} |",
            "|---:|---:|---:|---:|",
        ]
        for iteration in sorted({i for points in arm.values() for i in points}):
            cells = []
            for label, _ in CURVES:
                values = arm[label].get(iteration)
                cells.append(_cell(_stats(values), 4) if values else "")
            lines.append(f"| {iteration} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_curves(found, last, shares, path):
    """One panel per arm: validation accuracy against iteration, min-max over seeds shaded."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(
        1, len(found), figsize=(5.2 * len(found), 4.4), dpi=100, sharey=True, squeeze=False
    )
    for axis, (rewind, arm) in zip(axes[0], found.items(), strict=True):
        for label, _ in CURVES:
            x = sorted(arm[label])
            mean = [statistics.mean(arm[label][i]) for i in x]
            axis.plot(
                x, mean, marker="o", markersize=3, label=_curve_label(label, last, shares[rewind])
            )
            low, high = [min(arm[label][i]) for i in x], [max(arm[label][i]) for i in x]
            axis.fill_between(x, low, high, alpha=0.2)
        axis.set_xlabel("iteration")
        axis.set_title(f"rewind to iteration {rewind}", fontsize=10)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=9, loc="lower right")
    axes[0][0].set_ylabel("validation accuracy")
    figure.suptitle(
        "Small ViT on MNIST: validation accuracy while training\n"
        "mean of the seeds that finished, shaded from the lowest to the highest",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)


def _curve_label(label, last, share):
    if label == "dense":
        return "dense network (round 0)"
    name = "winning ticket" if label == "ticket" else "random reinit"
    return f"{name}, round {last} ({100 * share:.1f}% of attention + MLP)"


def _rows_so_far(run_dir):
    """The result rows a run directory holds (its metrics.jsonl), in job order."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _finished(rows):
    return {(row["round"], row["kind"]) for row in rows} >= {(FLAGS.rounds, "ticket")} | {
        (FLAGS.rounds, "reinit")
    }


def main(argv):
    del argv
    from lth_keras.experiments import runner as experiment

    began = time.monotonic()
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    if not FLAGS.report_only:
        with open(os.path.join(FLAGS.output_dir, "flags.json"), "w") as f:
            json.dump({name: FLAGS[name].value for name in _FLAG_NAMES}, f, indent=2)
    runs, partial = {}, []
    for (rewind, seed), config in configs().items():
        run_dir = os.path.join(FLAGS.output_dir, f"rewind{rewind}-seed{seed}")
        if FLAGS.report_only:
            rows = _rows_so_far(run_dir)
            if not rows:
                partial.append(f"rewind {rewind}, seed {seed}: not run")
                continue
            last = max(row["round"] for row in rows)
            if last < FLAGS.rounds or len(rows) < 2 * FLAGS.rounds + 1:
                partial.append(
                    f"rewind {rewind}, seed {seed}: {len(rows)} of {2 * FLAGS.rounds + 1} jobs "
                    f"(to round {last}; not finished)"
                )
            runs[(rewind, seed)] = rows
        else:
            runs[(rewind, seed)] = experiment.run(config, run_dir)
    sizes, group_of = group_sizes()
    summary = summarize(runs, sizes, group_of)
    seeds = [int(s) for s in FLAGS.seeds]
    finished = [key for key, rows in runs.items() if _finished(rows)]
    found = curves(finished, FLAGS.rounds)
    shares = {
        rewind: arm[FLAGS.rounds]["shares"]["attention + MLP"] for rewind, arm in summary.items()
    }
    text = markdown(summary, seeds) + "\n" + curves_markdown(found, FLAGS.rounds, shares)
    if partial:
        text += "\nRuns not finished (reported as far as they went):\n"
        text += "".join(f"- {line}\n" for line in partial) + "\n"
    text += "\n" + "\n".join(counts(summary)) + "\n\n"
    for (rewind, seed), rows in runs.items():
        minutes = sum(row["wall_seconds"] for row in rows) / 60
        text += f"Training time, rewind {rewind}, seed {seed}: {minutes:.1f} minutes.\n"
    wall = time.monotonic() - began
    text += f"\nThis invocation: {wall / 60:.1f} minutes of wall time.\n"
    print(text)
    with open(os.path.join(FLAGS.output_dir, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(FLAGS.output_dir, "summary.json"), "w") as f:
        summary_json = {"summary": summary, "curves": found, "counts": counts(summary)}
        json.dump({**summary_json, "wall_seconds": wall}, f)
    for metric, label, name in (
        ("test_accuracy_es", "test accuracy at early stopping", "accuracy"),
        ("es_iteration", "early-stopping iteration", "early_stopping"),
    ):
        plot(summary, metric, label, os.path.join(FLAGS.output_dir, f"vit_{name}.png"))
    plot_curves(found, FLAGS.rounds, shares, os.path.join(FLAGS.output_dir, "vit_curves.png"))


if __name__ == "__main__":
    app.run(main)
