"""graphpai.spectral(net, masks, weights): per-layer table, network means, reasons, torch models."""

import json

import numpy as np
import pytest
from oracles import naive_layer_spectrum

import graphpai.spectral
from graphpai import Group, Layer, MaskSet, NetGraph
from graphpai.errors import GraphpaiError, MaskError, SolverError, UnknownMethodError
from graphpai.spectral import layer as layer_module
from graphpai.spectral import report as report_module
from graphpai.spectral import spectral

FIELDS = ["n_l", "n_r", "E", "d_L", "d_R", "sigma_1", "sigma_2", "delta_r", "delta_r_norm",
          "delta_s", "delta_s_norm", "narc", "imdb", "imdb_raw", "imdb_subgraphs",
          "weighted_sigma_1", "weighted_sigma_2", "weighted_gap", "imdb_r", "imdb_lambda",
          "fs_subgraphs", "coordinate", "coordinate_norm"]


def _net():
    """conv 3->8 (3x3), conv 8->16 (3x3, stride 2), 1x1 conv 16->24, flatten, fc, fc."""
    groups = [Group("x", 3, (8, 8)), Group("a", 8, (8, 8)), Group("b", 16, (4, 4)),
              Group("c", 24, (4, 4)), Group("f", 24 * 16), Group("h", 40), Group("y", 10)]
    layers = [
        Layer("conv1", "conv", (8, 3, 3, 3), "x", "a", stride=(1, 1), padding=((1, 1), (1, 1)),
              dilation=(1, 1), in_size=(8, 8), out_size=(8, 8)),
        Layer("conv2", "conv", (16, 8, 3, 3), "a", "b", stride=(2, 2), padding=((1, 1), (1, 1)),
              dilation=(1, 1), in_size=(8, 8), out_size=(4, 4)),
        Layer("conv3", "conv", (24, 16, 1, 1), "b", "c", stride=(1, 1), padding=((0, 0), (0, 0)),
              dilation=(1, 1), in_size=(4, 4), out_size=(4, 4)),
        Layer("fc1", "linear", (40, 24 * 16), "f", "h"),
        Layer("fc2", "linear", (10, 40), "h", "y"),
    ]
    from graphpai.graph import Link

    return NetGraph(groups, layers, [Link("flat", "flatten", ("c",), "f")], ["x"], ["y"])


def _state(graph, density, seed):
    rng = np.random.default_rng(seed)
    masks = MaskSet({n: rng.random(l.weight_shape) < density for n, l in graph.layers.items()})
    weights = {n: rng.standard_normal(l.weight_shape) for n, l in graph.layers.items()}
    return masks, weights


def _check_row(row, ref):
    for key in FIELDS:
        got, want = getattr(row, key), ref[key]
        if want is None:
            assert got is None, (row.layer, key, got)
        elif isinstance(want, tuple):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=key)
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (row.layer, key)


@pytest.mark.parametrize("density", [0.02, 0.1, 0.35, 0.8, 1.0])
@pytest.mark.parametrize("profile", ["iclr23", "neurips23"])
def test_every_field_matches_the_oracle(density, profile):
    g = _net()
    masks, weights = _state(g, density, seed=int(density * 100))
    report = spectral(g, masks, weights, profile=profile)
    assert report.profile == profile and report.weights == "given"
    for row in report.layers:
        layer = g.layers[row.layer]
        b = g.biadjacency(layer, masks)                     # the shared fan-in view
        x = g.biadjacency(layer, masks, weights[row.layer])
        _check_row(row, naive_layer_spectrum(b, x.toarray(), profile=profile))


def test_arpack_path_matches_the_oracle():
    g = _net()
    masks, weights = _state(g, 0.3, seed=1)
    report = spectral(g, masks, weights, dense_max=0)
    for row in report.layers:
        b = g.biadjacency(row.layer, masks)
        x = g.biadjacency(row.layer, masks, weights[row.layer])
        _check_row(row, naive_layer_spectrum(b, x.toarray()))


def test_network_means_are_over_scored_layers():
    g = _net()
    masks, weights = _state(g, 0.06, seed=3)
    report = spectral(g, masks, weights)
    for key in report_module.MEAN_FIELDS:
        values = [getattr(r, key) for r in report.layers]
        scored = [v for v in values if v is not None]
        agg = report.means[key]
        assert (agg.scored, agg.layers) == (len(scored), 5)
        assert agg.scored_fraction == len(scored) / 5
        if scored:
            assert agg.mean == pytest.approx(np.mean(scored))
        else:
            assert agg.mean is None
    gaps = [r.delta_r for r in report.layers if r.delta_r is not None]
    share = report.positive_gap_share
    assert share.scored == len(gaps)
    assert share.mean == (np.mean([v > 0 for v in gaps]) if gaps else None)


def test_unscored_entries_are_none_with_reasons():
    g = _net()
    masks, weights = _state(g, 0.3, seed=4)
    masks = MaskSet({**masks, "conv3": np.zeros((24, 16, 1, 1), bool),
                     "conv1": np.eye(8, 27, dtype=bool).reshape(8, 3, 3, 3)})
    report = spectral(g, masks, weights)
    empty = report.layer("conv3")
    assert empty.E == 0 and empty.sigma_1 is None and empty.delta_r is None
    assert empty.reasons["delta_r"] == "empty layer" and empty.reasons["imdb"] == "empty layer"
    assert empty.coordinate == (0.0, 0.0, 0.0, 0.0)  # [FS] counts unscored entries as 0
    matching = report.layer("conv1")  # a matching: every degree is 1
    assert matching.delta_r is None and matching.reasons["delta_r"].startswith("gate iclr23: d_L")
    assert matching.imdb is None and "gate iclr23" in matching.reasons["imdb"]
    assert matching.imdb_r is None and "fs-subgraph" in matching.reasons["imdb_r"]
    for row in report.layers:
        for key in FIELDS:
            if getattr(row, key) is None and key not in ("coordinate", "coordinate_norm"):
                assert key in row.reasons, (row.layer, key)


def test_netgraph_without_weights_has_no_weighted_quantities():
    g = _net()
    masks, _ = _state(g, 0.4, seed=5)
    report = spectral(g, masks)
    assert report.weights is None
    for row in report.layers:
        assert row.weighted_gap is None and row.reasons["weighted_gap"] == "no weights"
        assert row.imdb_lambda is None and row.reasons["imdb_lambda"] == "no weights"
        assert row.coordinate is None and "no weights" in row.reasons["coordinate"]
    assert report.means["coordinate_norm"].scored == 0


def test_masks_none_means_dense():
    g = _net()
    dense = spectral(g)
    explicit = spectral(g, MaskSet.dense(g))
    assert dense.rows() == explicit.rows()
    assert all(r.delta_r_norm == 1.0 for r in dense.layers if r.delta_r_norm is not None)


def test_solver_failure_is_recorded_per_layer(monkeypatch):
    g = _net()
    masks, weights = _state(g, 0.5, seed=6)
    real = layer_module.singular_values_compact

    def flaky(a, *args, **kwargs):
        if kwargs.get("layer") == "fc1":
            raise SolverError("fc1", "ARPACK attempt 3: no convergence")
        return real(a, *args, **kwargs)

    monkeypatch.setattr(layer_module, "singular_values_compact", flaky)
    report = spectral(g, masks, weights)
    row = report.layer("fc1")
    assert row.delta_r is None and row.sigma_1 is None
    assert row.reasons["delta_r"] == "solver failed: ARPACK attempt 3: no convergence"
    assert row.coordinate is None and "solver failed" in row.reasons["coordinate"]
    assert row.E > 0 and row.d_L is not None  # the degrees do not need the solver
    assert report.layer("fc2").sigma_1 is not None


def test_layer_spectrum_is_the_report_row_and_raises_solver_failures(monkeypatch):
    from graphpai.spectral import imdb, layer_spectrum

    g = _net()
    masks, weights = _state(g, 0.4, seed=14)
    row = spectral(g, masks, weights, profile="neurips23").layer("fc1")
    b = g.biadjacency("fc1", masks)
    alone = layer_spectrum(b, weights["fc1"].T, profile="neurips23", layer="fc1")
    assert alone == row

    def failing(a, *args, **kwargs):
        raise SolverError(kwargs.get("layer"), "ARPACK attempt 3: no convergence")

    monkeypatch.setattr(layer_module, "singular_values_compact", failing)
    with pytest.raises(SolverError, match="'fc1'.*ARPACK attempt 3"):
        layer_spectrum(b, layer="fc1")
    with pytest.raises(SolverError):
        imdb(b)


def test_json_and_text():
    g = _net()
    masks, weights = _state(g, 0.2, seed=7)
    report = spectral(g, masks, weights, profile="neurips23")
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert [r["layer"] for r in data["layers"]] == list(g.layers)
    assert data["gates"]["delta_r"].startswith("neurips23: d_R >= 3 and d_L > 1")
    assert "fs-subgraph" not in data["gates"]["imdb"] and "d >= 3" in data["gates"]["imdb_r"]
    assert set(data["means"]) >= {"delta_r", "imdb", "coordinate_norm"}
    text = report.to_text()
    assert all(name in text for name in g.layers) and "profile neurips23" in text


def test_validation_errors():
    g = _net()
    masks, weights = _state(g, 0.2, seed=8)
    with pytest.raises(UnknownMethodError):
        spectral(g, masks, profile="icml")
    with pytest.raises(MaskError, match="conv1"):
        spectral(g, {**masks, "conv1": np.ones((8, 3, 3), bool)})
    with pytest.raises(MaskError, match="no weights for layer 'fc2'"):
        spectral(g, masks, {k: v for k, v in weights.items() if k != "fc2"})
    with pytest.raises(MaskError, match="shape"):
        spectral(g, masks, {**weights, "fc2": np.ones((10, 41))})
    with pytest.raises(GraphpaiError, match="needs a torch model"):
        spectral(g, masks, "init")
    with pytest.raises(GraphpaiError, match="not understood"):
        spectral(g, masks, "trained")


def test_issue_6_non_finite_or_non_numeric_weights_are_a_clean_error():
    # nan weights used to give weighted_sigma_1 = 0.0 and lambda = 0.0 without a word
    g = _net()
    masks, weights = _state(g, 0.3, seed=12)
    for bad in (np.nan, np.inf):
        w = weights["fc2"].copy()
        w[masks["fc2"]] = bad
        with pytest.raises(MaskError, match=r"'fc2' have \d+ nan or inf kept entries"):
            spectral(g, masks, {**weights, "fc2": w})
    with pytest.raises(MaskError, match="'fc1' are not an array of numbers"):
        spectral(g, masks, {**weights, "fc1": "trained"})


def test_issue_6_a_non_finite_pruned_weight_is_no_edge():
    # only kept weights are edges of |W * M|: nan * 0 must not leak into the dense path
    g = _net()
    masks, weights = _state(g, 0.5, seed=13)  # density 0.5: the dense code path
    w = {k: v.copy() for k, v in weights.items()}
    zeroed = {k: v.copy() for k, v in weights.items()}
    for name in w:
        w[name][~masks[name]] = np.nan
        zeroed[name][~masks[name]] = 0.0
    assert spectral(g, masks, w).rows() == spectral(g, masks, zeroed).rows()


def test_module_is_callable():
    g = _net()
    assert graphpai.spectral(g).rows() == spectral(g).rows()
    assert callable(graphpai.spectral.distance)


def test_renaming_layers_changes_no_number():
    g = _net()
    masks, weights = _state(g, 0.3, seed=9)
    mapping = {"conv1": "stem", "fc2": "head"}
    a = spectral(g, masks, weights)
    b = spectral(g.rename(mapping), masks.rename(mapping),
                 {mapping.get(k, k): v for k, v in weights.items()})
    for ra, rb in zip(a.layers, b.layers):
        da, db = ra.to_dict(), rb.to_dict()
        da.pop("layer"), db.pop("layer")
        assert da == db


def test_rows_come_back_in_graph_order_whatever_the_workers():
    # layers are handed to the pool by decreasing kept weights; the rows are in graph order
    g = _net()
    masks, weights = _state(g, 0.3, seed=4)
    masks = MaskSet({n: m if n != "fc2" else np.ones_like(m) for n, m in masks.items()})
    one = spectral(g, masks, weights, workers=1)
    assert [r.layer for r in one.layers] == list(g.layers)
    assert spectral(g, masks, weights, workers=3).rows() == one.rows()



def test_default_workers_pool_only_where_it_pays(monkeypatch, pool_sizes):
    """workers=None: one layer at a time when the network keeps fewer than _POOL_MIN_KEPT
    weights (threads contend for the GIL there), the pool above; an explicit count is kept.
    The rows are the same either way."""
    g = _net()
    masks, weights = _state(g, 0.3, seed=5)
    pools = pool_sizes(report_module)
    monkeypatch.setattr(report_module, "_default_workers", lambda: 2)
    serial = spectral(g, masks, weights)
    assert pools == []  # a few hundred kept weights: no pool
    assert spectral(g, masks, weights, workers=2).rows() == serial.rows()
    assert pools == [2]  # asked for
    monkeypatch.setattr(report_module, "_POOL_MIN_KEPT", 0)
    pooled = spectral(g, masks, weights)
    assert pooled.rows() == serial.rows()
    assert pools == [2, 2]
    # the layer pairs and channel overlap, computed in the pool, are the serial ones
    assert pooled.pairs == serial.pairs and pooled.channel_overlap == serial.channel_overlap
    assert serial.pairs and serial.channel_overlap

def _blas_threads():
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_issue_6_layers_run_on_one_blas_thread_and_the_count_comes_back(monkeypatch):
    # the old per-call "thread-local" OpenBLAS setting was process-wide: overlapping workers
    # restored each other's 1 and left the process on one BLAS thread after the report
    from concurrent.futures import ThreadPoolExecutor

    g = _net()
    masks, weights = _state(g, 0.3, seed=11)
    before = _blas_threads()
    seen = []
    real = layer_module.singular_values_compact

    def spy(a, *args, **kwargs):
        seen.append(_blas_threads())
        return real(a, *args, **kwargs)

    monkeypatch.setattr(layer_module, "singular_values_compact", spy)
    with ThreadPoolExecutor(2) as pool:  # two reports at once, each with its own layer pool
        reports = list(pool.map(lambda _: spectral(g, masks, weights, workers=3), range(4)))
    assert seen and all(set(counts) <= {1} for counts in seen)
    assert _blas_threads() == before
    assert all(r.rows() == reports[0].rows() for r in reports)


# ------------------------------------------------------------------------------ torch models
torch = pytest.importorskip("torch")


def test_torch_model_uses_its_current_weights():
    from graphpai.torch import models
    from graphpai.torch.extract import layer_weights

    model = models.build("lenet5", seed=0)
    report = spectral(model)
    assert report.weights == "model"
    g = graphpai.as_graph(model)
    ref = spectral(g, None, layer_weights(model))
    assert report.rows() == ref.rows()


def test_weights_init_reinitialises_a_copy():
    from graphpai.torch import models
    from graphpai.torch.extract import layer_weights

    model = models.build("lenet5", seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # "trained" weights, far from init
    before = layer_weights(model)
    init_a = spectral(model, weights="init", seed=1)
    init_b = spectral(model, weights="init", seed=1)
    assert init_a.weights == "init" and init_a.rows() == init_b.rows()
    after = layer_weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # the model is untouched
    clone = models.build("lenet5")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        models.init_weights(clone)  # the documented recipe: the zoo's init under the seed
    g = graphpai.as_graph(model)
    assert init_a.rows() == spectral(g, None, layer_weights(clone)).rows()
    trained = spectral(model)
    d = graphpai.spectral.distance(init_a, trained)
    assert all(v is not None and v > 0 for v in d.layers.values())


def test_weights_init_ignores_torch_prune_hooks():
    from graphpai.torch import models
    from graphpai.torch.masks import apply_masks

    plain = models.build("lenet5", seed=0)
    pruned = apply_masks(models.build("lenet5", seed=0),
                         {"features.0": np.zeros((6, 1, 5, 5), dtype=bool)})
    dense = {n: np.ones(l.weight_shape, bool) for n, l in graphpai.as_graph(plain).layers.items()}
    a = spectral(plain, dense, weights="init", seed=4)  # the same masks: only weights differ
    b = spectral(pruned, dense, weights="init", seed=4)
    assert a.rows() == b.rows()  # the whole weight is re-drawn, not only its masked view
    assert spectral(pruned, weights="init", seed=4).layer("features.0").E == 0  # its own mask
    assert hasattr(pruned.features[0], "weight_mask")  # and the model keeps its hooks


def test_weights_init_on_a_non_zoo_model_uses_reset_parameters():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(20, 12), torch.nn.ReLU(),
                                torch.nn.Linear(12, 5))
    model.input_shape = (20,)
    report = spectral(model, weights="init", seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        a, b = torch.nn.Linear(20, 12), torch.nn.Linear(12, 5)  # same draws, same order
    x = np.abs(a.weight.detach().double().numpy())
    expected = np.linalg.svd(x, compute_uv=False)
    assert report.layer("1").weighted_sigma_1 == pytest.approx(expected[0], rel=1e-12)
    assert report.layer("1").weighted_sigma_2 == pytest.approx(expected[1], rel=1e-12)


def test_torch_tensor_weights_and_masks():
    g = _net()
    masks, weights = _state(g, 0.3, seed=10)
    tensors = {k: torch.from_numpy(v) for k, v in weights.items()}
    assert spectral(g, masks, tensors).rows() == spectral(g, masks, weights).rows()


def _two_fc(mask1, mask2):
    g = NetGraph([Group("x", mask1.shape[1]), Group("h", mask1.shape[0]),
                  Group("y", mask2.shape[0])],
                 [Layer("fc1", "linear", mask1.shape, "x", "h"),
                  Layer("fc2", "linear", mask2.shape, "h", "y")], [], ["x"], ["y"])
    return g, MaskSet({"fc1": mask1, "fc2": mask2})


def test_issue_13_9_header_says_when_no_layer_passes_the_gate():
    # every fan-in position has degree 1, so d_L = 1 < 3 in both layers: nothing is scored
    g, masks = _two_fc(np.eye(6, dtype=bool), np.eye(6, dtype=bool)[:4])
    report = spectral(g, masks)
    assert all(r.delta_r is None for r in report.layers)
    sentence = ("0 of 2 layers scored: no layer passes the iclr23 gate d_L >= 3 and d_R >= 3 "
                "at this density.")
    assert report.scored_sentence() == sentence
    lines = report.to_text().splitlines()
    assert lines[1] == sentence                      # the table's header, not a footnote
    causes = report.reasons_by_cause()
    # d_L = 1 in both layers: one cause, its numbers taken out, every whole-layer field
    fields, layers = causes["gate iclr23: d_L < 3"]
    assert layers == ["fc1", "fc2"]
    assert fields == ["delta_r", "delta_r_norm", "delta_s", "delta_s_norm", "narc"]
    assert causes["no weights"] == (["weighted_gap", "weighted_sigma_1", "weighted_sigma_2",
                                     "imdb_lambda"], ["fc1", "fc2"])
    # one line per cause, not one per layer and field
    start = lines.index("not scored, by cause:")
    assert len(lines) - start - 1 == len(causes)
    n_reasons = sum(len(r.reasons) for r in report.layers)
    assert len(causes) < n_reasons


def test_issue_13_9_header_counts_scored_layers():
    dense = np.ones((5, 4), dtype=bool)   # K_{4,5}: d_L = 5, d_R = 4, scored
    sparse = np.eye(5, dtype=bool)[:3]    # d_L = 1: not scored
    g, masks = _two_fc(dense, sparse)
    report = spectral(g, masks)
    assert report.scored_sentence() == ("1 of 2 layers scored: the other 1 fail the iclr23 gate "
                                        "d_L >= 3 and d_R >= 3.")
    g, masks = _two_fc(dense, np.ones((3, 5), dtype=bool))
    assert spectral(g, masks).scored_sentence() == "2 of 2 layers scored."
    # a reason that is not the gate: the sentence points to the grouped reasons
    g, masks = _two_fc(dense, np.zeros((3, 5), dtype=bool))
    report = spectral(g, masks)
    assert report.scored_sentence() == "1 of 2 layers scored (reasons below)."
    assert report.reasons_by_cause()["empty layer"][1] == ["fc2"]


def test_issue_13_9_causes_drop_each_layers_numbers():
    from graphpai.spectral.report import _cause

    assert _cause("gate iclr23: d_L = 2.308 < 3") == "gate iclr23: d_L < 3"
    assert _cause("gate neurips23: d_L = 1 <= 1") == "gate neurips23: d_L <= 1"
    assert _cause("gate iclr23: d_R = 2.9999999999 < 3") == "gate iclr23: d_R < 3"
    assert (_cause("sigma_1 = 0.5 < 1: 2 sqrt(sigma_1 - 1) is not real")
            == "sigma_1 < 1: 2 sqrt(sigma_1 - 1) is not real")
    assert _cause("empty layer") == "empty layer"


def test_progress_bar_counts_layers(monkeypatch):
    from graphpai import _progress

    counted = []

    class Bar:
        def __init__(self, *args, total=None, **kwargs):
            self.total, self.n = total, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            counted.append((self.total, self.n))
            return False

        def update(self, n=1):
            self.n += n

    monkeypatch.setattr(_progress, "should_show", lambda progress: progress)
    import tqdm.auto
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    g = _net()
    masks, weights = _state(g, 0.3, seed=2)
    spectral(g, masks, weights, progress=True)
    assert counted == [(5, 5)]
    counted.clear()
    spectral(g, masks, weights)              # off by default
    assert counted == []


def test_issue_13_7_a_torch_pruned_model_is_not_reported_dense():
    import torch
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    model.input_shape = (20,)
    prune.random_unstructured(model[0], "weight", amount=0.75)
    kept = int(model[0].weight_mask.sum())
    report = spectral(model)
    assert report.layers[0].E == kept < 20 * 16          # the buffer, not a dense layer
    assert report.layers[1].E == 16 * 4                  # no mask there: dense
    assert report.masks_source.startswith("model: ") and "prune" in report.masks_source
    assert "masks model: " in report.to_text().splitlines()[0]
    assert report.to_dict()["masks_source"] == report.masks_source
    g = report_module.as_graph(model)
    assert spectral(g).masks_source == "dense"
    assert spectral(model, {n: np.ones(l.weight_shape, bool) for n, l in g.layers.items()}
                    ).masks_source == "given"
