"""Plots a reader can use without a caption: titles, tick labels alike, legends."""

import matplotlib
import pytest

from lth_keras.experiments import report

matplotlib.use("Agg")


@pytest.mark.parametrize(
    "percents, labels",
    [
        ([100.0, 80.0, 64.0, 51.2], ["100.0", "80.0", "64.0", "51.2"]),
        ([100.0, 8.6, 3.5], ["100.0", "8.6", "3.5"]),
        ([100.0, 1.15, 0.47], ["100.00", "1.15", "0.47"]),
        ([100.0, 0.047], ["100.000", "0.047"]),
    ],
    ids=["above-1", "one-digit", "below-1", "below-0.1"],
)
def test_level_labels_share_their_decimals(percents, labels):
    assert report.level_labels(percents) == labels


def _rows(runs=1):
    rows = []
    for round_, remaining in enumerate([1.0, 0.8, 0.64]):
        for kind in ("ticket", "reinit") if round_ else ("ticket",):
            row = {
                "round": round_,
                "kind": kind,
                "weights_remaining": remaining,
                "test_accuracy_es": 0.97,
                "es_iteration": 3000,
                "overlap@0.1": 0.5,
                "overlap@0.2": 0.6,
            }
            rows.append(row)
    return report.summarize([rows] * runs) if runs > 1 else rows


def _tick_labels(axes):
    return [label.get_text() for label in axes.get_xticklabels()]


def test_metric_plot_has_a_title_alike_ticks_and_a_legend():
    figure = report._metric_figure(_rows(), "test_accuracy_es")
    [axes] = figure.axes
    assert axes.get_title() == "Test accuracy at early stopping as weights are pruned"
    assert _tick_labels(axes) == ["100.0", "80.0", "64.0"]
    assert [t.get_text() for t in axes.get_legend().get_texts()] == [
        "winning ticket",
        "random reinit",
    ]


def test_summarized_plot_says_how_to_read_its_bars():
    figure = report._metric_figure(_rows(runs=2), "es_iteration")
    assert figure.axes[0].get_title() == (
        "Early-stopping iteration as weights are pruned\n"
        "mean of 2 runs, bars from the lowest to the highest"
    )


def test_overlap_plot_has_a_title_panels_and_one_legend_for_all():
    figure = report._overlap_figure(_rows(), ["overlap@0.1", "overlap@0.2"])
    assert figure.get_suptitle() == "Overlap R_p of each job's start and trained weights"
    assert [axes.get_title() for axes in figure.axes] == ["p = 0.1", "p = 0.2"]
    assert all(_tick_labels(axes) == ["100.0", "80.0", "64.0"] for axes in figure.axes)
    [legend] = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "winning ticket",
        "random reinit",
        "R_p = p (independent weights)",
    ]
    assert legend.get_texts()[0].get_fontsize() == 9
