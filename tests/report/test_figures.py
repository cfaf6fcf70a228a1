"""The study and per-mask figures, read through their matplotlib objects (not pixels)."""

import math
import subprocess
import sys

import numpy as np
import pytest

from graphpai._results import jsonable
from graphpai.errors import DataError
from graphpai.report import figures


def _series_lines(ax):
    return {line.get_label(): line for line in ax.get_lines()
            if (line.get_gid() or "").startswith("series:")}


def _marker(ax, label):
    found = [line for line in ax.get_lines() if line.get_label() == label]
    return found[0] if found else None


def test_functional_ratio_lines_points_axis_and_band(table):
    fig = figures.functional_ratio(table)
    (ax,) = fig.axes
    lines = _series_lines(ax)
    assert sorted(lines) == ["MiCA-ERK", "MiCA-IGQ", "RPI-ERK", "RPI-IGQ"]
    assert all(len(line.get_xdata()) == 4 for line in lines.values())
    assert ax.get_xscale() == "log"
    np.testing.assert_allclose(lines["RPI-ERK"].get_xdata(), [10, 100, 1000, 10000])
    # seeds 0 and 1 keep 1 - 0.1 (x - 1) and 0.1 less: the mean is 0.05 below seed 0
    np.testing.assert_allclose(lines["RPI-ERK"].get_ydata(), [0.95, 0.85, 0.75, 0.65])
    np.testing.assert_allclose(lines["MiCA-IGQ"].get_ydata(), [1, 1, 1, 1])
    assert len(ax.collections) == 4  # one min-max band per line (two seeds each)
    band = ax.collections[[k for k in sorted(lines)].index("RPI-ERK")]
    ys = band.get_paths()[0].vertices[:, 1]
    assert math.isclose(ys.min(), 0.6) and math.isclose(ys.max(), 1.0)
    # one budget per line style, one colour per method
    assert lines["RPI-ERK"].get_color() == lines["RPI-IGQ"].get_color()
    assert lines["RPI-ERK"].get_linestyle() != lines["RPI-IGQ"].get_linestyle()


def test_disconnected_point_is_a_marker_on_the_axis(table):
    ax = figures.functional_ratio(table).axes[0]
    marker = _marker(ax, "disconnected")
    assert marker is not None and marker.get_marker() == "x"
    np.testing.assert_allclose(marker.get_xdata(), [1e4])  # RPI-IGQ at 10^4, once, not per seed
    np.testing.assert_allclose(marker.get_ydata(), [0.0])  # axes coordinates: the bottom edge
    assert marker.get_transform() == ax.get_xaxis_transform()
    assert not marker.get_clip_on()
    assert _series_lines(ax)["RPI-IGQ"].get_ydata()[-1] == 0.0  # its ratio of 0 is plotted too


def test_corrected_compression_identity_line_and_inf_at_top(table):
    for rows in (table, [jsonable(r) for r in table]):  # floats, or JSON's "inf" strings
        ax = figures.corrected_compression(rows).axes[0]
        identity = [l for l in ax.get_lines() if l.get_label() == "identity"]
        assert len(identity) == 1
        np.testing.assert_allclose(identity[0].get_xdata(), [10, 1e4])
        np.testing.assert_allclose(identity[0].get_ydata(), [10, 1e4])
        assert ax.get_xscale() == ax.get_yscale() == "log"
        lines = _series_lines(ax)
        np.testing.assert_allclose(lines["MiCA-ERK"].get_ydata(), [10, 100, 1000, 10000])
        # RPI-IGQ: N/|F| = 10^x / 0.8 at 10^2, 10^3; inf at 10^4 is not on the line ...
        np.testing.assert_allclose(lines["RPI-IGQ"].get_ydata(), [10, 125, 1250])
        marker = _marker(ax, "disconnected")  # ... but on the top edge
        np.testing.assert_allclose(marker.get_xdata(), [1e4])
        np.testing.assert_allclose(marker.get_ydata(), [1.0])


def test_failed_points_are_not_plotted(table):
    table = table + [{"key": "bad", "status": "failed", "error": "boom", "method": "snip",
                      "budget": None, "compression": 100.0, "seed": 0}]
    labels = set(_series_lines(figures.functional_ratio(table).axes[0]))
    assert "SNIP" not in labels and len(labels) == 4


def test_absent_columns_raise_and_are_skipped(table):
    with pytest.raises(DataError, match="log10_paths"):
        figures.effective_paths(table)
    with pytest.raises(DataError, match="spectral"):
        figures.spectral_means(table)
    with pytest.raises(DataError, match="spatial_functional_ratio"):
        figures.functional_ratio(table, semantics="spatial")
    assert sorted(figures.study_figures(table)) == [
        "corrected_compression", "functional_node_ratio", "functional_ratio"]


def test_full_table_has_every_study_figure(full_table):
    assert sorted(figures.study_figures(full_table)) == [
        "corrected_compression", "effective_paths", "functional_node_ratio", "functional_ratio",
        "npb_plane", "spectral_means"]


def test_effective_paths_minus_inf_on_the_bottom_edge(full_table):
    ax = figures.effective_paths(full_table).axes[0]
    np.testing.assert_allclose(_series_lines(ax)["RPI-IGQ"].get_ydata(), [35, 30, 25])
    np.testing.assert_allclose(_marker(ax, "disconnected").get_xdata(), [1e4])


def test_npb_plane_one_colour_per_method_and_disconnected_on_the_left(full_table):
    ax = figures.npb_plane(full_table).axes[0]
    by_method = {l.get_gid(): l for l in ax.get_lines() if (l.get_gid() or "").startswith("method:")}
    assert sorted(by_method) == ["method:mica", "method:rpi"]
    assert len(by_method["method:mica"].get_xdata()) == 16   # 2 budgets x 4 x 2 seeds
    assert len(by_method["method:rpi"].get_xdata()) == 14    # 2 RPI-IGQ points have no path
    assert by_method["method:mica"].get_color() != by_method["method:rpi"].get_color()
    assert by_method["method:rpi"].get_linestyle() == "None"
    marker = _marker(ax, "disconnected")
    np.testing.assert_allclose(marker.get_ydata(), [0, 0])     # effective nodes, data coords
    np.testing.assert_allclose(marker.get_xdata(), [0, 0])     # the left edge
    assert marker.get_transform() == ax.get_yaxis_transform()


def test_spectral_means_panels_and_unscored_points(full_table):
    fig = figures.spectral_means(full_table)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in visible] == ["delta_r_norm", "imdb", "narc",
                                                   "coordinate_norm"]
    delta, _, _, norm = visible
    assert _series_lines(delta)["RPI-ERK"].get_ydata().tolist() == pytest.approx([.1, .2, .3, .4])
    np.testing.assert_allclose(_marker(delta, "disconnected").get_xdata(), [1e4])
    # S is None at 10^4 for every series; only RPI-IGQ is disconnected there
    np.testing.assert_allclose(_marker(norm, "not scored").get_xdata(), [1e4] * 3)
    assert all(ax.get_xscale() == "log" for ax in visible)


def test_layer_bars_heights():
    rows = [{"layer": "a", "density": 0.5, "channel_functional_ratio": 1.0,
             "spatial_functional_ratio": 0.75},
            {"layer": "b", "density": 0.01, "channel_functional_ratio": 0.5,
             "spatial_functional_ratio": None}]
    top, bottom = figures.layer_bars(rows).axes
    assert [p.get_height() for p in top.patches] == [0.5, 0.01]
    assert top.get_yscale() == "log"
    heights = [p.get_height() for p in bottom.patches]
    assert heights[:2] == [1.0, 0.5] and heights[2] == 0.75 and math.isnan(heights[3])
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["a", "b"]


def test_layer_spectrum_bound_is_sqrt_dl_minus_1_plus_sqrt_dr_minus_1():
    rows = [{"layer": "a", "sigma_1": 6.0, "sigma_2": 2.0, "d_L": 5.0, "d_R": 10.0},
            {"layer": "b", "sigma_1": 3.0, "sigma_2": 1.0, "d_L": 0.5, "d_R": 2.0}]
    ax = figures.layer_spectrum(rows).axes[0]
    lines = {l.get_gid(): l for l in ax.get_lines()}
    assert lines["sigma_1"].get_ydata().tolist() == [6.0, 3.0]
    assert lines["sigma_2"].get_ydata().tolist() == [2.0, 1.0]
    bound = lines["ramanujan_bound"].get_ydata()
    assert bound[0] == pytest.approx(2.0 + 3.0) and math.isnan(bound[1])  # d_L < 1: no bound


def test_degree_histograms_count_every_node():
    rng = np.random.default_rng(0)
    masks = {"conv": rng.random((4, 3, 3, 3)) < 0.3, "fc": rng.random((5, 4)) < 0.5}
    fig = figures.degree_histograms(masks)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["conv", "fc"]
    for ax, mask in zip(axes, masks.values()):
        m = mask.reshape(mask.shape[0], -1)
        heights = np.array([p.get_height() for p in ax.patches])
        fan_in_bins = int(m.sum(axis=0).max()) + 1
        fan_in, out = heights[:fan_in_bins], heights[fan_in_bins:]
        assert fan_in.tolist() == np.bincount(m.sum(axis=0)).tolist()
        assert out.tolist() == np.bincount(m.sum(axis=1)).tolist()


def test_degree_histograms_thin_to_max_layers():
    masks = {f"l{i}": np.ones((2, 2), bool) for i in range(30)}
    fig = figures.degree_histograms(masks, max_layers=5)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["l0", "l7", "l14", "l22", "l29"]


def test_as_float_rejects_text():
    with pytest.raises(DataError, match="not a number"):
        figures.as_float("twelve")


def test_figures_use_no_pyplot():
    code = ("import sys, json; from graphpai.report import figures\n"
            "rows=[{'method':'rpi','budget':'erk','compression':10.0,'direct_compression':10.0,"
            "'channel_functional_ratio':1.0,'channel_corrected_compression':10.0}]\n"
            "figures.study_figures(rows)\nprint('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
