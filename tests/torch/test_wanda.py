"""Wanda scores (docs/llm.md) against a direct computation of |w| * ||x|| from the layer inputs,
and the masks (per output row, N:M) against a sort."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn

import graphpai
from graphpai.errors import BudgetError, DataError
from graphpai.masks import nm_compliant
from graphpai.torch.wanda import activation_norms, wanda_masks, wanda_scores
from oracles import mha_encoder


class TokenMLP(nn.Module):
    """Linear layers on (batch, tokens, features), as in a transformer block."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)
        self.head = nn.Linear(8, 11, bias=False)

    def forward(self, ids):
        x = self.embed(ids)
        x = x + self.down(torch.relu(self.up(x)))
        return self.head(x)


def test_linear_scores_equal_weight_times_input_norm_over_all_tokens():
    torch.manual_seed(0)
    model = TokenMLP().double()
    batches = [torch.randint(0, 11, (3, 5)), torch.randint(0, 11, (2, 7))]
    scores = wanda_scores(model, batches)
    # the direct computation: each layer's input rebuilt by hand, every token of every batch
    with torch.no_grad():
        x = torch.cat([model.embed(b).reshape(-1, 8) for b in batches])
        h = torch.relu(model.up(x))
        y = x + model.down(h)
    for name, inp in [("up", x), ("down", h), ("head", y)]:
        w = getattr(model, name).weight.detach().numpy()
        norm = np.sqrt((inp.numpy() ** 2).sum(axis=0))
        expected = np.abs(w) * norm[None, :]
        np.testing.assert_allclose(scores[name], expected, rtol=1e-12)
    # one batch or two: the same sums (float64 accumulation)
    again = wanda_scores(model, [torch.cat([batches[0].reshape(-1), batches[1].reshape(-1)])[None]])
    np.testing.assert_allclose(again["down"], scores["down"], rtol=1e-10)


def naive_conv_norms(x, weight_shape, stride, padding, dilation, groups):
    """||x|| of each fan-in position (i, a, b) over batch and output positions, by loops."""
    n, c, h, w = x.shape
    c_out, c_in_g, kh, kw = weight_shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])))
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    sumsq = np.zeros((c, kh, kw))
    for i, a, b in itertools.product(range(c), range(kh), range(kw)):
        for p, q in itertools.product(range(oh), range(ow)):
            v = xp[:, i, p * stride[0] + a * dilation[0], q * stride[1] + b * dilation[1]]
            sumsq[i, a, b] += (v ** 2).sum()
    norms = np.sqrt(sumsq).reshape(groups, c_in_g, kh, kw)
    return np.stack([norms[o // (c_out // groups)] for o in range(c_out)])


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    ((1, 1), (1, 1), (1, 1), 1), ((2, 1), (0, 2), (1, 2), 1), ((1, 2), (1, 0), (2, 1), 2)])
def test_conv_scores_use_the_unfolded_patch_norms(stride, padding, dilation, groups):
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, (2, 3), stride=stride, padding=padding, dilation=dilation,
                     groups=groups).double()
    model = nn.Sequential(conv)
    data = [(torch.randn(2, 4, 7, 6, dtype=torch.float64), torch.zeros(2))]
    scores = wanda_scores(model, data)["0"]
    x = data[0][0].numpy()
    expected = np.abs(conv.weight.detach().numpy()) * naive_conv_norms(
        x, tuple(conv.weight.shape), stride, padding, dilation, groups)
    np.testing.assert_allclose(scores, expected, rtol=1e-10)


def test_conv1d_and_same_padding():
    torch.manual_seed(2)
    conv = nn.Conv1d(3, 4, 4, padding="same").double()  # asymmetric: 1 before, 2 after
    x = torch.randn(2, 3, 9, dtype=torch.float64)
    norms = activation_norms(nn.Sequential(conv), [x])["0"]
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 2)))
    expected = np.sqrt(np.stack([[(xp[:, i, a:a + 9] ** 2).sum() for a in range(4)]
                                 for i in range(3)]))
    np.testing.assert_allclose(norms, expected, rtol=1e-12)


def test_masks_keep_each_rows_best_and_nm_groups():
    torch.manual_seed(3)
    model = TokenMLP()
    data = [torch.randint(0, 11, (4, 6))]
    scores = wanda_scores(model, data)
    masks = wanda_masks(model, 2, data)
    for name in ("up", "down", "head"):
        s, m = scores[name], masks[name]
        assert (m.sum(axis=1) == s.shape[1] // 2).all()
        for row_s, row_m in zip(s, m):  # every kept score >= every pruned score of its row
            assert row_s[row_m].min() >= row_s[~row_m].max()
    nm = graphpai.prune(model, "wanda", compression=2, data=data, nm="2:4")
    for name in ("up", "down", "head"):
        assert nm_compliant(nm[name], "2:4")
        groups = scores[name].reshape(-1, 4)
        best = np.sort(np.argsort(-groups, axis=1, kind="stable")[:, :2], axis=1)
        kept = np.sort(np.nonzero(nm[name].reshape(-1, 4))[1].reshape(-1, 2), axis=1)
        assert np.array_equal(best, kept)
    skip = graphpai.prune(model, "wanda", compression=4, data=data, exclude=["head"])
    assert skip["head"].all() and skip.kept("up") == 16 * 2


def test_wanda_needs_data_and_a_matching_compression():
    model = TokenMLP()
    with pytest.raises(DataError, match="needs batches"):
        graphpai.prune(model, "wanda", compression=2)
    with pytest.raises(DataError, match="no batch"):
        wanda_scores(model, [])
    with pytest.raises(BudgetError, match="compression=2"):
        graphpai.prune(model, "wanda", compression=3, data=[torch.zeros(1, 2, dtype=torch.long)],
                       nm="2:4")
    with pytest.raises(DataError, match="never ran"):
        activation_norms(_Unused(), [torch.ones(1, 2)])


class _Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(2, 2)
        self.spare = nn.Linear(2, 2)

    def forward(self, x):
        return self.used(x)


def test_nm_wanda_on_a_cnn_keeps_ungroupable_layers_dense():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.Flatten(), nn.Linear(8 * 5 * 5, 4))
    data = [(torch.randn(2, 3, 5, 5), torch.zeros(2))]
    masks = graphpai.prune(model, "wanda", compression=2, data=data, nm="2:4")
    assert masks["0"].all()  # 3 input channels: no groups of 4
    scores = wanda_scores(model, data)["2"]
    groups = np.moveaxis(scores, 1, -1).reshape(-1, 4)  # groups along input channels per tap
    kept = np.moveaxis(masks["2"], 1, -1).reshape(-1, 4)
    for g, k in zip(groups, kept):
        assert k.sum() == 2 and g[k].min() >= g[~k].max()


def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _attention_by_hand(q_in, kv_in, w_in, heads, key_mask=None):
    """The concatenated head outputs of a bias-free nn.MultiheadAttention, in numpy: rows of
    w_in (3E, E) project query, key, value; softmax(q k^T / sqrt(d)) v per head; `key_mask`
    (batch, keys) True where a key is left out."""
    e = w_in.shape[1]
    d = e // heads
    q, k, v = q_in @ w_in[:e].T, kv_in @ w_in[e:2 * e].T, kv_in @ w_in[2 * e:].T
    out = np.zeros(q.shape)
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        logits = q[..., cols] @ np.swapaxes(k[..., cols], -1, -2) / np.sqrt(d)
        if key_mask is not None:
            logits = np.where(key_mask[:, None, :], -np.inf, logits)
        out[..., cols] = _softmax(logits) @ v[..., cols]
    return out


def _norms(*arrays):
    """||x_j|| over every token of every array (features on the last axis), by numpy."""
    return np.sqrt(sum((a.reshape(-1, a.shape[-1]) ** 2).sum(axis=0) for a in arrays))


def test_multihead_attention_in_proj_and_out_proj_scores_by_hand():
    """in_proj_weight rows are scored with the norms of the input they multiply; out_proj (whose
    forward never runs) with the norms of the concatenated head outputs."""
    torch.manual_seed(5)
    model = mha_encoder().double()
    batches = [torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(1, 5, 8, dtype=torch.float64)]
    scores = wanda_scores(model, batches)
    assert set(scores) == {"attn.in_proj_weight", "attn.out_proj", "fc"}
    w_in = model.attn.in_proj_weight.detach().numpy()
    w_out = model.attn.out_proj.weight.detach().numpy()
    xs = [b.numpy() for b in batches]
    heads = [_attention_by_hand(x, x, w_in, 2) for x in xs]
    np.testing.assert_allclose(scores["attn.in_proj_weight"],
                               np.abs(w_in) * _norms(*xs)[None, :], rtol=1e-12)
    np.testing.assert_allclose(scores["attn.out_proj"],
                               np.abs(w_out) * _norms(*heads)[None, :], rtol=1e-10)
    fc_in = [z @ w_out.T for z in heads]
    np.testing.assert_allclose(scores["fc"], np.abs(model.fc.weight.detach().numpy())
                               * _norms(*fc_in)[None, :], rtol=1e-10)
    masks = graphpai.prune(model, "wanda", compression=2, data=batches)
    assert set(masks) == set(graphpai.to_graph(model, input_shape=(3, 8)).layers)
    for name in scores:  # no layer left dense: each row keeps its best half
        s, m = scores[name], masks[name]
        assert (m.sum(axis=1) == s.shape[1] // 2).all()
        assert all(row_s[row_m].min() >= row_s[~row_m].max() for row_s, row_m in zip(s, m))


class _CrossAttention(nn.Module):
    """Query from one sequence, key and value from another, sequence-first, with a key padding
    mask: the rows of in_proj_weight read different inputs."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 4, bias=False)

    def forward(self, x):
        q, kv = x[:, :3].transpose(0, 1), x[:, 3:].transpose(0, 1)  # (tokens, batch, 8)
        pad = torch.zeros(x.shape[0], x.shape[1] - 3, dtype=torch.bool)
        pad[:, -1] = True  # the last key of every sequence is padding
        return self.attn(q, kv, kv, key_padding_mask=pad)[0]


def test_cross_attention_scores_each_row_block_with_its_own_input():
    torch.manual_seed(6)
    model = _CrossAttention().double()
    batches = [torch.randn(2, 7, 8, dtype=torch.float64)]
    scores = wanda_scores(model, batches)
    x = batches[0].numpy()
    q_in, kv_in = x[:, :3], x[:, 3:]
    w_in = model.attn.in_proj_weight.detach().numpy()
    per_row = np.concatenate([np.repeat(_norms(q_in)[None], 8, axis=0),
                              np.repeat(_norms(kv_in)[None], 16, axis=0)])
    np.testing.assert_allclose(scores["attn.in_proj_weight"], np.abs(w_in) * per_row,
                               rtol=1e-12)
    key_mask = np.zeros((2, 4), dtype=bool)
    key_mask[:, -1] = True
    heads = _attention_by_hand(q_in, kv_in, w_in, 4, key_mask)
    np.testing.assert_allclose(
        scores["attn.out_proj"],
        np.abs(model.attn.out_proj.weight.detach().numpy()) * _norms(heads)[None, :], rtol=1e-10)


def test_transformer_encoder_layers_run_their_modules_in_eval():
    """nn.TransformerEncoderLayer's fused eval path skips its submodules; Wanda turns it off,
    scores every layer and restores the flag."""
    torch.manual_seed(7)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    model = nn.Sequential(layer, nn.Linear(8, 4))
    before = torch.backends.mha.get_fastpath_enabled()
    scores = wanda_scores(model, [torch.randn(2, 5, 8)])
    assert torch.backends.mha.get_fastpath_enabled() == before
    assert set(scores) == {"0.self_attn.in_proj_weight", "0.self_attn.out_proj", "0.linear1",
                           "0.linear2", "1"}
    masks = graphpai.prune(model, "wanda", compression=2, data=[torch.randn(2, 5, 8)])
    assert all(masks.kept(name) == masks.numel(name) // 2 for name in scores)


def test_gpt2_conv1d_scores_use_the_transposed_weight():
    """Hugging Face Conv1D holds (in, out) and computes x @ W: the layer-order score (o, j) is
    |W[j, o]| * ||x_j||, checked against the inputs captured by plain hooks."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed "
                                       "(pip install -e '.[dev]')")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=40,
                                     n_positions=16, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).double()
    gen = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(0, 40, (2, 5), generator=gen)},
               {"input_ids": torch.randint(0, 40, (1, 7), generator=gen)}]
    captured = {}
    hooked = {name: m for name, m in model.named_modules()
              if type(m).__name__ == "Conv1D" or name == "lm_head"}

    def keep(name):
        def hook(module, args):
            captured.setdefault(name, []).append(args[0].detach().numpy().copy())
        return hook

    handles = [m.register_forward_pre_hook(keep(n)) for n, m in hooked.items()]
    model.eval()
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    for h in handles:
        h.remove()
    scores = wanda_scores(model, batches)
    assert set(scores) == set(hooked)
    for name, module in hooked.items():
        w = module.weight.detach().numpy()
        layer_w = w if name == "lm_head" else w.T  # Conv1D: (in, out) -> the layer's (out, in)
        np.testing.assert_allclose(scores[name], np.abs(layer_w) * _norms(*captured[name])[None],
                                   rtol=1e-10, err_msg=name)
    assert scores["transformer.h.0.attn.c_attn"].shape == (48, 16)
    masks = graphpai.prune(model, "wanda", compression=2, data=batches, nm="2:4")
    for name in hooked:
        assert nm_compliant(masks[name], "2:4")
        groups = scores[name].reshape(-1, 4)
        kept = masks[name].reshape(-1, 4)
        assert all(g[k].min() >= g[~k].max() for g, k in zip(groups, kept))
