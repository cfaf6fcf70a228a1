"""Figures of a tracked run, read through matplotlib objects: metric lines equal the records,
accuracy from the training result, per-layer gaps at start and end from a direct computation."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")
import torch.nn as nn  # noqa: E402

from graphpai.errors import DataError  # noqa: E402
from graphpai.masks import MaskSet  # noqa: E402
from graphpai.report.training import (layer_change, tracked_metrics,  # noqa: E402
                                      write_training_report)
from graphpai.spectral import spectral  # noqa: E402
from graphpai.torch.data import synthetic_data  # noqa: E402
from graphpai.torch.dst import DynamicSparsity, initial_masks  # noqa: E402
from graphpai.torch.extract import layer_weights, to_graph  # noqa: E402
from graphpai.torch.track import TopologyTracker, read_track  # noqa: E402
from graphpai.torch.train import train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = (3, 8, 8)


def by_gid(objects, gid):
    found = [o for o in objects if o.get_gid() == gid]
    assert len(found) == 1, gid
    return found[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                              nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    model.input_shape = SHAPE
    masks = initial_masks(model, 4, seed=0)
    start_weights = layer_weights(model)
    data = synthetic_data(4, SHAPE, train_size=160, test_size=40, seed=6)
    tracker = TopologyTracker(out, every=4, masks_every=8)
    result = train(model, masks, data, epochs=3, device="cpu", progress=False, lr=0.05,
                   batch_size=16, augment=False, checkpoint_dir=out,
                   callbacks=[DynamicSparsity("rigl", update_every=4, stop_fraction=1.0), tracker])
    torch.set_num_threads(threads)
    return dict(out=out, model=model, masks=masks, start_weights=start_weights, result=result,
                tracker=tracker, graph=to_graph(copy.deepcopy(model)))


def test_tracked_metrics_figure_draws_the_records_and_the_accuracy(run):
    track = read_track(run["out"])
    fig = tracked_metrics(track)
    steps = [r["step"] for r in track["rows"]]
    for column in ("channel_functional_ratio", "log10_paths", "neurips23_weighted_gap",
                   "iclr23_delta_r_norm", "jaccard_initial"):
        ax = by_gid(fig.axes, f"metric:{column}")
        line = by_gid(ax.lines, column)
        assert list(line.get_xdata()) == steps
        np.testing.assert_allclose(line.get_ydata(), [r[column] for r in run["tracker"].rows])
    assert by_gid(fig.axes, "metric:channel_corrected_compression").get_yscale() == "log"
    acc = by_gid(fig.axes, "accuracy")
    test = by_gid(acc.lines, "test_acc")
    history = run["result"].history  # from the training result, not the tracker
    assert list(test.get_xdata()) == [8 * e.epoch for e in history]
    np.testing.assert_allclose(test.get_ydata(), [e.test_acc for e in history])
    assert {line.get_gid() for line in acc.lines} == {"train_acc", "val_acc", "test_acc"}
    # DST moved the mask: the Jaccard line falls below 1
    assert min(by_gid(by_gid(fig.axes, "metric:jaccard_initial").lines,
                      "jaccard_initial").get_ydata()) < 1


def test_layer_change_figure_against_a_direct_computation(run):
    fig = layer_change(read_track(run["out"]))
    graph, masks = run["graph"], run["masks"]
    final_masks = MaskSet.load(run["out"] / run["tracker"].rows[-1]["masks_file"])
    assert final_masks != masks
    cases = {"start": (masks, run["start_weights"]),
             "end": (final_masks, layer_weights(run["model"]))}
    for gid, column, profile in (("delta_r", "delta_r", "iclr23"),
                                 ("weighted_gap", "weighted_gap", "neurips23")):
        ax = by_gid(fig.axes, gid)
        for label, (m, w) in cases.items():
            report = spectral(graph, m, w, profile=profile, workers=1)
            expected = [getattr(report.layer(n), column) for n in masks]
            line = by_gid(ax.lines, label)
            np.testing.assert_allclose(line.get_ydata(),
                                       [np.nan if v is None else v for v in expected])
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == list(masks)


def test_report_page_and_files(run, tmp_path):
    path = write_training_report(run["out"], tmp_path / "report")
    text = path.read_text()
    assert "<h2>Tracked metrics</h2>" in text and "data:image/png;base64," in text
    for name in ("tracked_metrics", "layer_change"):
        assert (tmp_path / "report" / "figures" / f"{name}.png").stat().st_size > 1000
        assert (tmp_path / "report" / "figures" / f"{name}.svg").exists()
    with pytest.raises(DataError, match="track-every"):
        write_training_report(tmp_path / "nothing")


def test_not_finite_values_are_marked_and_empty_records_refused():
    rows = [{"step": 0, "channel_corrected_compression": 10.0},
            {"step": 5, "channel_corrected_compression": "inf"}]
    fig = tracked_metrics({"rows": rows, "accuracy": [], "semantics": "channel"})
    ax = by_gid(fig.axes, "metric:channel_corrected_compression")
    assert list(by_gid(ax.lines, "channel_corrected_compression").get_xdata()) == [0]
    assert list(by_gid(ax.lines, "not finite").get_xdata()) == [5]
    with pytest.raises(DataError):
        tracked_metrics({"rows": []})
    with pytest.raises(DataError, match="per-layer"):
        layer_change({"rows": rows, "layers": []})
