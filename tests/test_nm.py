"""N:M semi-structured masks (docs/llm.md): the generator keeps exactly N of every M consecutive
input weights, the check agrees with a loop over groups, and the audit flags a layer that breaks
the pattern."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graphpai
from graphpai.errors import BudgetError, MaskError, ModelError, UnknownMethodError
from graphpai.generators import nm_masks
from graphpai.graph import Group, Layer, NetGraph
from graphpai.masks import MaskSet, nm_compliant, nm_violations, parse_nm
from oracles import mha_encoder

PATTERNS = [(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 8), (4, 4)]


def loop_group_counts(mask, m):
    """Kept weights of every group, by explicit loops over (row, kernel tap, group)."""
    mask = np.asarray(mask, dtype=bool)
    counts = []
    taps = list(itertools.product(*(range(k) for k in mask.shape[2:])))
    for o in range(mask.shape[0]):
        for tap in taps:
            for g in range(mask.shape[1] // m):
                counts.append(sum(bool(mask[(o, g * m + j) + tap]) for j in range(m)))
    return counts


@st.composite
def weight_cases(draw):
    n, m = draw(st.sampled_from(PATTERNS))
    c_out = draw(st.integers(1, 5))
    width = m * draw(st.integers(1, 4))
    kernel = draw(st.sampled_from([(), (3,), (2, 3), (1, 1)]))
    seed = draw(st.integers(0, 2**16))
    values = np.random.default_rng(seed).normal(size=(c_out, width, *kernel))
    if draw(st.booleans()):  # ties: values on a coarse grid
        values = np.round(values)
    return (n, m), values, seed


@given(weight_cases(), st.sampled_from(["magnitude", "random"]))
def test_generated_masks_keep_exactly_n_of_every_m(case, scores):
    (n, m), values, seed = case
    mask = nm_masks({"w": values}, (n, m), scores=scores, seed=seed)["w"]
    assert mask.shape == values.shape and mask.dtype == bool
    counts = loop_group_counts(mask, m)
    assert counts and all(c == n for c in counts)
    assert nm_compliant(mask, (n, m)) and nm_violations(mask, f"{n}:{m}") == 0
    assert mask.sum() == values.size * n // m


@given(weight_cases())
def test_magnitude_keeps_the_n_largest_of_each_group(case):
    (n, m), values, _ = case
    mask = nm_masks({"w": values}, (n, m))["w"]
    taps = list(itertools.product(*(range(k) for k in values.shape[2:])))
    for o, tap in itertools.product(range(values.shape[0]), taps):
        for g in range(values.shape[1] // m):
            idx = [(o, g * m + j) + tap for j in range(m)]
            mags = [abs(values[i]) for i in idx]
            # the reference: a stable sort of -|w|, so ties keep the lower input index
            best = sorted(range(m), key=lambda j: (-mags[j], j))[:n]
            assert [bool(mask[i]) for i in idx] == [j in best for j in range(m)]


@given(st.sampled_from(PATTERNS), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**16),
       st.sampled_from([(), (3,), (2, 2)]))
def test_compliance_and_violations_match_a_loop(pattern, c_out, groups, seed, kernel):
    n, m = pattern
    rng = np.random.default_rng(seed)
    mask = rng.random((c_out, groups * m, *kernel)) < rng.random()
    counts = loop_group_counts(mask, m)
    assert nm_violations(mask, pattern) == sum(c > n for c in counts)
    assert nm_compliant(mask, pattern) == all(c <= n for c in counts)


def test_compliance_on_hand_made_masks():
    assert nm_compliant([[1, 1, 0, 0, 0, 0, 1, 1]], "2:4")
    assert nm_compliant([[0, 0, 0, 0, 1, 0, 0, 0]], "2:4")  # fewer than N kept is allowed
    assert not nm_compliant([[1, 1, 1, 0, 0, 0, 0, 0]], "2:4")
    assert nm_violations([[1, 1, 1, 0, 1, 1, 1, 1]], "2:4") == 2
    # groups run along the input channels, not across rows or along the kernel
    conv = np.zeros((1, 4, 3), dtype=bool)
    conv[0, :2, :] = True  # input channels 0, 1 at every tap: 2 of 4 per tap
    assert nm_compliant(conv, "2:4")
    conv[0, 2, 1] = True  # tap 1 now keeps 3 of its 4 input channels
    assert nm_violations(conv, "2:4") == 1
    assert nm_violations([[1, 0, 1]], "2:4") is None and not nm_compliant([[1, 0, 1]], "2:4")


def test_random_nm_is_seeded_and_uniform_over_the_patterns():
    shape = (64, 4096)
    a = nm_masks({"w": np.zeros(shape)}, "2:4", scores="random", seed=3)["w"]
    b = nm_masks({"w": np.zeros(shape)}, "2:4", scores="random", seed=3)["w"]
    c = nm_masks({"w": np.zeros(shape)}, "2:4", scores="random", seed=4)["w"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    codes = a.reshape(-1, 4) @ np.array([1, 2, 4, 8])
    freq = np.bincount(codes, minlength=16)[[3, 5, 6, 9, 10, 12]] / codes.size
    assert freq.sum() == 1.0
    # 65,536 groups: each of the C(4, 2) = 6 subsets has frequency 1/6 +- 0.0015 (1 sd)
    assert np.all(np.abs(freq - 1 / 6) < 0.01)


def _mlp_graph():
    groups = [Group("x", 6), Group("h", 8), Group("z", 8), Group("y", 3)]
    layers = [Layer("a", "linear", (8, 6), "x", "h"), Layer("b", "linear", (8, 8), "h", "z"),
              Layer("c", "linear", (3, 8), "z", "y")]
    return NetGraph(groups, layers, [], ["x"], ["y"])


def test_layers_that_cannot_be_grouped_stay_dense_or_are_errors():
    g = _mlp_graph()
    masks = nm_masks(g, "2:4", scores="random", seed=0)
    assert masks["a"].all()  # width 6 is not a multiple of 4: dense, as NVIDIA's ASP leaves it
    assert masks.counts() == {"a": 48, "b": 32, "c": 12}
    with pytest.raises(MaskError, match=r"'a'.*not a multiple of 4"):
        nm_masks(g, "2:4", scores="random", layers=["a", "b"])
    only_b = nm_masks(g, "2:4", scores="random", layers=["b"], seed=0)
    assert only_b.counts() == {"a": 48, "b": 32, "c": 24}
    assert nm_masks(g, "2:4", scores="random", exclude=["c"]).counts()["c"] == 24
    with pytest.raises(MaskError, match="unknown layer"):
        nm_masks(g, "2:4", scores="random", exclude=["lm_head"])
    with pytest.raises(ModelError, match="needs the weights"):
        nm_masks(g, "2:4")
    with pytest.raises(UnknownMethodError, match="unknown N:M scores"):
        nm_masks(g, "2:4", scores="wanda")


@pytest.mark.parametrize("bad", ["2", "2:x", (4, 2), (0, 4), "a:b:c"])
def test_bad_patterns_say_how_to_write_one(bad):
    with pytest.raises(MaskError, match="N:M pattern"):
        parse_nm(bad)


def test_audit_flags_a_layer_that_breaks_the_pattern():
    g = _mlp_graph()
    masks = dict(nm_masks(g, "2:4", scores="random", seed=1))
    broken = masks["b"].copy()
    row = broken[5, 4:8]
    row[~row.copy()] = True  # the second group of row 5 keeps all 4
    masks["b"] = broken
    result = graphpai.audit(g, masks, nm="2:4")
    assert {r.layer: r.nm_compliant for r in result.layers} == {"a": False, "b": False, "c": True}
    assert result.to_dict()["layers"][1]["nm_compliant"] is False
    assert all(r.nm_compliant is None for r in graphpai.audit(g, masks).layers)
    # 2:4 layers are 4:8 compliant; row 5 of b keeps 2 + 4 = 6 of its 8
    assert [r.nm_compliant for r in graphpai.audit(g, masks, nm="4:8").layers] == [False, False, True]
    with pytest.raises(MaskError, match="N:M pattern"):
        graphpai.audit(g, masks, nm="4:2")


def test_prune_nm_on_a_torch_model():
    torch = pytest.importorskip("torch")  # the torch adapter is optional for the core tests
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    masks = graphpai.prune(model, "nm", compression=2)
    w2 = model[2].weight.detach().numpy()
    assert masks["0"].all()  # 3 input channels: not grouped
    assert all(c == 2 for c in loop_group_counts(masks["2"], 4))
    assert all(c == 2 for c in loop_group_counts(masks["5"], 4))
    assert np.array_equal(masks["2"], nm_masks({"2": w2}, "2:4")["2"])
    eight = graphpai.prune(model, "nm", compression=2, pattern="4:8", scores="random", seed=0)
    assert all(c == 4 for c in loop_group_counts(eight["5"], 8))
    one_of_four = graphpai.prune(model, "nm", compression=4)
    assert all(c == 1 for c in loop_group_counts(one_of_four["5"], 4))
    with pytest.raises(BudgetError, match="compression=2"):
        graphpai.prune(model, "nm", compression=3, pattern="2:4")
    with pytest.raises(BudgetError, match="not M/N"):
        graphpai.prune(model, "nm", compression=3)
    audit = graphpai.audit(model, masks, input_shape=(3, 8, 8), nm="2:4")
    assert [r.nm_compliant for r in audit.layers] == [False, True, True]


def test_meta_weights_need_random_scores():
    torch = pytest.importorskip("torch")
    with torch.device("meta"):
        model = torch.nn.Linear(8, 4)
    with pytest.raises(ModelError, match="meta device"):
        nm_masks(model, "2:4")
    assert nm_masks(model, "2:4", scores="random", seed=0).kept() == 16
    assert math.comb(4, 2) == 6


def test_a_layer_too_big_for_memory_is_one_error_naming_it():
    huge = NetGraph([Group("x", 1 << 20), Group("y", 1 << 20)],
                    [Layer("model.layers.0.mlp.up_proj", "linear", (1 << 20, 1 << 20), "x", "y")],
                    [], ["x"], ["y"])  # 2^40 weights: 1024 GiB of mask
    with pytest.raises(graphpai.GraphpaiError,
                       match=r"layer 'model\.layers\.0\.mlp\.up_proj' .* needs 1024\.00 GiB"):
        nm_masks(huge, "2:4", scores="random")


def test_cli_audit_checks_a_pattern_and_reads_safetensors(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    import json

    from graphpai.cli import main

    masks = nm_masks(_mlp_graph(), "2:4", scores="random", seed=0)
    model_file = tmp_path / "net.py"
    model_file.write_text("import torch.nn as nn\n"
                          "def build():\n"
                          "    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8),"
                          " nn.ReLU(), nn.Linear(8, 3))\n")
    renamed = masks.rename({"a": "0", "b": "2", "c": "4"})
    renamed.save(tmp_path / "m.safetensors")
    args = ["audit", "--model-file", f"{model_file}:build", "--input-shape", "6",
            "--masks", str(tmp_path / "m.safetensors"), "--nm", "2:4"]
    assert main(args) == 0
    assert "N:M 2:4: 2/3 layers compliant; not: 0" in capsys.readouterr().out
    assert main(args + ["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["layers"]
    assert [r["nm_compliant"] for r in rows] == [False, True, True]
    assert main(args[:-1] + ["2:x"]) == 2
    assert "N:M pattern '2:x'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["gpt", "vit", "mobilenetv2"])
def test_zoo_transformers_and_mobilenet_get_nm_masks_the_audit_confirms(name):
    pytest.importorskip("torch")
    from graphpai.torch import models

    model = models.build(name, seed=0)
    masks = graphpai.prune(model, "nm", compression=2)
    for semantics in ("channel", "spatial") if name == "gpt" else ("channel",):
        result = graphpai.audit(model, masks, nm="2:4", semantics=semantics)
        for row in result.layers:
            mask = masks[row.layer]
            groupable = mask.shape[1] % 4 == 0  # depthwise convs (width 1), the 3-channel stem: no
            assert row.nm_compliant == groupable, row.layer
            if not groupable:
                assert mask.all()
            elif mask.size <= 20000:  # the loop is slow; bigger layers: exactly half kept
                assert all(c == 2 for c in loop_group_counts(mask, 4))
            else:
                assert mask.sum() * 2 == mask.size
        assert result.functional <= result.kept


def test_nm_rows_are_regular_so_paths_have_a_closed_form():
    pytest.importorskip("torch")  # the path count runs in the spatial engine
    from graphpai.graph import Link
    from graphpai.paths import channel_paths, effective_paths

    groups = [Group("x", 8), Group("h", 8), Group("r", 8), Group("y", 4)]
    layers = [Layer("a", "linear", (8, 8), "x", "h"), Layer("b", "linear", (4, 8), "r", "y")]
    g = NetGraph(groups, layers, [Link("res", "add", ("x", "h"), "r")], ["x"], ["y"])
    masks = nm_masks(g, "2:4", scores="random", seed=7)
    # every row keeps 4 of 8: h = 4 per feature, r = 1 + 4, y = 4 * 5 per logit, R = 4 * 20
    assert effective_paths(g, masks) == pytest.approx(math.log10(80), abs=1e-12)
    assert channel_paths(g, masks) == pytest.approx(math.log10(80), abs=1e-12)


def test_nm_reaches_attention_in_proj_and_transposed_conv1d_layers():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    torch.manual_seed(0)
    model = mha_encoder()
    masks = nm_masks(model, "2:4")
    w = model.attn.in_proj_weight.detach().numpy()
    assert masks["attn.in_proj_weight"].shape == (24, 8)
    assert np.array_equal(masks["attn.in_proj_weight"], nm_masks({"w": w}, "2:4")["w"])
    assert all(masks.nm_compliant("2:4").values())
    transformers = pytest.importorskip("transformers")
    conv1d = transformers.pytorch_utils.Conv1D(4, 8)  # weight held (in=8, out=4)
    holder = nn.Sequential(conv1d)
    got = nm_masks(holder, "2:4")["0"]
    assert got.shape == (4, 8)  # the layer's (out, in) order
    expected = nm_masks({"w": conv1d.weight.detach().numpy().T}, "2:4")["w"]
    assert np.array_equal(got, expected)
