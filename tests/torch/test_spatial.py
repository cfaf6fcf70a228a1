"""The exact spatial activity engine (docs/definitions.md#spatial-semantics) against naive oracles."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from graphpai.errors import GraphpaiError, MaskError
from graphpai.graph import Group, Layer, Link, NetGraph
from graphpai.torch.spatial import activity, active_fan_in, backward_maps, forward_maps

from oracles import UnrolledGraph, naive_active_fan_in, vk_functional
from strategies import graph_and_mask, random_masks, tiny_graph, tiny_models

TINY = sorted(tiny_models())


def _same(a, b):
    assert set(a) == set(b)
    for key in a:
        assert a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("density", [0.15, 0.4, 1.0])
def test_maps_and_functional_equal_unrolled_graph(name, density):
    graph, _ = tiny_graph(name)
    for seed in range(4):
        masks = random_masks(graph, density, seed)
        oracle = UnrolledGraph(graph, masks)
        result = activity(graph, masks)
        _same(result.forward, oracle.maps(oracle.forward_reach()))
        _same(result.backward, oracle.maps(oracle.backward_reach()))
        _same(result.functional, oracle.functional())


@pytest.mark.parametrize("name", TINY)
def test_functional_equals_vk_gradient_test(name):
    graph, model = tiny_graph(name)
    shape = tiny_models()[name][1]
    for seed, density in enumerate([0.1, 0.3, 0.6, 1.0]):
        masks = random_masks(graph, density, seed)
        _same(activity(graph, masks).functional, vk_functional(model, masks, shape))


@given(graph_and_mask(torch_models=False))
def test_hand_graphs_match_unrolled_graph(case):
    graph, masks = case
    oracle = UnrolledGraph(graph, masks)
    result = activity(graph, masks)
    _same(result.forward, oracle.maps(oracle.forward_reach()))
    _same(result.functional, oracle.functional())
    _same(forward_maps(graph, masks), result.forward)
    _same(backward_maps(graph, masks), result.backward)


def test_dense_maps_are_all_ones_without_padding_effects():
    graph, _ = tiny_graph("tiny_resnet")
    for name, m in forward_maps(graph).items():
        assert m.all(), name


@st.composite
def conv_layers(draw):
    nd = draw(st.sampled_from([1, 2]))
    k = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(nd))
    size = tuple(draw(st.integers(1, 5)) for _ in range(nd))
    out = tuple((n + a + b - dilation * (k - 1) - 1) // stride + 1 for n, (a, b) in zip(size, pads))
    if min(out) < 1:
        out = None
    c_in = draw(st.integers(1, 3))
    layer = Layer("c", "conv", (2, c_in) + (k,) * nd, "x", "y", (stride,) * nd, pads,
                  (dilation,) * nd, in_size=size, out_size=out or ())
    return layer, draw(st.integers(0, 2**16)), out is not None


@given(conv_layers())
def test_active_fan_in_matches_naive_loops(case):
    layer, seed, valid = case
    assume(valid)  # the kernel fits in the padded input
    rng = np.random.default_rng(seed)
    input_map = rng.random((layer.in_channels,) + layer.in_size) < 0.5
    got = active_fan_in(layer, input_map)
    assert got.shape == (layer.fan_in,)
    assert np.array_equal(got, naive_active_fan_in(layer, input_map))


def test_active_fan_in_grouped_and_linear():
    layer = Layer("g", "conv", (4, 1, 3, 3), "x", "y", (1, 1), ((1, 1), (1, 1)), (1, 1),
                  groups=2, in_size=(3, 3), out_size=(3, 3))
    input_map = np.zeros((2, 3, 3), dtype=bool)
    input_map[1, 0, 0] = True  # only channel 1 (group 1), top-left pixel
    got = active_fan_in(layer, input_map)
    assert got.shape == (2, 9)
    assert not got[0].any()
    # pixel (0, 0) is read at tap (a, b) by output pixel (1 - a, 1 - b): taps a, b in {0, 1}
    expected = np.zeros((3, 3), dtype=bool)
    expected[:2, :2] = True
    assert np.array_equal(got[1].reshape(3, 3), expected)
    linear = Layer("fc", "linear", (3, 4), "x", "y")
    assert np.array_equal(active_fan_in(linear, [1, 0, 0, 1]), [True, False, False, True])
    with pytest.raises(GraphpaiError, match="expected"):
        active_fan_in(layer, np.ones((2, 4, 4), dtype=bool))


@pytest.mark.parametrize("name", TINY)
def test_place_sees_the_forward_map_of_its_input(name):
    graph, _ = tiny_graph(name)
    masks = random_masks(graph, 0.5, 7)
    maps = forward_maps(graph, masks)
    seen = []

    def place(layer, input_map):
        seen.append(layer.name)
        assert np.array_equal(input_map, maps[layer.source])
        return masks[layer.name]

    _same(forward_maps(graph, None, place=place), maps)
    assert seen == list(graph.layers)


def test_place_mask_with_wrong_shape_is_a_mask_error():
    graph, _ = tiny_graph("conv1d")
    with pytest.raises(MaskError, match="place"):
        forward_maps(graph, place=lambda layer, x: np.ones((1, 1), dtype=bool))


def test_one_empty_layer_disconnects_everything_downstream():
    graph, _ = tiny_graph("tiny_resnet")
    masks = dict(random_masks(graph, 1.0, 0))
    masks["stem"] = np.zeros_like(masks["stem"])
    result = activity(graph, masks)
    assert not result.forward[graph.outputs[0]].any()
    assert not any(m.any() for m in result.functional.values())


def test_asymmetric_padding_in_one_dimension():
    # a 2-tap conv with padding (0, 1): the last output pixel reads the padding at tap 1
    graph = NetGraph(
        [Group("x", 1, (3,)), Group("y", 1, (3,))],
        [Layer("c", "conv", (1, 1, 2), "x", "y", (1,), ((0, 1),), (1,), in_size=(3,),
               out_size=(3,))], [], ["x"], ["y"])
    assert forward_maps(graph, {"c": [[[0, 1]]]})["y"].tolist() == [[True, True, False]]
    assert forward_maps(graph, {"c": [[[1, 0]]]})["y"].tolist() == [[True, True, True]]


@pytest.mark.parametrize("device", ["bogus", "cuda:99", 3.5])
def test_issue_3_unusable_device_is_a_one_line_graphpai_error(device):
    # 'cuda:99': torch without CUDA, or no 100th GPU; either way a GraphpaiError, not torch's
    from graphpai.functional import audit
    from graphpai.paths import effective_paths

    graph, _ = tiny_graph("conv1d")
    for run in (lambda: audit(graph, semantics="spatial", device=device),
                lambda: effective_paths(graph, device=device),
                lambda: forward_maps(graph, device=device)):
        with pytest.raises(GraphpaiError, match=f"device '{device}' cannot run") as info:
            run()
        assert "\n" not in str(info.value)
    assert forward_maps(graph, device=None)[graph.outputs[0]].all()  # None: torch's default


def test_issue_3_cuda_maps_run_without_tf32():
    # TF32 rounds to 10 mantissa bits: the 0/1 maps must be computed in true float32 on CUDA.
    # The switch itself needs no GPU; the flag is restored afterwards, also on error.
    import torch

    from graphpai.torch.spatial import _exact

    before = torch.backends.cudnn.allow_tf32
    with _exact(torch.device("cuda")):
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 == before
    with pytest.raises(KeyError), _exact(torch.device("cuda")):
        raise KeyError
    assert torch.backends.cudnn.allow_tf32 == before
    with _exact(torch.device("cpu")):
        assert torch.backends.cudnn.allow_tf32 == before


# ------------------------------------------------------------------ the engine interface
def _imports(path, package):
    """(modules imported at module level, modules imported anywhere) by one source file of
    `package`, as absolute names ("graphpai.paths", "torch.nn", ...)."""
    import ast
    import pathlib

    tree = ast.parse(pathlib.Path(path).read_text())
    parts = package.split(".")

    def names(nodes):
        out = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom):
                base = ".".join(parts[:len(parts) - node.level] if node.level else [])
                module = ".".join(filter(None, [base, node.module]))
                out |= {module} | {f"{module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
        return out

    return names(tree.body), names(ast.walk(tree))


def test_import_arrows_run_one_way():
    """The engine imports no analysis; the core imports no torch at import time, reaches the
    engine only through graphpai.engine, and takes no private name from another module."""
    import graphpai

    root = __import__("pathlib").Path(graphpai.__file__).parent
    _, engine_any = _imports(root / "torch" / "spatial.py", "graphpai.torch.spatial")
    assert not any(n.startswith(("graphpai.functional", "graphpai.paths")) for n in engine_any)
    for core in ("functional", "paths", "engine"):
        top, anywhere = _imports(root / f"{core}.py", f"graphpai.{core}")
        assert not any(n.split(".")[0] == "torch" for n in top), (core, top)
        assert not any(n.startswith("graphpai.torch.spatial") for n in anywhere), core
        private = [n for n in anywhere if n.startswith("graphpai.")
                   and n.rsplit(".", 1)[-1].startswith("_") and not n.startswith("graphpai._")]
        assert not private, (core, private)


def test_analyses_reach_the_engine_only_through_the_interface():
    """A stand-in engine set with set_spatial_engine answers every spatial call of the core."""
    import graphpai.engine as engine
    import graphpai.torch.spatial as torch_engine
    from graphpai.functional import audit
    from graphpai.paths import effective_paths, paths

    calls = []

    class Recorder:
        def __getattr__(self, name):
            def call(*args, **kwargs):
                calls.append(name)
                return getattr(torch_engine, name)(*args, **kwargs)
            return call

    graph, _ = tiny_graph("tiny_resnet")
    masks = random_masks(graph, 0.4, 3)
    before = engine.set_spatial_engine(Recorder())
    try:
        spatial = audit(graph, masks, semantics="spatial")
        log10 = effective_paths(graph, masks, profile="npb")
        paths(graph, masks)
    finally:
        engine.set_spatial_engine(before)
    assert calls == ["activity", "log10_paths", "activity", "log10_paths"]
    assert engine.spatial_engine() is torch_engine
    assert spatial.functional_masks["stem"].shape == masks["stem"].shape
    assert np.isfinite(log10)
    _same(dict(spatial.functional_masks), UnrolledGraph(graph, masks).functional())


def test_register_link_teaches_the_engine_a_new_op():
    """A new link kind needs only its forward map; the backward map is its transpose."""
    import torch

    from graphpai.torch.spatial import _LINKS, register_link

    graph = NetGraph(
        [Group("x", 1, (3,)), Group("h", 2, (3,)), Group("r", 2, (3,)), Group("y", 1, (3,))],
        [Layer("a", "conv", (2, 1, 1), "x", "h", (1,), ((0, 0),), (1,), in_size=(3,),
               out_size=(3,)),
         Layer("b", "conv", (1, 2, 1), "r", "y", (1,), ((0, 0),), (1,), in_size=(3,),
               out_size=(3,))],
        [Link("roll", "roll", ("h",), "r")], ["x"], ["y"])
    # "roll": channel c of r reads channel c of h one pixel to the right (a nonnegative linear op)
    register_link("roll", lambda xs, link, graph, pool: torch.roll(xs[0], -1, dims=2))
    try:
        masks = {"a": np.array([[[1]], [[0]]]), "b": np.array([[[1], [1]]])}
        result = activity(graph, masks)
    finally:
        del _LINKS["roll"]
    assert result.forward["r"].tolist() == [[True] * 3, [False] * 3]
    assert result.backward["h"].tolist() == [[True] * 3, [True] * 3]
    assert result.functional["a"].astype(int).tolist() == [[[1]], [[0]]]
    assert result.functional["b"].astype(int).tolist() == [[[1], [0]]]
    with pytest.raises(GraphpaiError, match="unknown link kind 'roll'"):
        activity(graph, masks)


# ------------------------------------------------------------------ memory (issue 13.20)
def _big_mlp(n_in, n_hidden, n_out):
    return NetGraph([Group("x", n_in), Group("h", n_hidden), Group("y", n_out)],
                    [Layer("fc1", "linear", (n_hidden, n_in), "x", "h"),
                     Layer("fc2", "linear", (n_out, n_hidden), "h", "y")], [], ["x"], ["y"])


@pytest.mark.parametrize("block_bytes", [None, 1 << 16])
def test_big_sparse_layers_run_in_blocks_and_equal_a_small_oracle(monkeypatch, block_bytes):
    """A 3000 x 2500 linear at 1% (and a conv) on blocks of a few rows give exactly the numbers of
    a plain numpy count: paths = 1^T B A 1 in exact integers, functional = kept & reached &
    co-reached."""
    import math

    import graphpai.torch.spatial as engine
    from graphpai.paths import effective_paths

    if block_bytes:
        monkeypatch.setattr(engine, "BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(0)
    graph = _big_mlp(2500, 3000, 40)
    a = rng.random((3000, 2500)) < 0.01
    b = rng.random((40, 3000)) < 0.05
    count = (b.astype(np.int64) @ (a.astype(np.int64) @ np.ones(2500, dtype=np.int64))).sum()
    assert effective_paths(graph, {"fc1": a, "fc2": b}) == pytest.approx(math.log10(count),
                                                                        abs=1e-12)
    result = activity(graph, {"fc1": a, "fc2": b})
    reached_h, coreached_h = a.any(axis=1), b.any(axis=0)
    assert np.array_equal(result.functional["fc1"], a & coreached_h[:, None])
    assert np.array_equal(result.functional["fc2"], b & reached_h[None, :])
    conv_graph, _ = tiny_graph("tiny_resnet")
    masks = random_masks(conv_graph, 0.4, 1)
    _same(activity(conv_graph, masks).functional, UnrolledGraph(conv_graph, masks).functional())


def test_a_layer_that_cannot_fit_is_a_one_line_error_naming_it(monkeypatch):
    import graphpai.torch.spatial as engine
    from graphpai.paths import effective_paths

    graph = _big_mlp(300, 400, 10)
    monkeypatch.setattr(engine, "_available", lambda device: 100_000)  # 100 kB free
    for run in (lambda: effective_paths(graph), lambda: activity(graph)):
        with pytest.raises(GraphpaiError, match=r"layer 'fc1' \(weight \(400, 300\)\) needs about "
                                                r"0\.\d+ GiB .* only 0\.00 GiB is free") as info:
            run()
        assert "\n" not in str(info.value)

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 16.4 GiB")

    monkeypatch.setattr(engine, "_available", lambda device: None)
    monkeypatch.setattr(engine, "_weight", no_memory)
    with pytest.raises(GraphpaiError, match="layer 'fc1'.*it does not fit"):
        effective_paths(graph)
