"""Topology tracking: constant topology on a static mask, churn equal to the saved masks'
difference under DST, values of the current masks and weights, files, exact resume."""

import csv
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402

from graphpai import audit  # noqa: E402
from graphpai.errors import DataError, TrainError  # noqa: E402
from graphpai.masks import MaskSet  # noqa: E402
from graphpai.torch.data import synthetic_data  # noqa: E402
from graphpai.torch.dst import DynamicSparsity, initial_masks  # noqa: E402
from graphpai.torch.extract import layer_weights, to_graph  # noqa: E402
from graphpai.torch.track import MASK_ONLY, TopologyTracker, read_track  # noqa: E402
from graphpai.torch.train import Callback, train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = (3, 8, 8)
DATA = synthetic_data(4, SHAPE, train_size=160, test_size=40, seed=5)
FAST = dict(device="cpu", progress=False, lr=0.05, batch_size=16, augment=False)
WEIGHTED = ("iclr23_weighted_gap", "neurips23_weighted_gap", "neurips23_coordinate_norm")


def convnet(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                              nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    model.input_shape = SHAPE
    return model


def test_static_mask_records_identical_topology_at_every_step(tmp_path):
    model = convnet()
    masks = initial_masks(model, 4, seed=0)
    tracker = TopologyTracker(tmp_path, every=3, masks_every=6)
    train(model, masks, DATA, epochs=2, callbacks=[tracker], **FAST)
    steps = [r["step"] for r in tracker.rows]
    assert steps == [0, 3, 6, 9, 12, 15, 16]  # step 0, every 3, the last step (16)
    first = tracker.rows[0]
    for row in tracker.rows:
        for column in MASK_ONLY:
            assert column in row
            assert row[column] == first[column], (row["step"], column)
        assert row["dropped"] == row["regrown"] == 0
        assert row["jaccard_initial"] == row["jaccard_previous"] == 1.0
    # the weighted quantities use the current weights: they move while the mask does not
    assert any(tracker.rows[-1][c] != first[c] for c in WEIGHTED)
    # the last record is the final masks and weights, measured directly
    graph = to_graph(model)
    direct = audit(graph, masks)
    last = tracker.rows[-1]
    assert last["channel_functional"] == direct.functional
    assert last["channel_corrected_compression"] == pytest.approx(direct.corrected_compression)
    from graphpai.spectral import spectral

    report = spectral(graph, masks, layer_weights(model), profile="neurips23", workers=1)
    assert last["neurips23_weighted_gap"] == pytest.approx(report.means["weighted_gap"].mean)
    assert last["neurips23_coordinate_norm"] == pytest.approx(report.means["coordinate_norm"].mean)
    saved = sorted(os.listdir(tmp_path / "masks"))
    assert saved == ["step_0000000.npz", "step_0000006.npz", "step_0000012.npz",
                     "step_0000016.npz"]
    assert MaskSet.load(tmp_path / "masks" / saved[-1]) == masks


def test_dst_churn_equals_the_difference_of_the_saved_masks(tmp_path):
    model = convnet(1)
    masks = initial_masks(model, 4, seed=1)
    dst = DynamicSparsity("set", update_every=4, drop_fraction=0.4, stop_fraction=1.0)
    tracker = TopologyTracker(tmp_path, every=4, masks_every=4)
    train(model, masks, DATA, epochs=2, callbacks=[dst, tracker], **FAST)
    rows = tracker.rows
    assert [r["step"] for r in rows] == [0, 4, 8, 12, 16]
    files = [MaskSet.load(tmp_path / r["masks_file"]) for r in rows]
    initial = np.concatenate([np.asarray(masks[n]).ravel() for n in files[0]])
    assert np.array_equal(initial, np.concatenate([m.ravel() for m in files[0].values()]))
    updates = {u.step: u for u in dst.history}
    for prev, cur, row in zip(files, files[1:], rows[1:]):
        p = np.concatenate([prev[n].ravel() for n in prev])
        c = np.concatenate([cur[n].ravel() for n in prev])
        assert row["dropped"] == int(np.sum(p & ~c)) and row["regrown"] == int(np.sum(c & ~p))
        assert row["jaccard_previous"] == pytest.approx(np.sum(p & c) / np.sum(p | c))
        assert row["jaccard_initial"] == pytest.approx(np.sum(initial & c) / np.sum(initial | c))
        if row["step"] in updates:  # one update between records: its churn
            assert row["dropped"] == updates[row["step"]].changed > 0
        assert row["kept"] == rows[0]["kept"]
    assert rows[-1]["jaccard_initial"] < 1
    # per-layer churn rows add up to the totals
    for row in rows:
        layers = [r for r in tracker.layers if r["step"] == row["step"]]
        assert sum(r["dropped"] for r in layers) == row["dropped"]


def test_files_are_written_and_readable(tmp_path):
    model = convnet(2)
    tracker = TopologyTracker(tmp_path, every=8, spectral=False, meta={"dst": None})
    train(model, initial_masks(model, 3, seed=2), DATA, epochs=2, callbacks=[tracker], **FAST)
    data = read_track(tmp_path)
    assert data["steps_per_epoch"] == 8 and data["total_steps"] == 16
    assert [e["epoch"] for e in data["accuracy"]] == [1, 2]
    assert [e["step"] for e in data["accuracy"]] == [8, 16]
    assert data["rows"] == json.loads(json.dumps(tracker.rows))
    with open(tmp_path / "topology.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in table] == [0, 8, 16]
    assert "iclr23_delta_r_norm" not in table[0]  # spectral=False
    with pytest.raises(DataError, match="track-every"):
        read_track(tmp_path / "nothing")


class Stop(Callback):
    def on_epoch_end(self, epoch, model, masks, optimizer, result):
        if epoch == 2:
            raise KeyboardInterrupt


def test_resume_continues_the_same_tables(tmp_path):
    def run(out, callbacks_extra=(), checkpoint=None):
        model = convnet(3)
        dst = DynamicSparsity("rigl", update_every=3, drop_fraction=0.3, stop_fraction=1.0)
        tracker = TopologyTracker(out, every=3, masks_every=3)
        train(model, initial_masks(model, 4, seed=3), DATA, epochs=3, checkpoint_dir=checkpoint,
              callbacks=[dst, tracker, *callbacks_extra], **FAST)
        return tracker

    full = run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", [Stop()], checkpoint=tmp_path / "run")
    resumed = run(tmp_path / "run", checkpoint=tmp_path / "run")

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "record_s"} for r in rows]

    assert strip(resumed.rows) == strip(full.rows)
    assert resumed.layers == full.layers
    assert read_track(tmp_path / "run")["accuracy"] == read_track(tmp_path / "full")["accuracy"]
    for row in full.rows:
        a = MaskSet.load(tmp_path / "full" / row["masks_file"])
        assert MaskSet.load(tmp_path / "run" / row["masks_file"]) == a


def test_bad_settings_and_missing_state(tmp_path):
    with pytest.raises(TrainError):
        TopologyTracker(every=0)
    with pytest.raises(TrainError):
        TopologyTracker(semantics="pixel")
    model = convnet(4)
    masks = initial_masks(model, 3, seed=4)
    train(model, masks, DATA, epochs=1, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(TrainError, match="without topology tracking"):
        train(convnet(4), masks, DATA, epochs=2, checkpoint_dir=tmp_path,
              callbacks=[TopologyTracker(every=4)], **FAST)
