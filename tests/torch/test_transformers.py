"""Hugging Face models built from tiny configs with random weights (no download): extraction by
torch.export, both semantics against the gradient oracle, the analyses end to end.

transformers is a test dependency (the ``dev`` extra); without it these tests skip, saying so.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from graphpai.functional import audit, functional_edges
from graphpai.paths import paths
from graphpai.torch.extract import to_graph

from test_extract_oracle import compare_with_oracle, random_masks

transformers = pytest.importorskip("transformers", reason="transformers is not installed "
                                   "(pip install -e '.[dev]')")
logging.getLogger("transformers").setLevel(logging.ERROR)

VOCAB, TOKENS = 40, 6


def tiny(name):
    torch.manual_seed(0)
    if name == "bert":
        config = transformers.BertConfig(hidden_size=16, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=24,
                                         vocab_size=VOCAB, max_position_embeddings=16)
        return transformers.BertModel(config)
    if name == "gpt2":
        config = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=VOCAB,
                                         n_positions=16, bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(config)
    config = transformers.LlamaConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      vocab_size=VOCAB, max_position_embeddings=16,
                                      bos_token_id=0, eos_token_id=0)
    return transformers.LlamaForCausalLM(config)


def ids():
    return torch.randint(0, VOCAB, (1, TOKENS), generator=torch.Generator().manual_seed(1))


_GRAPHS = {}


def graph_of(name):
    if name not in _GRAPHS:
        model = tiny(name)
        _GRAPHS[name] = model, to_graph(model, example_inputs={"input_ids": ids()})
    return _GRAPHS[name]


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_hf_models_equal_the_gradient_oracle(name):
    model, graph = graph_of(name)
    compare_with_oracle(model, graph, {"input_ids": ids()}, densities=(0.1, 0.3, 0.7),
                        seeds=(0,))


def test_layers_are_named_by_module_path_and_gpt2_conv1d_is_transposed():
    model, graph = graph_of("gpt2")
    layer = graph.layers["transformer.h.0.attn.c_attn"]
    # Conv1D holds (in, out); the layer is (out, in) and says the model weight is transposed
    assert layer.weight_shape == (48, 16) and layer.transposed
    assert model.transformer.h[0].attn.c_attn.weight.shape == (16, 48)
    assert graph.layers["lm_head"].weight_shape == (VOCAB, 16)
    _, llama = graph_of("llama")
    assert llama.layers["model.layers.0.self_attn.k_proj"].weight_shape == (8, 16)  # 2 kv heads
    assert not llama.layers["model.layers.0.self_attn.k_proj"].transposed
    attention = [link for link in llama.links if link.kind == "attention"]
    assert len(attention) == 2
    allowed = attention[0].params["allowed"]
    assert len(allowed.rows) == TOKENS * (TOKENS + 1) // 2  # causal
    _, bert = graph_of("bert")
    assert all(link.params["allowed"] is None for link in bert.links if link.kind == "attention")


def test_a_pruned_value_head_is_not_functional():
    """Llama: pruning the value rows of kv head 0 kills the o_proj inputs of the query heads
    that read it (GQA: heads 0 and 1), and the q/k weights of those heads."""
    model, graph = graph_of("llama")
    masks = {name: np.ones(layer.weight_shape, dtype=bool) for name, layer in graph.layers.items()}
    masks["model.layers.1.self_attn.v_proj"][:4] = False   # kv head 0 (head dim 4)
    for semantics in ("channel", "spatial"):
        f = functional_edges(graph, masks, semantics=semantics)
        o = f["model.layers.1.self_attn.o_proj"]
        assert not o[:, :8].any() and o[:, 8:].all()           # heads 0, 1 dead; 2, 3 alive
        q = f["model.layers.1.self_attn.q_proj"]
        assert not q[:8].any() and q[8:].all()
        k = f["model.layers.1.self_attn.k_proj"]
        assert not k[:4].any() and k[4:].all()


def test_pruned_mlp_block_keeps_the_residual_stream():
    model, graph = graph_of("llama")
    masks = {name: np.ones(layer.weight_shape, dtype=bool) for name, layer in graph.layers.items()}
    masks["model.layers.0.mlp.down_proj"][:] = False
    for semantics in ("channel", "spatial"):
        r = audit(graph, masks, semantics=semantics)
        assert math.isfinite(r.corrected_compression)
        f = r.functional_masks
        for part in ("gate_proj", "up_proj", "down_proj"):
            assert not f[f"model.layers.0.mlp.{part}"].any()
        assert f["model.layers.1.mlp.down_proj"].all()


def test_a_pruned_lm_head_disconnects_the_model():
    model, graph = graph_of("gpt2")
    masks = {name: np.ones(layer.weight_shape, dtype=bool) for name, layer in graph.layers.items()}
    masks["lm_head"][:] = False
    for semantics in ("channel", "spatial"):
        r = audit(graph, masks, semantics=semantics)
        assert r.disconnected and r.corrected_compression == math.inf


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_analyses_run_end_to_end(name):
    from graphpai.spectral import spectral

    model, graph = graph_of(name)
    masks = random_masks(graph, 0.3, 0)
    result = paths(graph, masks)
    assert math.isfinite(result.log10_paths) and result.log10_paths > 0
    report = spectral(graph, masks)
    assert report is not None


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_mica_masks_are_fully_functional(name):
    """BERT and GPT-2 fuse or split Q/K/V differently (GPT-2's c_attn is one Conv1D making all
    three); MiCA's repair must leave no dead weight in either (docs/mica.md, attention)."""
    from graphpai.budgets import erk
    from graphpai.generators.mica import mica

    model, graph = graph_of(name)
    for compression in (3, 10, 30):
        for seed in (0, 1):
            budget = erk(graph, compression)
            masks = mica(graph, budget, seed=seed)
            assert masks.counts() == budget.counts
            live = functional_edges(graph, masks, semantics="spatial")
            assert all((live[k] == masks[k]).all() for k in masks), (compression, seed)


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_magnitude_without_an_input_shape_scores_every_layer(name):
    """A Hugging Face model cannot be traced without its inputs; magnitude still ranks every
    weight of the graph (GPT-2's Conv1D weights too, held (in, out)), against a hand threshold."""
    import graphpai
    from graphpai.torch.extract import layer_parameters

    model, graph = graph_of(name)
    masks = graphpai.prune(model, "magnitude", compression=4)
    assert set(masks) == set(graph.layers)
    weights = {}
    for layer, (module, attr, transposed) in layer_parameters(model).items():
        w = getattr(module, attr).detach().abs().numpy()
        weights[layer] = w.T if transposed else w
    flat = np.sort(np.concatenate([w.ravel() for w in weights.values()]))[::-1]
    keep = graph.num_weights // 4
    for layer in graph.layers:
        expected = weights[layer] > flat[keep]  # no ties among random float weights
        assert (masks[layer] == expected).all(), layer
    assert masks.kept() == keep


def test_an_attention_mask_input_is_a_note():
    model = tiny("bert")
    graph = to_graph(model, example_inputs={"input_ids": ids(),
                                            "attention_mask": torch.ones(1, TOKENS, dtype=torch.long)})
    assert graph.notes and all("attention_mask" in note for note in graph.notes)
    assert list(graph.layers) == list(graph_of("bert")[1].layers)
