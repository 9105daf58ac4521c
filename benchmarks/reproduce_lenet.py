"""Reproduce the LeNet-300-100 results of Frankle & Carbin (2019) on real MNIST.

Iterative magnitude pruning with the paper's hyperparameters (Adam 1.2e-3,
batch 60, 20% per round for the hidden layers and 10% for the output layer,
rewinding to the initial weights), the randomly re-initialised control at
every round, for several seeds; only the training length per round is cut
to what a CPU allows (`--iterations`, the paper uses 50,000). Prints the
table of both kinds over seeds, writes plots with min-max bars, and checks
the paper's claims (Figures 3 and 4 of arXiv 1803.03635):

- winning tickets at 51.3-21.1% remaining reach their early-stopping
  iteration earlier and a higher test accuracy than the dense network;
- at 3.6% they still match the dense network's test accuracy;
- randomly re-initialised networks fall behind as sparsity grows.

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python benchmarks/reproduce_lenet.py

Runs resume: rerun the same command after an interruption.
"""

import json
import os

from absl import app, flags

flags.DEFINE_list("seeds", ["0", "1"], "Seeds, one run each.")
flags.DEFINE_integer("iterations", 20000, "Training steps per round (the paper: 50,000).")
flags.DEFINE_integer("eval_every", 1000, "Steps between evaluations.")
flags.DEFINE_integer("rounds", 15, "Pruning rounds; 15 reach 3.6% of weights remaining.")
flags.DEFINE_string("output_dir", "runs/reproduce_lenet", "Parent folder of the runs.")
FLAGS = flags.FLAGS

# Paper's rounds of interest: remaining weights after r rounds of LeNet.
LEVELS = {3: "51.3%", 7: "21.1%", 12: "7.0%", 15: "3.6%", 18: "1.9%"}


def claims(summary):
    """Checks the paper's claims on the seed-averaged summary rows."""
    rows = {(r["round"], r["kind"]): r for r in summary}
    dense = rows[(0, "ticket")]
    lines = []
    for round_, level in LEVELS.items():
        ticket, reinit = rows.get((round_, "ticket")), rows.get((round_, "reinit"))
        if ticket is None:
            continue
        acc, es = ticket["test_accuracy_es"], ticket["es_iteration"]
        higher = "higher" if acc > dense["test_accuracy_es"] else "NOT higher"
        earlier = "earlier" if es < dense["es_iteration"] else "NOT earlier"
        line = (
            f"{level:>6} remaining (round {round_:2d}): ticket acc {acc:.4f} vs dense "
            f"{dense['test_accuracy_es']:.4f} ({higher}); ES iteration {es:.0f} vs dense "
            f"{dense['es_iteration']:.0f} ({earlier})"
        )
        if reinit is not None:
            line += (
                f"; reinit acc {reinit['test_accuracy_es']:.4f}, ES {reinit['es_iteration']:.0f}"
            )
        lines.append(line)
    return "\n".join(lines)


def markdown(summary):
    """The seed-averaged table as Markdown, with min-max over seeds, for docs/RESULTS.md."""

    def cell(row, metric, digits):
        if row is None:
            return ""
        fmt = f"{{:.{digits}f}}"
        mean, low, high = (row[metric], row[f"{metric}_min"], row[f"{metric}_max"])
        return f"{fmt.format(mean)} ({fmt.format(low)}-{fmt.format(high)})"

    rows = {(r["round"], r["kind"]): r for r in summary}
    lines = [
        "| round | remaining | ticket acc@ES | ticket ES iter | ticket acc@end "
        "| reinit acc@ES | reinit ES iter | reinit acc@end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for round_ in sorted({r["round"] for r in summary}):
        ticket, reinit = rows.get((round_, "ticket")), rows.get((round_, "reinit"))
        lines.append(
            f"| {round_} | {100 * ticket['weights_remaining']:.2f}% "
            f"| {cell(ticket, 'test_accuracy_es', 4)} | {cell(ticket, 'es_iteration', 0)} "
            f"| {cell(ticket, 'test_accuracy_final', 4)} "
            f"| {cell(reinit, 'test_accuracy_es', 4)} | {cell(reinit, 'es_iteration', 0)} "
            f"| {cell(reinit, 'test_accuracy_final', 4)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    from lth_keras.experiments import preset, report
    from lth_keras.experiments import runner as experiment

    runs = []
    for seed in FLAGS.seeds:
        config = preset(
            "lenet",
            seed=int(seed),
            rounds=FLAGS.rounds,
            iterations=FLAGS.iterations,
            eval_every=FLAGS.eval_every,
            controls=("reinit",),
            jit_compile=True,
            steps_per_execution=100,
        )
        runs.append(experiment.run(config, os.path.join(FLAGS.output_dir, f"seed{seed}")))
    summary = report.summarize(runs)
    text = report.table(summary) + "\n" + claims(summary) + "\n"
    print(f"\nMean over seeds {FLAGS.seeds} ({FLAGS.iterations} iterations per round):")
    print(text)
    with open(os.path.join(FLAGS.output_dir, "summary.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(FLAGS.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(FLAGS.output_dir, "summary.md"), "w") as f:
        f.write(markdown(summary))
    for metric, name in (("test_accuracy_es", "accuracy"), ("es_iteration", "early_stopping")):
        report.plot(summary, metric, os.path.join(FLAGS.output_dir, f"{name}.png"))


if __name__ == "__main__":
    app.run(main)
