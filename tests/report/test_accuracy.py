"""Accuracy figures of a trained study, read through matplotlib objects; the rank correlations
in their titles and on the page checked against scipy.stats computed here."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import stats

from graphpai.errors import DataError
from graphpai.report.accuracy import (accuracy_column, accuracy_figures,
                                      accuracy_vs_compression, metric_vs_accuracy)
from graphpai.report.html import study_page


@pytest.fixture
def trained(make):
    return trained_table(make)


def trained_table(make_table):
    """conftest's table with hand-made accuracies and effective nodes that vary within a
    compression: accuracy 0.9 - 0.1 x - 0.02 seed (+0.05 for MiCA), 0.1 where disconnected;
    effective nodes 700 - 100 x + 7 seed + 3 [rpi] + 11 [igq]."""
    rows = make_table(paths=True)
    for r in rows:
        x = r["log10_compression"]
        acc = 0.9 - 0.1 * x - 0.02 * r["seed"] + (0.05 if r["method"] == "mica" else 0.0)
        r["best_test_acc"] = 0.1 if r["channel_disconnected"] else acc
        r["final_test_acc"] = r["best_test_acc"] - 0.01
        if not r["channel_disconnected"]:
            r["effective_nodes"] = (700 - 100 * x + 7 * r["seed"] + 3 * (r["method"] == "rpi")
                                    + 11 * (r["budget"] == "igq"))
    return rows


def series(ax):
    return {line.get_gid(): line for line in ax.get_lines()
            if (line.get_gid() or "").startswith("series:")}


def test_accuracy_column_prefers_best_test(trained, make):
    rows, make_table = trained, make
    assert accuracy_column(rows) == "best_test_acc"
    assert accuracy_column([{k: v for k, v in r.items() if k != "best_test_acc"}
                            for r in rows]) == "final_test_acc"
    assert accuracy_column(make_table()) is None
    assert accuracy_figures(make_table()) == {}
    with pytest.raises(DataError, match="--train"):
        accuracy_vs_compression(make_table())


def test_accuracy_vs_corrected_compression(trained):
    rows = trained
    fig = accuracy_vs_compression(rows)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    lines = series(ax)
    assert sorted(lines) == ["series:mica:erk", "series:mica:igq", "series:rpi:erk",
                             "series:rpi:igq"]
    # RPI-ERK: mean over the two seeds of N/|F| and of the accuracy at each compression
    x, y = lines["series:rpi:erk"].get_data()
    for i, c in enumerate((1, 2, 3, 4)):
        group = [r for r in rows if r["method"] == "rpi" and r["budget"] == "erk"
                 and r["log10_compression"] == c]
        assert x[i] == pytest.approx(np.mean([r["channel_corrected_compression"] for r in group]))
        assert y[i] == pytest.approx(0.9 - 0.1 * c - 0.01 + 0.0)
    # RPI-IGQ is disconnected at 10^4: three points on the line, two x's (one per seed) on the
    # right edge at their accuracy
    assert len(lines["series:rpi:igq"].get_xdata()) == 3
    (cut,) = [line for line in ax.get_lines() if line.get_gid() == "disconnected"]
    assert list(cut.get_xdata()) == [1.0, 1.0]
    assert list(cut.get_ydata()) == [0.1, 0.1]
    assert len(ax.collections) == 4  # a min-max band per series (two seeds)


def test_metric_vs_accuracy_panels_and_correlations(trained):
    rows = trained
    fig = metric_vs_accuracy(rows, "effective_nodes")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 4
    for ax, c in zip(panels, (1, 2, 3, 4)):
        group = [r for r in rows if r["log10_compression"] == c]
        finite = [r for r in group if r["effective_nodes"] is not None]
        drawn = sum(len(line.get_xdata()) for line in series(ax).values())
        assert drawn == len(finite) == 8  # a disconnected point has 0 effective nodes
        xs = [r["effective_nodes"] for r in finite]
        ys = [r["best_test_acc"] for r in finite]
        tau, rho = stats.kendalltau(xs, ys)[0], stats.spearmanr(xs, ys)[0]
        got = re.match(r"10\^(\S+): τ = (\S+), ρ = (\S+) \(n = (\d+)\)", ax.get_title())
        assert got, ax.get_title()
        assert float(got.group(1)) == c and int(got.group(4)) == len(finite)
        assert float(got.group(2)) == pytest.approx(tau, abs=0.005)
        assert float(got.group(3)) == pytest.approx(rho, abs=0.005)


def test_non_finite_metric_is_marked_and_tiny_panels_say_so(trained):
    rows = trained
    fig = metric_vs_accuracy(rows, "log10_paths")
    last = [ax for ax in fig.axes if ax.get_visible()][-1]
    (cut,) = [line for line in last.get_lines() if line.get_gid() == "not finite"]
    assert list(cut.get_ydata()) == [0.1, 0.1] and list(cut.get_xdata()) == [0.0, 0.0]
    few = [r for r in rows if r["method"] == "mica" and r["budget"] == "erk"][:4]
    fig = metric_vs_accuracy(few, "effective_nodes")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["10^1: n = 2, no rank correlation", "10^2: n = 2, no rank correlation"]


def test_accuracy_figures_and_page_section(trained, make):
    rows, make_table = trained, make
    figures = accuracy_figures(rows)
    assert sorted(figures) == ["accuracy_vs_compression", "metric_accuracy_channel_functional_ratio",
                               "metric_accuracy_effective_nodes", "metric_accuracy_log10_paths"]
    page = study_page(rows)
    assert "Accuracy and graph metrics" in page and page.count('id="fig-metric_accuracy_') == 3
    # the page's correlation table holds scipy's tau for effective nodes at 10^2
    group = [r for r in rows if r["log10_compression"] == 2]
    tau = stats.kendalltau([r["effective_nodes"] for r in group],
                           [r["best_test_acc"] for r in group])[0]
    cells = re.findall(r"<tr><td[^>]*>10\^2</td><td[^>]*>effective_nodes</td><td>8</td>"
                       r"<td>([^<]+)</td>", page)
    assert len(cells) == 1 and math.isclose(float(cells[0]), tau, rel_tol=1e-3)
    assert "Accuracy and graph metrics" not in study_page(make_table())


def test_summary_names_the_best_and_the_strongest_correlation(trained, make):
    from graphpai.report.html import study_summary

    lines = study_summary(trained)
    # at 10^4, means over seeds 0 and 1 by hand: MiCA-ERK and MiCA-IGQ 0.9 - 0.4 + 0.05 - 0.01
    # = 0.54 (a tie, named alphabetically), RPI-ERK 0.49, RPI-IGQ disconnected: 0.1
    assert ("Trained (best_test_acc, mean over seeds): at 10^4 the best is MiCA-ERK (0.540) and "
            "the worst RPI-IGQ (0.100).") in lines
    strongest = [line for line in lines if line.startswith("Strongest rank correlation")]
    assert len(strongest) == 1
    assert not any(line.startswith("Trained") for line in study_summary(make()))
