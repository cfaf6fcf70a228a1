"""Weight tying (docs/graph.md#weight-tying): one weight applied at two places is one layer with
one mask, and the graph has an op for each use.

The models: a hand-written decoder whose LM head is its embedding's weight (``F.linear(h,
embed.weight)`` and ``h @ embed.weight.T``), the zoo's GPT with ``tie_weights=True``, a module
called twice (a Linear and a conv) and, when transformers is installed, ``GPT2LMHeadModel``
(``tie_word_embeddings=True``). Both semantics are compared with a gradient oracle written for
tying: the tied parameter is one tensor, so autograd sums the gradients of its uses, and the
one-hot token input of the embedding is a random positive "soft" one-hot (every token of the
vocabulary at every position, as the graph's all-ones one-hot input), fed as ``x @ W``.
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import graphpai
from graphpai.errors import GraphpaiError
from graphpai.functional import audit, functional_edges
from graphpai.graph import Group, Layer, NetGraph
from graphpai.masks import MaskSet, nm_compliant
from graphpai.paths import paths
from graphpai.spectral import spectral
from graphpai.torch import models
from graphpai.torch.extract import canonical_weight, model_weight, to_graph

from test_extract_oracle import _outputs, layer_parameter, random_masks

VOCAB, DIM, TOKENS = 12, 8, 5


class TiedDecoder(nn.Module):
    """embed -> Linear -> ReLU [-> + residual, LayerNorm] -> the embedding's weight as the head.

    ``soft = True`` (the oracle) reads a (1, tokens, vocab) positive float input as ``x @ W``:
    the embedding of a soft one-hot."""

    def __init__(self, vocab=VOCAB, dim=DIM, form="linear", residual=False):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.block = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim) if residual else None
        self.form, self.residual, self.soft = form, residual, False

    def forward(self, ids):
        x = ids @ self.embed.weight if self.soft else self.embed(ids)
        h = torch.relu(self.block(x))
        if self.residual:
            h = self.norm(x + h)
        if self.form == "linear":
            return F.linear(h, self.embed.weight)
        return h @ self.embed.weight.T


class TwiceLinear(nn.Module):
    """The same Linear applied twice, on a (tokens, features) input."""

    def __init__(self):
        super().__init__()
        self.a, self.shared, self.out = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.shared(torch.relu(self.a(x))))
        return self.out(torch.relu(self.shared(h)))


class TwiceConv(nn.Module):
    """The same 3x3 conv applied twice, with a stride-2 conv between: the two uses see maps of
    different sizes."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        h = torch.relu(self.shared(torch.relu(self.stem(x))))
        h = torch.relu(self.shared(torch.relu(self.down(h))))
        return self.fc(h.flatten(1))


def _ids():
    return torch.randint(0, VOCAB, (1, TOKENS), generator=torch.Generator().manual_seed(1))


def _soft(net, gen, vocab=VOCAB):
    net.soft = True
    return net(0.5 + 0.5 * torch.rand((1, TOKENS, vocab), generator=gen, dtype=torch.float64))


def tied_oracle(model, graph, masks, run, *, seed=0, trials=2):
    """Layer -> kept weights whose gradient of the outputs (summed with random positive
    coefficients) is non-zero, with random positive weights on the mask, norm scales 1 and every
    other parameter 0; ``run(net, gen)`` runs a forward on a random positive input. Each layer is
    one parameter tensor, however many times the forward uses it."""
    found = {name: np.zeros(layer.weight_shape, dtype=bool) for name, layer in graph.layers.items()}
    for trial in range(trials):
        gen = torch.Generator().manual_seed(seed * 1000 + trial)
        net = copy.deepcopy(model).double().eval()
        norm_scales = {f"{path}.weight" for path, module in net.named_modules()
                       if "Norm" in type(module).__name__}
        params = {name: layer_parameter(net, name)[1] for name in graph.layers}
        assert len({id(p) for p in params.values()}) == len(params)  # one tensor per layer
        with torch.no_grad():
            for path, p in net.named_parameters():
                p.fill_(1.0) if path in norm_scales else p.zero_()
            for name, p in params.items():
                layer = graph.layers[name]
                keep = torch.from_numpy(np.asarray(masks[name]))
                w = canonical_weight(0.5 + 0.5 * torch.rand(p.shape, generator=gen,
                                                            dtype=p.dtype),
                                     layer.transposed, layer.groups) * keep
                w = w / (4 * w.reshape(w.shape[0], -1).sum(dim=1).clamp(min=0.25)).reshape(
                    (-1,) + (1,) * (w.dim() - 1))
                p.copy_(model_weight(w, layer.transposed, layer.groups))
        for p in net.parameters():
            p.requires_grad_(False)
        for p in params.values():
            p.requires_grad_(True)
        tensors = _outputs(run(net, gen))
        total = sum((t * (0.5 + torch.rand(t.shape, generator=gen, dtype=t.dtype))).sum()
                    for t in tensors)
        grads = torch.autograd.grad(total, list(params.values()), allow_unused=True)
        for (name, p), g in zip(params.items(), grads):
            if g is not None:
                layer = graph.layers[name]
                g = canonical_weight(g, layer.transposed, layer.groups)
                found[name] |= (g != 0).numpy() & np.asarray(masks[name])
    return found


def check_oracle(model, graph, run, densities=(0.1, 0.3, 0.6), seeds=(0, 1)):
    """Spatial == oracle and channel ⊇ oracle, weight for weight; the counts count a tied
    weight once. Returns the (density, functional) pairs seen."""
    seen = []
    for density in densities:
        for seed in seeds:
            masks = random_masks(graph, density, seed)
            truth = tied_oracle(model, graph, masks, run, seed=seed)
            spatial = audit(graph, masks, semantics="spatial")
            channel = functional_edges(graph, masks, semantics="channel")
            assert set(spatial.functional_masks) == set(graph.layers)
            for name in graph.layers:
                assert np.array_equal(spatial.functional_masks[name], truth[name]), (density, seed,
                                                                                      name)
                assert not (truth[name] & ~channel[name]).any(), (density, seed, name)
            assert spatial.N == sum(p.numel() for p in {id(p): p for p in (
                layer_parameter(model, n)[1] for n in graph.layers)}.values())
            assert spatial.kept == masks.kept()
            assert spatial.functional == sum(int(t.sum()) for t in truth.values())
            mica = functional_edges(graph, masks, semantics="mica")   # spatial ⊆ mica ⊆ channel
            assert all(not (spatial.functional_masks[n] & ~mica[n]).any()
                       and not (mica[n] & ~channel[n]).any() for n in graph.layers)
            seen.append((density, spatial.functional))
    return seen


# ------------------------------------------------------------------------------ extraction
@pytest.mark.parametrize("form", ["linear", "matmul"])
def test_tied_decoder_is_one_layer_used_twice(form):
    model = TiedDecoder(form=form)
    graph = to_graph(model, example_inputs=_ids(), prune_embeddings=True)
    # the head holds the mask (its name is the parameter's, "embed"); the embedding reads it
    assert list(graph.layers) == ["block", "embed"]
    head, use = graph.layers["embed"], graph.uses["embed@2"]
    assert head.weight_shape == (VOCAB, DIM) and not head.transposed and head.param is None
    assert use.weight_shape == (DIM, VOCAB) and use.transposed
    assert use.param == "embed" and use.param_transposed and use.mask_key == "embed"
    assert graph.groups[use.source].channels == VOCAB           # the one-hot token input
    assert [op.name for op in graph.uses_of("embed")] == ["embed", "embed@2"]
    assert graph.num_weights == VOCAB * DIM + DIM * DIM          # the tied weight once
    assert graph.notes == ()                                     # exact
    assert MaskSet.dense(graph).numel() == graph.num_weights
    assert graph.summary()["layers"][1]["tied_uses"] == ["embed@2"]
    # without prune_embeddings the embedding is the input, as before, and says so
    plain = to_graph(model, example_inputs=_ids())
    assert list(plain.layers) == ["block", "embed"] and not plain.tied
    assert len(plain.notes) == 1 and "shares its weight" in plain.notes[0]


def test_module_called_twice_is_one_layer():
    graph = to_graph(TwiceLinear(), (TOKENS, 6))
    assert list(graph.layers) == ["a", "shared", "out"]
    assert [op.name for op in graph.uses_of("shared")] == ["shared", "shared@2"]
    assert graph.uses["shared@2"].source == "shared" and not graph.uses["shared@2"].param_transposed
    assert graph.num_weights == 6 * 8 + 8 * 8 + 8 * 3
    conv = to_graph(TwiceConv(), (2, 6, 6))
    first, second = conv.uses_of("shared")
    assert first.in_size == (6, 6) and second.in_size == (3, 3) and second.param == "shared"


def test_zoo_gpt_tied_head_is_the_mask_key():
    gpt = models.build("gpt", seed=0, tie_weights=True)
    graph = to_graph(gpt, prune_embeddings=True)
    assert "lm_head" in graph.layers and "embed" not in graph.layers
    assert graph.uses["embed"].param == "lm_head" and graph.uses["embed"].param_transposed
    untied = to_graph(models.build("gpt", seed=0), prune_embeddings=True)
    assert graph.num_weights == untied.num_weights - untied.layers["embed"].numel
    # masks made on the default graph (the embedding is the input) fit the tied graph
    default = to_graph(gpt)
    masks = random_masks(default, 0.3, 0)
    assert masks.validate(graph) == masks


def test_graph_refuses_a_tie_of_the_wrong_shape():
    groups = [Group("x", 3), Group("h", 2), Group("y", 2)]
    layers = [Layer("a", "linear", (2, 3), "x", "h"),
              Layer("b", "linear", (2, 2), "h", "y", param="a")]
    with pytest.raises(GraphpaiError, match="applies the weight of 'a'"):
        NetGraph(groups, layers, [], ["x"], ["y"])
    with pytest.raises(GraphpaiError, match="not a layer"):
        NetGraph(groups, [layers[0], Layer("b", "linear", (2, 2), "h", "y", param="c")], [],
                 ["x"], ["y"])


# ------------------------------------------------------------------------------ hand cases
def test_tied_index_mapping_by_hand():
    """vocab 3, features 2; the block keeps only feature 0 -> 1. Weight entry w[v, f] is the
    edge v -> f in the embedding and f -> v in the head: w[0, 0] is functional through the
    embedding (token 0 -> feature 0 -> block -> 1, and the head reads feature 1 through w[2, 1]),
    w[2, 1] through the head (feature 1 is reached through w[0, 0]); alone, neither is."""
    model = TiedDecoder(vocab=3, dim=2)
    graph = to_graph(model, example_inputs=torch.tensor([[0, 1, 2]]), prune_embeddings=True)
    block = np.array([[0, 0], [1, 0]], dtype=bool)   # (out, in): input 0 -> output 1
    cases = [
        ([(0, 0), (2, 1)], [(0, 0), (2, 1)]),
        ([(0, 0)], []),
        ([(2, 1)], []),
        ([(0, 1), (1, 0)], [(0, 1), (1, 0)]),
        ([(0, 0), (1, 1), (2, 0)], [(0, 0), (1, 1), (2, 0)]),
        ([(1, 1), (2, 1)], []),
    ]
    for kept, functional in cases:
        head = np.zeros((3, 2), dtype=bool)
        head[tuple(zip(*kept))] = True
        masks = {"embed": head, "block": block}
        expect = np.zeros((3, 2), dtype=bool)
        if functional:
            expect[tuple(zip(*functional))] = True
        truth = tied_oracle(model, graph, masks, lambda net, gen: _soft(net, gen, 3))
        assert np.array_equal(truth["embed"], expect), kept            # the oracle agrees
        for semantics in ("channel", "spatial"):
            r = audit(graph, masks, semantics=semantics)
            assert np.array_equal(r.functional_masks["embed"], expect), (semantics, kept)
            assert r.kept == len(kept) + 1 and r.N == 6 + 4
            assert r.disconnected == (not functional)


# ------------------------------------------------------------------------------ the oracle
@pytest.mark.parametrize("form,residual,vocab", [("linear", False, VOCAB), ("matmul", True, VOCAB),
                                                 ("linear", False, DIM)])
def test_tied_decoder_equals_the_oracle(form, residual, vocab):
    """vocab == features (square) too, where a missing transpose would not fail on shapes."""
    model = TiedDecoder(vocab=vocab, form=form, residual=residual)
    ids = torch.randint(0, vocab, (1, TOKENS), generator=torch.Generator().manual_seed(1))
    graph = to_graph(model, example_inputs=ids, prune_embeddings=True)
    seen = check_oracle(model, graph, lambda net, gen: _soft(net, gen, vocab))
    assert any(0 < f for _, f in seen)


def test_zoo_gpt_tied_equals_the_oracle():
    gpt = models.build("gpt", seed=0, tie_weights=True)
    graph = to_graph(gpt, prune_embeddings=True)
    vocab = graph.layers["lm_head"].out_channels

    def run(net, gen):
        x = 0.5 + 0.5 * torch.rand((1, 16, vocab), generator=gen, dtype=torch.float64)
        return _gpt_forward(net, x @ net.embed.weight)

    check_oracle(gpt, graph, run, densities=(0.05, 0.3), seeds=(0,))


def _gpt_forward(net, x):
    """The zoo GPT's forward from its embedded input (models.GPT.forward after self.embed)."""
    original = net.embed.forward
    net.embed.forward = lambda ids: x
    try:
        return net(torch.zeros((1, x.shape[1]), dtype=torch.long))
    finally:
        net.embed.forward = original


@pytest.mark.parametrize("cls,shape", [(TwiceLinear, (TOKENS, 6)), (TwiceConv, (2, 6, 6))])
def test_module_called_twice_equals_the_oracle(cls, shape):
    model = cls()
    graph = to_graph(model, shape)

    def run(net, gen):
        return net(0.5 + 0.5 * torch.rand((1,) + shape, generator=gen, dtype=torch.float64))

    check_oracle(model, graph, run)


def test_a_weight_is_functional_where_one_use_makes_it_so():
    """`a` feeds features 0-3 only and `out` reads features 0-3 only. At the first call of
    `shared`, inputs 4-7 are not reached; at the second, outputs 4-7 are not co-reached. So
    ``shared[o, i]`` is functional unless ``o >= 4`` and ``i >= 4``: each of the other entries is
    functional at one call (or both), and the counts see each entry once."""
    model = TwiceLinear()
    graph = to_graph(model, (TOKENS, 6))
    masks = {name: np.ones(layer.weight_shape, dtype=bool) for name, layer in graph.layers.items()}
    masks["a"][4:] = False
    masks["out"][:, 4:] = False
    expect = np.ones((8, 8), dtype=bool)
    expect[4:, 4:] = False
    truth = tied_oracle(model, graph, masks, lambda net, gen: net(
        0.5 + 0.5 * torch.rand((1, TOKENS, 6), generator=gen, dtype=torch.float64)))
    assert np.array_equal(truth["shared"], expect)
    for semantics in ("channel", "spatial"):
        r = audit(graph, masks, semantics=semantics)
        assert np.array_equal(r.functional_masks["shared"], expect), semantics
        row = next(row for row in r.layers if row.layer == "shared")
        assert (row.weights, row.kept, row.functional) == (64, 64, 48)
        assert r.kept == 24 + 64 + 12 and r.functional == 24 + 48 + 12
        masks_a = dict(masks, a=np.zeros((8, 6), dtype=bool))
        assert audit(graph, masks_a, semantics=semantics).disconnected


# ------------------------------------------------------------------------------ analyses
def _dense_paths_per_position(head, block):
    """Input-output paths of one token position of TiedDecoder (no residual) with 0/1 masks:
    1^T head block head^T 1 (the embedding applies the head's mask transposed)."""
    h, b = head.astype(np.float64), block.astype(np.float64)
    return float(np.ones(h.shape[0]) @ h @ b @ h.T @ np.ones(h.shape[0]))


def test_paths_count_each_use():
    model = TiedDecoder()
    graph = to_graph(model, example_inputs=_ids(), prune_embeddings=True)
    for seed in range(3):
        masks = random_masks(graph, 0.4, seed)
        expect = TOKENS * _dense_paths_per_position(masks["embed"], masks["block"])
        got = paths(graph, masks).log10_paths
        assert got == pytest.approx(math.log10(expect), abs=1e-9)


def test_spectral_has_one_row_per_weight():
    model = TiedDecoder()
    graph = to_graph(model, example_inputs=_ids(), prune_embeddings=True)
    masks = random_masks(graph, 0.5, 0)
    report = spectral(graph, masks)
    assert [row.layer for row in report.layers] == list(graph.layers)
    # the tied weight's row is the weight's bipartite graph: its singular values are those of
    # either use (a matrix and its transpose have the same ones)
    row = next(row for row in report.layers if row.layer == "embed").to_dict()
    m = masks["embed"].astype(np.float64)
    m = m[m.any(axis=1)][:, m.any(axis=0)]      # isolated nodes dropped
    top = np.linalg.svd(m, compute_uv=False)[:2]
    assert (row["n_out"], row["n_in"], row["E"]) == (VOCAB, DIM, masks.kept("embed"))
    assert [row["sigma_1"], row["sigma_2"]] == pytest.approx(top, rel=1e-6)
    assert np.linalg.svd(m.T, compute_uv=False)[:2] == pytest.approx(top)


class Branch(nn.Module):
    """The first call of `shared` feeds its second call and another layer."""

    def __init__(self):
        super().__init__()
        self.a, self.shared = nn.Linear(6, 8), nn.Linear(8, 8)
        self.b, self.out = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        p = torch.relu(self.shared(torch.relu(self.a(x))))
        return self.out(torch.relu(self.shared(p)) + torch.relu(self.b(p)))


def test_layer_pairs_are_between_uses():
    """[RAM]'s layer pairs join the places weights are applied: the first call of `shared`
    feeds the second and `b`, and the second call feeds `out`."""
    from graphpai.spectral.pairs import pair_scores

    graph = to_graph(Branch(), (6,))
    masks = random_masks(graph, 0.5, 0)
    pairs = {(p.producer, p.consumer): p for p in pair_scores(graph, masks)}
    assert set(pairs) == {("a", "shared"), ("shared", "shared@2"), ("shared", "b"),
                          ("shared@2", "out"), ("b", "out")}
    # the pair of the two calls: compatibility = share of the first call's fed outputs that
    # the second call reads (the same mask, read as producer rows and consumer columns)
    m = masks["shared"]
    fed, read = m.any(axis=1), m.any(axis=0)
    assert pairs["shared", "shared@2"].compatibility == pytest.approx(
        np.count_nonzero(fed & read) / np.count_nonzero(fed))
    assert [row.layer for row in spectral(graph, masks).layers] == list(graph.layers)


def test_exports_and_channel_graph_follow_each_use():
    model = TwiceLinear()
    graph = to_graph(model, (TOKENS, 6))
    masks = random_masks(graph, 0.5, 0)
    g = graph.to_networkx(masks)
    second = [d for _, _, d in g.edges(data=True) if d.get("layer") == "shared@2"]
    first = [d for _, _, d in g.edges(data=True) if d.get("layer") == "shared"]
    assert sum(d["multiplicity"] for d in first) == sum(d["multiplicity"] for d in second) \
        == masks["shared"].sum()
    dec = to_graph(TiedDecoder(), example_inputs=_ids(), prune_embeddings=True)
    m = random_masks(dec, 0.5, 1)
    assert (dec.multiplicity("embed@2", m).toarray() == m["embed"].T).all()
    assert (dec.multiplicity("embed", m).toarray() == m["embed"]).all()
    # a consistent renaming renames the tie too, and every count stays
    renamed = dec.rename({"embed": "head", "embed@2": "lookup", "block": "mlp"})
    assert renamed.uses["lookup"].param == "head" and list(renamed.layers) == ["mlp", "head"]
    moved = m.rename({"embed": "head", "block": "mlp"})
    for semantics in ("channel", "spatial"):
        a, b = audit(dec, m, semantics=semantics), audit(renamed, moved, semantics=semantics)
        assert (a.kept, a.functional, a.functional_nodes) == (b.kept, b.functional,
                                                              b.functional_nodes)
        assert np.array_equal(a.functional_masks["embed"], b.functional_masks["head"])


# ------------------------------------------------------------------------------ pruning
def test_prune_gives_one_mask_per_tied_weight():
    gpt = models.build("gpt", seed=0, tie_weights=True)
    graph = to_graph(gpt, prune_embeddings=True)
    masks = graphpai.prune(graph, "rpi", compression=10, seed=0)
    assert set(masks) == set(graph.layers) and masks.validate(graph) is not None
    assert masks.numel() == graph.num_weights
    assert masks.compression() == pytest.approx(10, rel=0.02)
    twice = TwiceLinear()
    for method, options in (("rpi", {}), ("magnitude", {}), ("nm", {"pattern": "2:4"})):
        m = graphpai.prune(twice, method, compression=2, seed=0, input_shape=(TOKENS, 6),
                           **options)
        assert set(m) == {"a", "shared", "out"}, method
        audit(to_graph(twice, (TOKENS, 6)), m)        # fits the graph with both calls
    m = graphpai.prune(gpt, "magnitude", compression=4)
    assert "lm_head" in m and "embed" not in m
    assert audit(graph, m, semantics="spatial").kept == m.kept()
    nm = graphpai.prune(gpt, "nm", compression=2, pattern="2:4")
    assert nm_compliant(nm["lm_head"], "2:4")
    assert audit(graph, nm, nm="2:4").layers[-1].nm_compliant


@pytest.mark.parametrize("case", ["twice-linear", "twice-conv", "decoder", "gpt"])
def test_mica_places_a_tied_weight_once(case):
    """MiCA places a tied weight at its first use in graph order (the embedding before its LM
    head) and every later use reads that mask: exact counts, one mask per weight, and every kept
    weight functional at one of its uses (the spatial audit, itself checked against the oracle
    above)."""
    from graphpai.budgets import erk
    from graphpai.generators.mica import mica

    if case == "twice-linear":
        graph = to_graph(TwiceLinear(), (TOKENS, 6))
    elif case == "twice-conv":
        graph = to_graph(TwiceConv(), (2, 6, 6))
    elif case == "decoder":
        graph = to_graph(TiedDecoder(), example_inputs=_ids(), prune_embeddings=True)
    else:
        graph = to_graph(models.build("gpt", seed=0, tie_weights=True), prune_embeddings=True)
    assert graph.tied
    for compression in (2, 5):
        for seed in (0, 1):
            budget = erk(graph, compression)
            masks = mica(graph, budget, seed=seed)
            assert set(masks) == set(graph.layers) and masks.counts() == budget.counts
            result = audit(graph, masks, semantics="spatial")
            assert result.functional == masks.kept(), (compression, seed)


def test_npb_refuses_a_tied_weight_clearly():
    from graphpai.errors import ModelError

    graph = to_graph(TwiceLinear(), (TOKENS, 6))
    with pytest.raises(ModelError, match="'shared' is applied at two or more.*use mica"):
        graphpai.prune(graph, "npb", compression=2, seed=0)


def test_apply_masks_masks_a_tied_weight_once():
    from graphpai.torch.masks import apply_masks, masked_copy, masks_from_model, remove_masks

    gpt = models.build("gpt", seed=0, tie_weights=True)
    graph = to_graph(gpt, prune_embeddings=True)
    masks = random_masks(graph, 0.5, 2)
    apply_masks(gpt, masks, graph=graph)
    assert masks_from_model(gpt, graph=graph) == masks
    # the embedding reads the pruned weight too: rows of the lookup are the head's rows
    row = gpt.embed(torch.tensor([[3]]))[0, 0].detach().numpy()
    assert np.array_equal(row != 0, masks["lm_head"][3])
    assert np.array_equal(gpt.embed.weight_mask.numpy(), masks["lm_head"])
    clone = masked_copy(gpt)                                     # hooks gone, zeros kept
    assert clone.lm_head.weight is clone.embed.weight
    assert np.array_equal(clone.embed.weight.detach().numpy() != 0, masks["lm_head"])
    remove_masks(gpt)
    assert gpt.lm_head.weight is gpt.embed.weight                # still one parameter
    assert np.array_equal(gpt.lm_head.weight.detach().numpy() != 0, masks["lm_head"])


# ------------------------------------------------------------------------------ Hugging Face
def _hf_tied(name):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed "
                                       "(pip install -e '.[dev]')")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    if name == "gpt2":
        config = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=40,
                                         n_positions=16, bos_token_id=0, eos_token_id=0,
                                         tie_word_embeddings=True)
        return transformers.GPT2LMHeadModel(config), "transformer.wte"
    config = transformers.LlamaConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      vocab_size=40, max_position_embeddings=16,
                                      bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(config), "model.embed_tokens"


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_hf_tied_lm_equals_the_oracle(name):
    model, embedding = _hf_tied(name)
    table = model.get_input_embeddings()
    assert model.lm_head.weight is table.weight
    ids = torch.randint(0, 40, (1, 6), generator=torch.Generator().manual_seed(1))
    graph = to_graph(model, example_inputs={"input_ids": ids}, prune_embeddings=True)
    assert "lm_head" in graph.layers and embedding not in graph.layers
    assert graph.uses[embedding].param == "lm_head" and graph.uses[embedding].param_transposed
    assert graph.num_weights == to_graph(model, example_inputs={"input_ids": ids}).num_weights

    def run(net, gen):
        x = 0.5 + 0.5 * torch.rand((1, 6, 40), generator=gen, dtype=torch.float64)
        return net(inputs_embeds=x @ net.get_input_embeddings().weight)

    check_oracle(model, graph, run, densities=(0.1, 0.4), seeds=(0,))
    masks = random_masks(graph, 0.3, 0)
    assert math.isfinite(paths(graph, masks).log10_paths)
    assert [row.layer for row in spectral(graph, masks).layers] == list(graph.layers)
    m = graphpai.prune(graph, "rpi", compression=4, seed=0)
    assert set(m) == set(graph.layers)
    for method, options in (("magnitude", {}), ("nm", {"pattern": "2:4"})):
        ranked = graphpai.prune(model, method, compression=2, **options)
        assert "lm_head" in ranked and embedding not in ranked      # one mask for the tied pair
        if name == "llama":   # (GPT-2's Conv1D layers are not scored from the module list)
            assert set(ranked) == set(graph.layers)
            assert audit(graph, ranked, semantics="spatial").kept == ranked.kept()
    assert nm_compliant(ranked["lm_head"], "2:4")
