"""Cheaper tickets and other ways to draw them, side by side on real MNIST (issue 13).

LeNet-300-100, the runner's default fast settings, the same seeds for every
method. Per seed, two runs:

- full IMP (15 rounds at 20%, output layer 10%), with the controls trained at
  the rounds that reach 21.1%, 7.0% and 3.6% of weights remaining: the
  re-initialised ticket, a random mask, the shuffled ticket and masks found
  at initialisation by SNIP, GraSP and SynFlow (global, the ticket's count);
- early-bird IMP: the same, but every round that only finds the next mask
  stops at its early-bird point (window 5, threshold 0.1), and the rounds
  at those three levels train in full for evaluation (`eval_rounds`).

Writes, under `--output_dir`, a run directory per (run, seed) and
`summary.md` (the tables), and the plots `efficiency_accuracy.png` and
`efficiency_cost.png` under `--img_dir`. The seconds SNIP, GraSP and SynFlow
take to score are measured here (the runner times training only).

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python benchmarks/compare_methods.py

Runs resume: rerun the same command after an interruption.
"""

import json
import os
import statistics
import time

from absl import app, flags

flags.DEFINE_list("seeds", ["0", "1"], "Seeds, one pair of runs each.")
flags.DEFINE_integer("iterations", 2500, "Training steps per job.")
flags.DEFINE_integer("eval_every", 100, "Steps between evaluations (and early-bird checks).")
flags.DEFINE_list("levels", ["7", "12", "15"], "Rounds compared (21.1%, 7.0%, 3.6% remaining).")
flags.DEFINE_integer("window", 5, "Early-bird window.")
flags.DEFINE_float("threshold", 0.1, "Early-bird threshold.")
flags.DEFINE_string("output_dir", "runs/compare_methods", "Parent folder of the runs.")
flags.DEFINE_string("img_dir", "docs/img", "Folder of the plots.")
FLAGS = flags.FLAGS

CONTROLS = ("reinit", "random", "shuffle", "snip", "grasp", "synflow")
METHODS = (
    ("imp", "IMP ticket"),
    ("early_bird", "early-bird IMP ticket"),
    ("snip", "SNIP"),
    ("grasp", "GraSP"),
    ("synflow", "SynFlow"),
    ("random", "random mask"),
    ("shuffle", "shuffled ticket"),
    ("reinit", "re-initialised ticket"),
)


def configs(seed):
    from lth_keras.experiments import preset

    levels = tuple(int(r) for r in FLAGS.levels)
    shared = dict(
        rounds=max(levels), iterations=FLAGS.iterations, eval_every=FLAGS.eval_every, seed=seed
    )
    imp = preset("lenet", controls=CONTROLS, control_rounds=levels, **shared)
    early = preset(
        "lenet",
        early_bird=True,
        early_bird_window=FLAGS.window,
        early_bird_threshold=FLAGS.threshold,
        eval_rounds=tuple(r for r in levels if r < max(levels)),
        **shared,
    )
    return {"imp": imp, "early_bird": early}


def score_seconds(levels_remaining):
    """Seconds SNIP, GraSP and SynFlow take to prune a fresh LeNet to each level."""
    import numpy as np

    from lth_keras import prunable, saliency
    from lth_keras.experiments import data, models, training
    from lth_keras.experiments.arms import AT_INIT_EXAMPLES_PER_CLASS

    config = configs(0)["imp"]
    splits = data.load("mnist", batch_size=config.batch_size, seed=0)
    count = AT_INIT_EXAMPLES_PER_CLASS * splits.num_classes
    xs, ys = zip(*splits.train().take(-(-count // 60)).as_numpy_iterator(), strict=True)
    batch = (np.concatenate(xs)[:count], np.concatenate(ys)[:count])
    seconds = {}
    for name, score in (
        ("snip", lambda: saliency.Snip(data=batch)),
        ("grasp", lambda: saliency.GraSP(data=batch)),
        ("synflow", saliency.SynFlow),
    ):
        for round_, remaining in levels_remaining.items():
            model = training.compile_for(
                prunable(models.build_model("lenet", splits.input_shape, 10)), config
            )
            began = time.perf_counter()
            saliency.prune_at_init(model, score(), 1.0 - remaining, scope="global")
            seconds[(name, round_)] = time.perf_counter() - began
    return seconds


def rows_by_method(runs, levels):
    """`{(method, round): [row per seed]}`."""
    out = {}
    for rows in runs["imp"]:
        for row in rows:
            if row["round"] in levels:
                method = "imp" if row["kind"] == "ticket" else row["kind"]
                out.setdefault((method, row["round"]), []).append(row)
    for rows in runs["early_bird"]:
        for row in rows:
            if row["round"] in levels and row["kind"] == "ticket":
                out.setdefault(("early_bird", row["round"]), []).append(row)
    return out


def mask_seconds(rows, round_, early):
    """Training seconds of the ticket rounds before `round_` up to their draws."""
    key = "early_bird_seconds" if early else "wall_seconds"
    return sum(
        r.get(key, r["wall_seconds"]) for r in rows if r["round"] < round_ and r["kind"] == "ticket"
    )


def _cell(values, digits):
    mean = statistics.mean(values)
    if len(values) == 1 or min(values) == max(values):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def tables(runs, levels, scoring):
    grouped = rows_by_method(runs, levels)
    lines = []
    for round_ in levels:
        remaining = statistics.mean(r["weights_remaining"] for r in grouped[("imp", round_)])
        lines += [
            f"### {100 * remaining:.1f}% of weights remaining (round {round_})",
            "",
            "| method | test acc. at ES | ES iteration | iterations to get the mask | "
            "seconds to get the mask | seconds of the job |",
            "|---|---|---|---|---|---|",
        ]
        for method, label in METHODS:
            rows = grouped.get((method, round_), [])
            if not rows:
                continue
            if method in ("snip", "grasp", "synflow"):
                find = [scoring[(method, round_)]]
            else:
                early = method == "early_bird"
                find = [
                    mask_seconds(seed_rows, round_, early)
                    for seed_rows in runs["early_bird" if early else "imp"]
                ]
            lines.append(
                f"| {label} | {_cell([100 * r['test_accuracy_es'] for r in rows], 2)} | "
                f"{_cell([r['es_iteration'] for r in rows], 0)} | "
                f"{_cell([r['mask_iterations'] for r in rows], 0)} | {_cell(find, 1)} | "
                f"{_cell([r['wall_seconds'] for r in rows], 1)} |"
            )
        lines.append("")
    return lines


def early_bird_table(runs, final):
    lines = [
        "| seed | IMP iterations | early-bird iterations | ratio | IMP acc. at ES | "
        "early-bird acc. at ES | difference (points) |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios, losses = [], []
    for seed, imp, early in zip(FLAGS.seeds, runs["imp"], runs["early_bird"], strict=True):
        a = next(r for r in imp if r["round"] == final and r["kind"] == "ticket")
        b = next(r for r in early if r["round"] == final and r["kind"] == "ticket")
        ratio = a["mask_iterations"] / b["mask_iterations"]
        loss = 100 * (a["test_accuracy_es"] - b["test_accuracy_es"])
        ratios.append(ratio)
        losses.append(loss)
        lines.append(
            f"| {seed} | {a['mask_iterations']} | {b['mask_iterations']} | {ratio:.2f}x | "
            f"{100 * a['test_accuracy_es']:.2f} | {100 * b['test_accuracy_es']:.2f} | "
            f"{-loss:+.2f} |"
        )
    holds = min(ratios) >= 3 and max(losses) <= 0.2
    verdict = (
        f"Early-bird IMP used {min(ratios):.2f}x to {max(ratios):.2f}x fewer training iterations "
        f"to reach the ticket (mean {statistics.mean(ratios):.2f}x) and lost "
        f"{min(losses):+.2f} to {max(losses):+.2f} points of test accuracy at early stopping "
        f"(mean {statistics.mean(losses):+.2f}). The goal (>= 3x fewer iterations, <= 0.2 "
        f"points lost, for every seed) {'holds' if holds else 'does not hold'}."
    )
    return lines, verdict


def plots(runs, levels, img_dir):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from lth_keras.experiments.report import level_labels

    grouped = rows_by_method(runs, levels)
    figure, axes = pyplot.subplots(figsize=(7.0, 4.4), dpi=100)
    remaining = [
        100 * statistics.mean(r["weights_remaining"] for r in grouped[("imp", level)])
        for level in levels
    ]
    for method, label in METHODS:
        accuracy = [[100 * r["test_accuracy_es"] for r in grouped[(method, lv)]] for lv in levels]
        mean = [statistics.mean(a) for a in accuracy]
        error = [[m - min(a) for m, a in zip(mean, accuracy, strict=True)]]
        error.append([max(a) - m for m, a in zip(mean, accuracy, strict=True)])
        axes.errorbar(remaining, mean, yerr=error, marker="o", capsize=3, label=label)
    axes.set_xscale("log")
    axes.set_xticks(remaining, level_labels(remaining))
    axes.minorticks_off()
    axes.invert_xaxis()
    axes.set_xlabel("percent of weights remaining")
    axes.set_ylabel("test accuracy at early stopping (%)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(img_dir, "efficiency_accuracy.png"))
    pyplot.close(figure)

    final = levels[-1]
    figure, axes = pyplot.subplots(figsize=(7.0, 4.4), dpi=100)
    for method, label in METHODS:
        rows = grouped[(method, final)]
        spent = [r["mask_iterations"] + r["iterations"] for r in rows]
        accuracy = [100 * r["test_accuracy_es"] for r in rows]
        axes.scatter(spent, accuracy, label=label)
    axes.set_xscale("log")
    axes.set_xlabel("training iterations: to get the mask, plus training it")
    axes.set_ylabel("test accuracy at early stopping (%)")
    axes.set_title(f"{100 * statistics.mean(r['weights_remaining'] for r in rows):.1f}% remaining")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(img_dir, "efficiency_cost.png"))
    pyplot.close(figure)


def main(argv):
    del argv
    from lth_keras.experiments import run

    levels = [int(r) for r in FLAGS.levels]
    runs = {"imp": [], "early_bird": []}
    began = time.perf_counter()
    for seed in FLAGS.seeds:
        for name, config in configs(int(seed)).items():
            folder = os.path.join(FLAGS.output_dir, f"{name}-seed{seed}")
            runs[name].append(run(config, folder, verbose=1))
    remaining = {
        r["round"]: r["weights_remaining"]
        for r in runs["imp"][0]
        if r["round"] in levels and r["kind"] == "ticket"
    }
    scoring = score_seconds(remaining)
    text = [
        "# Ways to draw a ticket: LeNet-300-100 on MNIST",
        "",
        f"Seeds {', '.join(FLAGS.seeds)}; {FLAGS.iterations} iterations per job, evaluation "
        f"every {FLAGS.eval_every}; mean (min-max) over seeds. This invocation took "
        f"{time.perf_counter() - began:.0f} s (finished runs are read back, not retrained).",
        "",
        *tables(runs, levels, scoring),
    ]
    lines, verdict = early_bird_table(runs, levels[-1])
    text += [f"### Early-bird vs full IMP: the ticket at round {levels[-1]}", ""]
    text += lines + ["", verdict, ""]
    os.makedirs(FLAGS.img_dir, exist_ok=True)
    plots(runs, levels, FLAGS.img_dir)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    with open(os.path.join(FLAGS.output_dir, "summary.md"), "w") as f:
        f.write("\n".join(text) + "\n")
    with open(os.path.join(FLAGS.output_dir, "scoring_seconds.json"), "w") as f:
        json.dump({f"{k[0]}@{k[1]}": v for k, v in scoring.items()}, f, indent=2)
    print("\n".join(text))


if __name__ == "__main__":
    app.run(main)
