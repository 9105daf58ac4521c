"""Results of experiments: metric rows as CSV and JSON lines, tables, plots.

A *row* is the result of one training job: a round of the ticket, or one
control trained at that round's sparsity. Rows are plain dicts with `round`,
`kind` (`"ticket"`, `"reinit"`, `"random"`), `weights_remaining`, `layers`
(fraction remaining per kernel), `iterations`, `es_iteration`,
`test_accuracy_es`, `test_accuracy_final`, `val_loss_min`,
`val_accuracy_es`, `train_accuracy` and `wall_seconds`; rows of newer
runs add `mask_iterations` (training steps spent before the job's mask was
drawn), early-bird runs `early_bird_iteration`, `early_bird_distance` and
`early_bird_distances` (see `lth_keras.experiments.early_bird`).
"""

import csv
import io
import json
import math
import re
import statistics

from lth_keras.experiments.arms import ARMS

__all__ = [
    "csv_text",
    "job_line",
    "jsonl_text",
    "plot",
    "sort_rows",
    "summarize",
    "table",
    "write_reports",
]


def _kinds():
    """Arm names in display order: the ticket, then controls as registered."""
    return ARMS.names()


def _label(kind):
    return ARMS.get(kind).label


_SCALARS = (
    "round",
    "kind",
    "weights_remaining",
    "iterations",
    "es_iteration",
    "test_accuracy_es",
    "test_accuracy_final",
    "val_loss_min",
    "val_accuracy_es",
    "train_accuracy",
    "wall_seconds",
)
#: Scalar columns written when some row has them (rows of older runs lack them).
_OPTIONAL = ("mask_iterations", "early_bird_iteration", "early_bird_distance")


def sort_rows(rows):
    """Rows ordered by round, then ticket before its controls.

    Args:
        rows: Metric rows (dicts with `round` and `kind`).

    Returns:
        A new list, sorted.

    Example:

    ```python
    sort_rows([{"round": 1, "kind": "reinit"}, {"round": 1, "kind": "ticket"}])
    # [{"round": 1, "kind": "ticket"}, {"round": 1, "kind": "reinit"}]
    ```
    """
    kinds = _kinds()
    return sorted(rows, key=lambda row: (row["round"], kinds.index(row["kind"])))


def jsonl_text(rows):
    """Rows as JSON lines (one object per line, all fields, sorted keys).

    Args:
        rows: Metric rows.

    Returns:
        The text, rows ordered as by `sort_rows`.

    Example:

    ```python
    open("metrics.jsonl", "w").write(jsonl_text(rows))
    ```
    """
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in sort_rows(rows))


def csv_text(rows, first=()):
    """Rows as CSV: the scalar fields, R_p per `p`, then one `remaining:<kernel>` column each.

    `mask_iterations` and the early-bird scalars follow `wall_seconds` when
    some row has them; a missing or `None` value is an empty cell.

    Args:
        rows: Metric rows.
        first: Fields written before the others, e.g. `("trial",)` for the
            rows of several trials. Defaults to `()`.

    Example:

    ```python
    open("metrics.csv", "w").write(csv_text(rows))
    ```
    """
    rows = sort_rows(rows)
    kernels = sorted({key for row in rows for key in row["layers"]})
    optional = [key for key in _OPTIONAL if any(key in row for row in rows)]
    overlaps = overlap_keys(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*first, *_SCALARS, *optional, *overlaps, *(f"remaining:{k}" for k in kernels)])
    for row in rows:
        writer.writerow(
            [row[key] for key in (*first, *_SCALARS)]
            + ["" if row.get(key) is None else row[key] for key in (*optional, *overlaps)]
            + [row["layers"].get(k, "") for k in kernels]
        )
    return out.getvalue()


def overlap_keys(rows):
    """The R_p keys (`"overlap@0.1"`, ...) present in rows, by increasing `p`."""
    keys = {key for row in rows for key in row if re.fullmatch(r"overlap@[\d.]+", key)}
    return sorted(keys, key=lambda key: float(key.split("@")[1]))


def summarize(runs):
    """Aggregates rows of several runs (seeds) by round and kind.

    Args:
        runs: A list of row lists, one per run.

    Returns:
        A list of dicts with `round`, `kind`, `weights_remaining`, `n` and,
        for `test_accuracy_es`, `test_accuracy_final` and `es_iteration`,
        the mean, min and max over runs (keys `<metric>`, `<metric>_min`,
        `<metric>_max`).

    Example:

    ```python
    summarize([rows_seed0, rows_seed1])
    ```
    """
    groups = {}
    for rows in runs:
        for row in rows:
            groups.setdefault((row["round"], row["kind"]), []).append(row)
    overlaps = overlap_keys([row for rows in runs for row in rows])
    summary = []
    for (round_, kind), group in sorted(
        groups.items(), key=lambda g: (g[0][0], _kinds().index(g[0][1]))
    ):
        entry = {
            "round": round_,
            "kind": kind,
            "n": len(group),
            "weights_remaining": statistics.mean(r["weights_remaining"] for r in group),
        }
        for metric in ("test_accuracy_es", "test_accuracy_final", "es_iteration", *overlaps):
            values = [r[metric] for r in group if metric in r]
            if not values:
                continue
            entry[metric] = statistics.mean(values)
            entry[f"{metric}_min"], entry[f"{metric}_max"] = min(values), max(values)
        summary.append(entry)
    return summary


def table(rows):
    """A text table: one line per round, the ticket and its controls side by side.

    Args:
        rows: Rows of one run, or the output of `summarize`.

    Returns:
        The table as a string.

    Example:

    ```python
    print(table(rows))
    ```
    """
    kinds = [k for k in _kinds() if any(r["kind"] == k for r in rows)]
    group = f"{'acc@ES':>7} {'ES iter':>8} {'acc@end':>7}"
    top = f"{'':>5} {'':>10}" + "".join(f" | {_label(k):^{len(group)}}" for k in kinds)
    header = f"{'round':>5} {'remaining':>10}" + f" | {group}" * len(kinds)
    lines = [top.rstrip(), header, "-" * len(header)]
    by_round = {}
    for row in rows:
        by_round.setdefault(row["round"], {})[row["kind"]] = row
    for round_, entries in sorted(by_round.items()):
        first = entries.get("ticket") or next(iter(entries.values()))
        line = f"{round_:>5} {100 * first['weights_remaining']:>9.2f}%"
        for kind in kinds:
            row = entries.get(kind)
            if row is None:
                line += f" | {'':>{len(group)}}"
            else:
                line += (
                    f" | {row['test_accuracy_es']:>7.4f} {row['es_iteration']:>8.0f} "
                    f"{row['test_accuracy_final']:>7.4f}"
                )
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


_PLOT_LABELS = {
    "test_accuracy_es": "test accuracy at early stopping",
    "test_accuracy_final": "test accuracy at the end of training",
    "es_iteration": "early-stopping iteration",
}


def level_labels(percents):
    """Labels of weights-remaining levels (percent), all with the same decimals.

    One decimal, or as many as the smallest level needs for two significant
    digits, so that `100.0` stands beside `80.0` and `0.47` beside `100.00`.

    Args:
        percents: The levels, in percent.

    Returns:
        A list of strings, one per level.

    Example:

    ```python
    level_labels([100, 80.0, 51.2, 3.6])  # ['100.0', '80.0', '51.2', '3.6']
    level_labels([100, 0.47])  # ['100.00', '0.47']
    ```
    """
    smallest = min(percents)
    decimals = 1 if smallest >= 1 else 1 - math.floor(math.log10(smallest))
    return [f"{p:.{decimals}f}" for p in percents]


def _label_levels(axes, levels, most=12):
    """Ticks at the levels reached (thinned to at most `most`), labelled alike."""
    from matplotlib import ticker

    if len(levels) > most:
        step = -(-len(levels) // most)
        levels = levels[::step] if levels[-1] in levels[::step] else [*levels[::step], levels[-1]]
    axes.xaxis.set_major_locator(ticker.FixedLocator(levels))
    axes.xaxis.set_major_formatter(ticker.FixedFormatter(level_labels(levels)))
    axes.xaxis.set_minor_locator(ticker.NullLocator())
    axes.tick_params(axis="x", labelrotation=45 if len(levels) > 6 else 0)


def _plot_arms(axes, rows, metric):
    """One line per arm of `metric` against percent remaining; min-max bars from `summarize`."""
    for kind in _kinds():
        points = sorted(
            (r for r in rows if r["kind"] == kind and metric in r),
            key=lambda r: -r["weights_remaining"],
        )
        if not points:
            continue
        x = [100 * r["weights_remaining"] for r in points]
        y = [r[metric] for r in points]
        if f"{metric}_min" in points[0]:
            low = [r[metric] - r[f"{metric}_min"] for r in points]
            high = [r[f"{metric}_max"] - r[metric] for r in points]
            axes.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=_label(kind))
        else:
            axes.plot(x, y, marker="o", label=_label(kind))


def _runs_note(rows):
    """How to read error bars, a title's second line: `"\nmean of 2 runs, ..."`, or `""`."""
    counts = {row["n"] for row in rows if "n" in row}
    if not counts or counts == {1}:
        return ""
    runs = "-".join(str(n) for n in sorted(counts))
    return f"\nmean of {runs} runs, bars from the lowest to the highest"


def _level_axis(axes, levels, most):
    axes.set_xscale("log")
    _label_levels(axes, levels, most)
    axes.invert_xaxis()
    axes.set_xlabel("percent of weights remaining (log scale)")
    axes.grid(True, which="both", alpha=0.3)


def _metric_figure(rows, metric):
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6.4, 4.4), dpi=100)
    _plot_arms(axes, rows, metric)
    _level_axis(axes, sorted({100 * r["weights_remaining"] for r in rows}, reverse=True), 12)
    axes.set_ylabel(_PLOT_LABELS[metric])
    title = _PLOT_LABELS[metric].capitalize() + " as weights are pruned"
    axes.set_title(title + _runs_note(rows), fontsize=11)
    axes.legend(fontsize=9)
    figure.tight_layout()
    return figure


def plot(rows, metric, path):
    """Plots `metric` against the percentage of weights remaining, as a PNG.

    With `metric="test_accuracy_es"` and `"es_iteration"` these are the
    analogues of the paper's Figures 3 and 4: one line per kind (ticket,
    random reinit, random mask), weights remaining on a log scale decreasing
    to the right, a title saying what is plotted. With rows from
    `summarize`, error bars show the min and max over runs (the title says
    so).

    Args:
        rows: Rows of one run, or the output of `summarize`.
        metric: `"test_accuracy_es"`, `"test_accuracy_final"` or
            `"es_iteration"`.
        path: Output PNG path.

    Raises:
        ValueError: If `metric` is not one of those.

    Example:

    ```python
    plot(rows, "test_accuracy_es", "plots/accuracy.png")
    ```
    """
    if metric not in _PLOT_LABELS:
        raise ValueError(
            f"Received an invalid value for `metric`, expected one of {list(_PLOT_LABELS)}. "
            f"Received: metric={metric!r}"
        )
    _save(_metric_figure, rows, metric, path=path)


def _save(make, *args, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure = make(*args)
    figure.savefig(path, format="png")
    pyplot.close(figure)


def job_line(row):
    """One line about a finished job, as the runner prints it.

    Example:

    ```python
    print(job_line(row))
    ```
    """
    drawn = row.get("early_bird_iteration")
    return (
        f"{row['kind']:>6} round {row['round']:2d} | "
        f"{100 * row['weights_remaining']:6.2f}% remaining | "
        f"test acc {row['test_accuracy_es']:.4f} at ES iteration "
        f"{row['es_iteration']} | {row['test_accuracy_final']:.4f} at the end | "
        + (f"next mask drawn at iteration {drawn} | " if drawn is not None else "")
        + f"{row['wall_seconds']:.0f} s"
    )


def write_reports(run_dir, rows, plots=True):
    """Writes `metrics.csv`, `metrics.jsonl`, `summary.txt` and the plots of a run.

    Args:
        run_dir: The run's `RunDir`.
        rows: Every finished job's row.
        plots: Whether to draw the plots too. Defaults to `True`.

    Example:

    ```python
    write_reports(run_dir, list(run_dir.progress["done"].values()))
    ```
    """
    run_dir.write_bytes("metrics.csv", csv_text(rows).encode())
    run_dir.write_bytes("metrics.jsonl", jsonl_text(rows).encode())
    run_dir.write_bytes("summary.txt", table(sort_rows(rows)).encode())
    if not plots:
        return
    for metric, name in (("test_accuracy_es", "accuracy"), ("es_iteration", "early_stopping")):
        run_dir.save_with(f"plots/{name}.png", lambda path, metric=metric: plot(rows, metric, path))
    if overlap_keys(rows):
        run_dir.save_with("plots/overlap.png", lambda path: plot_overlap(rows, path))


def plot_overlap(rows, path):
    """Plots R_p against the percentage of weights remaining, one panel per `p`, as a PNG.

    Each panel has a line per arm (ticket, controls) and the line R_p = p
    that independent weights would give (Liu et al. 2021); one legend below
    the panels names them, and a title says what is plotted. With rows from
    `summarize`, error bars show the min and max over runs.

    Args:
        rows: Rows of one run, or the output of `summarize`.
        path: Output PNG path.

    Raises:
        ValueError: If no row holds R_p.

    Example:

    ```python
    plot_overlap(rows, "plots/overlap.png")
    ```
    """
    keys = overlap_keys(rows)
    if not keys:
        raise ValueError("Received rows without R_p values (keys 'overlap@<p>').")
    _save(_overlap_figure, rows, keys, path=path)


def _overlap_figure(rows, keys):
    from matplotlib import pyplot

    figure, panels = pyplot.subplots(
        1, len(keys), figsize=(3.2 * len(keys), 4.0), dpi=100, sharey=True, squeeze=False
    )
    levels = sorted({100 * r["weights_remaining"] for r in rows}, reverse=True)
    for axes, key in zip(panels[0], keys, strict=True):
        p = float(key.split("@")[1])
        _plot_arms(axes, rows, key)
        axes.axhline(p, color="gray", linestyle="--", label="R_p = p (independent weights)")
        _level_axis(axes, levels, 8)
        axes.set_title(f"p = {p:g}", fontsize=10)
    panels[0][0].set_ylabel("R_p(start, trained)")
    figure.suptitle(
        "Overlap R_p of each job's start and trained weights" + _runs_note(rows),
        fontsize=11,
    )
    handles, labels = panels[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    return figure
