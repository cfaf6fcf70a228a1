"""The memory checks (graphpai._memory): an entry point that cannot fit stops with one error
naming the layer, the memory it would take and what to do, before it allocates or writes
anything; with the memory there is nothing to see (the other tests run with the real value)."""

import numpy as np
import pytest

import graphpai._memory as memory
from graphpai import paths as paths_module
from graphpai.errors import GraphpaiError
from graphpai.functional import audit, functional_edges
from graphpai.graph import Group, Layer, NetGraph
from graphpai.masks import MaskSet
from graphpai.paths import channel_paths, paths
from graphpai.spectral import report as report_module
from graphpai.spectral import spectral


def mlp():
    """x(32) -> fc1 (64, 32) -> fc2 (128, 64) -> head (10, 128): 11,520 weights."""
    return NetGraph([Group("x", 32), Group("h1", 64), Group("h2", 128), Group("y", 10)],
                    [Layer("fc1", "linear", (64, 32), "x", "h1"),
                     Layer("fc2", "linear", (128, 64), "h1", "h2"),
                     Layer("head", "linear", (10, 128), "h2", "y")], [], ["x"], ["y"])


N = 64 * 32 + 128 * 64 + 10 * 128


def half(graph, seed=0):
    rng = np.random.default_rng(seed)
    return MaskSet({name: rng.random(layer.weight_shape) < 0.5
                    for name, layer in graph.layers.items()})


@pytest.fixture
def free(monkeypatch):
    """free(n): pretend n bytes are available."""
    def set_free(n):
        monkeypatch.setattr(memory, "available_memory", lambda: n)
    return set_free


def test_human_units():
    assert memory.human(900) == "900 B"
    assert memory.human(3 * 2**10) == "3.0 KiB"
    assert memory.human(12.5 * 2**20) == "12.5 MiB"
    assert memory.human(3 * 2**29) == "1.50 GiB"


def test_require_raises_only_when_the_bytes_do_not_fit(free):
    free(1000)
    memory.require(1000, "x", "y")
    with pytest.raises(GraphpaiError, match=r"^layer 'a' would take about 1\.0 KiB, but only "
                                            r"1000 B is free; do less$"):
        memory.require(1024, "layer 'a'", "do less")
    free(None)  # the system does not say: no check
    memory.require(10**18, "x", "y")
    assert memory.fits(10**18)


def test_audit_of_the_dense_network_names_the_largest_layer(free):
    graph = mlp()
    free(N)  # the all-ones masks alone (N bytes + one layer's copy) do not fit
    with pytest.raises(GraphpaiError) as info:
        audit(graph)
    message = str(info.value)
    assert "all-ones masks" in message and "3 layers, 11,520 weights" in message
    assert "'fc2' (128, 64)" in message and "KiB" in message and "free memory" in message


def test_audit_stops_before_its_functional_masks(free):
    graph, masks = mlp(), half(mlp())
    free(2 * N - 1)  # the masks are given; the functional masks and their MaskSet take 2N
    with pytest.raises(GraphpaiError, match="functional masks of a channel audit .*'fc2'"):
        audit(graph, masks)
    with pytest.raises(GraphpaiError, match="functional masks"):
        functional_edges(graph, masks)
    free(2 * N)
    assert audit(graph, masks).kept == masks.kept()


def test_paths_checks_the_channel_matrices_before_any_count(free, monkeypatch):
    graph, masks = mlp(), half(mlp())

    def no_work(*args, **kwargs):
        raise AssertionError("the effective weights were computed before the check")

    monkeypatch.setattr(paths_module, "_effective_weights", no_work)
    free(100_000)  # the functional masks (2N) and fc1 (40 * 2048) fit; fc2 (40 * ~4096) not
    with pytest.raises(GraphpaiError) as info:
        paths(graph, masks, semantics="channel")
    message = str(info.value)
    assert "layer 'fc2' (128, 64)" in message and "channel paths" in message
    assert "KiB" in message and "prune the layer further" in message
    with pytest.raises(GraphpaiError, match="'fc2'"):
        channel_paths(graph, masks)


def test_channel_paths_counts_the_kept_pairs_when_the_shape_bound_fails(free):
    graph = mlp()
    masks = dict(half(graph))
    masks["fc2"] = np.zeros((128, 64), dtype=bool)
    masks["fc2"][np.arange(10), np.arange(10)] = True  # 10 pairs: fits once counted
    free(None)
    expected = channel_paths(graph, masks)
    free(100_000)  # fc1 (40 * 2048 bytes) fits by shape, fc2 (40 * 8192) only by its count
    assert channel_paths(graph, masks) == expected


def test_spectral_names_the_layer_and_the_fixes_before_reading_weights(free, monkeypatch):
    graph, masks = mlp(), half(mlp())

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were read before the check")

    monkeypatch.setattr(report_module, "_resolve_weights", no_weights)
    free(1000)
    with pytest.raises(GraphpaiError) as info:
        spectral(graph, masks, workers=2)
    message = str(info.value)
    assert "spectral report" in message and "'fc2' (128, 64)" in message
    assert "2 layer(s) at a time" in message and "workers=1" in message
    assert "free memory" in message
    weights = {name: np.ones(layer.weight_shape, dtype=np.float32)
               for name, layer in graph.layers.items()}
    with pytest.raises(GraphpaiError, match="float64 weights for 11,520 weights"):
        spectral(graph, None, weights, workers=1)


def test_spectral_runs_when_one_layer_at_a_time_fits(free):
    graph, masks = mlp(), half(mlp())
    free(None)
    expected = spectral(graph, masks, workers=1).to_dict()
    need = max(report_module._row_need(layer, masks[name], False, 4096)
               for name, layer in graph.layers.items())
    free(need)  # the largest row fits alone, two at a time would not
    with pytest.raises(GraphpaiError, match="workers=1"):
        spectral(graph, masks, workers=2)
    assert spectral(graph, masks, workers=1).to_dict() == expected


def test_the_cli_writes_nothing_when_a_check_fails(free, monkeypatch, tmp_path, capsys):
    pytest.importorskip("torch", reason="the CLI's zoo models need torch")
    import graphpai.functional
    from graphpai.cli import main

    out, functional_out = tmp_path / "audit.json", tmp_path / "functional.npz"
    free(1000)
    code = main(["audit", "--model", "mlp", "--out", str(out), "--functional-out",
                 str(functional_out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("graphpai: error: ") and "would take about" in err
    assert not out.exists() and not functional_out.exists()

    # the audit fits and the paths after it do not: still nothing written
    real_audit = graphpai.functional.audit

    def audit_then_full(*args, **kwargs):
        result = real_audit(*args, **kwargs)
        free(1000)
        return result

    free(None)
    monkeypatch.setattr(graphpai.functional, "audit", audit_then_full)
    code = main(["audit", "--model", "mlp", "--paths", "--out", str(out)])
    assert code == 2 and "would take about" in capsys.readouterr().err
    assert not out.exists()

    # the spectral check comes before any float64 copy of the weights
    import graphpai.torch.extract as extract

    def no_copies(*args, **kwargs):
        raise AssertionError("float64 weights were made before the check")

    monkeypatch.setattr(extract, "layer_weights", no_copies)
    monkeypatch.setattr(report_module, "_resolve_weights", no_copies)
    free(1000)
    code = main(["spectral", "--model", "mlp", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "spectral report" in err and "float64 weights" in err
    assert not out.exists()
