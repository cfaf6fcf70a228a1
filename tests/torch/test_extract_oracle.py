"""The gradient oracle for any model, and both semantics against it (docs/graph.md).

A kept weight is functional iff the gradient of the outputs with respect to it is non-zero in the
network with random positive weights on the mask (pruned weights 0), biases, additive parameters
(positions, class tokens) 0, norm scales 1, on a random positive input (random token ids): almost
surely, a weight whose gradient vanishes there carries no signal for any weights. The outputs are
summed with random positive coefficients (a plain sum of a LayerNorm output is constant). Weights
are scaled so every output row sums to at most 1/4 (ReLU6 and saturating ops stay in their
linear range, through residual sums too).

The spatial semantics must equal the oracle on every architecture; the channel semantics must
contain it.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from graphpai.functional import audit, functional_edges
from graphpai.masks import MaskSet
from graphpai.paths import paths
from graphpai.torch import models
from graphpai.torch.extract import _tensors_of, canonical_weight, model_weight, to_graph


def layer_parameter(model, name):
    """The parameter of graph layer `name` (a module path or a parameter path)."""
    for candidate in (f"{name}.weight", name):
        try:
            return candidate, model.get_parameter(candidate)
        except AttributeError:
            continue
    raise KeyError(name)


def random_masks(graph, density, seed):
    rng = np.random.default_rng(seed)
    return MaskSet({name: rng.random(layer.weight_shape) < density
                    for name, layer in graph.layers.items()})


def gradient_oracle(model, graph, masks, inputs, *, seed=0, trials=2):
    """Layer -> bool mask of the kept weights with a non-zero gradient (see the module doc)."""
    found = {name: np.zeros(layer.weight_shape, dtype=bool) for name, layer in graph.layers.items()}
    for trial in range(trials):
        gen = torch.Generator().manual_seed(seed * 1000 + trial)
        net = copy.deepcopy(model).double().eval()
        layer_params = {}
        for name, layer in graph.layers.items():
            path, p = layer_parameter(net, name)
            keep = torch.from_numpy(np.asarray(masks[name]))
            layer_params[path] = (name, model_weight(keep, layer.transposed, layer.groups))
        # a tied weight appears under each name; layer weights are written last (the mask of a
        # tied layer applies where the weight is shared too)
        norm_scales = {f"{path}.weight" for path, module in net.named_modules()
                       if "Norm" in type(module).__name__}
        named = sorted(net.named_parameters(remove_duplicate=False),
                       key=lambda item: item[0] in layer_params)
        with torch.no_grad():
            for path, p in named:
                if path in layer_params:
                    name, keep = layer_params[path]
                    layer = graph.layers[name]
                    w = (0.5 + 0.5 * torch.rand(p.shape, generator=gen, dtype=p.dtype)) * keep
                    wc = canonical_weight(w, layer.transposed, layer.groups)
                    per_row = 4 * wc.reshape(wc.shape[0], -1).sum(dim=1).clamp(min=0.25)
                    wc = wc / per_row.reshape((-1,) + (1,) * (wc.dim() - 1))
                    p.copy_(model_weight(wc, layer.transposed, layer.groups))
                elif path.endswith("weight") and (p.dim() == 1 or path in norm_scales):
                    p.fill_(1.0)   # norm scales
                elif path.endswith("weight") and p.dim() == 2:
                    p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=gen, dtype=p.dtype))
                else:
                    p.zero_()      # biases, positions, class tokens
        weights = {path: p for path, p in named if path in layer_params}
        for p in net.parameters():
            p.requires_grad_(False)
        for p in weights.values():
            p.requires_grad_(True)
        if isinstance(inputs, dict):
            out = net(**{k: _positive(v, gen) for k, v in inputs.items()})
        else:
            out = net(*[_positive(v, gen) for v in inputs])
        tensors = _outputs(out)
        total = sum((t * (0.5 + torch.rand(t.shape, generator=gen, dtype=t.dtype))).sum()
                    for t in tensors)
        grads = torch.autograd.grad(total, list(weights.values()), allow_unused=True)
        for (path, p), g in zip(weights.items(), grads):
            name, keep = layer_params[path]
            if g is None:
                continue
            layer = graph.layers[name]
            g = canonical_weight(g, layer.transposed, layer.groups)
            found[name] |= (g != 0).numpy() & np.asarray(masks[name])
    return found


def _positive(value, gen):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return 0.5 + 0.5 * torch.rand(value.shape, generator=gen, dtype=torch.float64)
    return value


def _outputs(out):
    """The floating-point tensors of a model's output (a tuple, dict or ModelOutput)."""
    return [t for t in _tensors_of(out) if t.is_floating_point()]


def compare_with_oracle(model, graph, inputs, densities=(0.1, 0.3, 0.6), seeds=(0, 1)):
    """Spatial == oracle, channel ⊇ oracle, on random masks; returns the counts seen."""
    seen = []
    for density in densities:
        for seed in seeds:
            masks = random_masks(graph, density, seed)
            truth = gradient_oracle(model, graph, masks, inputs, seed=seed)
            spatial = functional_edges(graph, masks, semantics="spatial")
            channel = functional_edges(graph, masks, semantics="channel")
            for name in graph.layers:
                assert not (truth[name] & ~channel[name]).any(), (name, density, seed)
                diff = np.argwhere(truth[name] != spatial[name])
                assert len(diff) == 0, (name, density, seed, diff[:5].tolist(),
                                        int(truth[name].sum()), int(spatial[name].sum()))
            seen.append((sum(int(t.sum()) for t in truth.values()),
                         sum(int(channel[n].sum()) for n in graph.layers)))
    return seen


# ------------------------------------------------------------------------------ models
class Mixer(nn.Module):
    """MLP-Mixer: patches, token mixing (a Linear over the token axis after a transpose) and
    channel mixing, LayerNorm, mean over tokens."""

    def __init__(self, dim=16, tokens=16, classes=5):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.norm1 = nn.LayerNorm(dim)
        self.token1 = nn.Linear(tokens, 2 * tokens)
        self.token2 = nn.Linear(2 * tokens, tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.channel1 = nn.Linear(dim, 2 * dim)
        self.channel2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)              # (B, tokens, dim)
        y = self.norm1(x).transpose(1, 2)                         # (B, dim, tokens)
        x = x + self.token2(F.gelu(self.token1(y))).transpose(1, 2)
        x = x + self.channel2(F.gelu(self.channel1(self.norm2(x))))
        return self.head(x.mean(dim=1))


class UNet(nn.Module):
    """A two-level U-Net with nearest upsampling, a skip concatenation and PixelShuffle."""

    def __init__(self):
        super().__init__()
        self.down1 = nn.Conv2d(3, 8, 3, padding=1)
        self.down2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = nn.Conv2d(24, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 12, 1)
        self.shuffle = nn.PixelShuffle(2)
        self.out = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        a = F.relu(self.down1(x))
        b = F.relu(self.mid(F.relu(self.down2(a))))
        u = self.fuse(torch.cat([self.up(b), a], dim=1))
        return self.out(self.shuffle(self.expand(F.relu(u))))


class TransposedUNet(nn.Module):
    """Upsampling by transposed convs (one grouped, with output_padding) and a skip concat."""

    def __init__(self):
        super().__init__()
        self.down1 = nn.Conv2d(3, 8, 3, padding=1)
        self.down2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.fuse = nn.Conv2d(16, 8, 3, padding=1)
        self.up2 = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        a = F.relu(self.down1(x))
        u = self.fuse(torch.cat([F.relu(self.up(F.relu(self.down2(a)))), a], dim=1))
        return self.out(F.relu(self.up2(F.relu(u))))


class GatedConv(nn.Module):
    """a * sigmoid(b) (a gate that is never zero) and a * b of two conv branches."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        b = self.b(x)
        return self.head(self.a(x) * torch.sigmoid(b) + self.c(x) * b)


def _image(shape=(3, 16, 16)):
    return (torch.rand((1,) + shape),)


@pytest.mark.parametrize("name", ["gpt", "vit", "mobilenetv2"])
def test_zoo_models_equal_the_oracle(name):
    options = {"width": 0.25} if name == "mobilenetv2" else {}
    model = models.build(name, seed=0, **options)
    graph = to_graph(model)
    if name == "gpt":
        inputs = (torch.randint(0, 64, (1, 16)),)
    else:
        inputs = (torch.rand(1, 3, 32, 32),)
    seen = compare_with_oracle(model, graph, inputs, densities=(0.05, 0.2, 0.5), seeds=(0,))
    assert any(t > 0 for t, _ in seen)


def test_mixer_equals_the_oracle():
    model = Mixer()
    graph = to_graph(model, (3, 16, 16))
    token = graph.layers["token1"]
    assert token.weight_shape == (32, 16) and token.in_size == (16,)  # positions = features
    compare_with_oracle(model, graph, _image())


def test_unet_equals_the_oracle():
    model = UNet()
    graph = to_graph(model, (3, 16, 16))
    assert graph.groups[graph.outputs[0]].size == (32, 32)
    compare_with_oracle(model, graph, _image())


class Encoder(nn.Module):
    """nn.TransformerEncoder (fx keeps it whole; torch.export reads its ATen ops: in_proj_weight
    is a layer named by its parameter path, the batch goes second inside)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True,
                                           activation="gelu")
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.enc(self.inp(x)).mean(1))


def test_transformer_encoder_equals_the_oracle():
    model = Encoder()
    graph = to_graph(model, (5, 8))
    assert "enc.layers.0.self_attn.in_proj_weight" in graph.layers
    assert graph.layers["enc.layers.0.self_attn.in_proj_weight"].weight_shape == (48, 16)
    assert sum(link.kind == "attention" for link in graph.links) == 2
    compare_with_oracle(model, graph, (torch.rand(1, 5, 8),))


def test_gated_products_equal_the_oracle():
    """a * sigmoid(b) keeps a where b is not reached (sigmoid(0) = 1/2); c * b needs both."""
    model = GatedConv()
    graph = to_graph(model, (3, 6, 6))
    muls = [link for link in graph.links if link.kind == "mul"]
    assert sorted(link.params["gating"] for link in muls) == [(True, False), (True, True)]
    compare_with_oracle(model, graph, (torch.rand(1, 3, 6, 6),))
    # b pruned away: the sigmoid gate still passes a, the product c * b is dead
    masks = {name: np.ones(layer.weight_shape, dtype=bool) for name, layer in graph.layers.items()}
    masks["b"][:] = False
    truth = gradient_oracle(model, graph, masks, (torch.rand(1, 3, 6, 6),))
    for semantics in ("channel", "spatial"):
        f = functional_edges(graph, masks, semantics=semantics)
        assert f["a"].all() and not f["c"].any()
        assert all((f[n] == truth[n]).all() for n in graph.layers)


def test_inputs_tokens_and_examples():
    gpt = models.build("gpt", seed=0)
    g = to_graph(gpt)
    assert g.groups[g.inputs[0]].size == (16,) and g.groups[g.inputs[0]].channels == 32
    assert g.layers["lm_head"].out_size == (16,)
    short = to_graph(gpt, example_inputs=torch.randint(0, 64, (1, 8)))
    assert short.groups[short.inputs[0]].size == (8,)
    assert to_graph(gpt, (8,), input_dtype="long").groups["lm_head"].size == (8,)
    same = to_graph(gpt, example_inputs=(torch.randint(0, 64, (3, 8)),))
    assert same.groups["lm_head"] == short.groups["lm_head"]
    one_hot = to_graph(gpt, prune_embeddings=True)
    assert one_hot.layers["embed"].weight_shape == (32, 64) and one_hot.layers["embed"].transposed
    assert one_hot.groups[one_hot.inputs[0]].channels == 64
    assert one_hot.num_weights == g.num_weights + 64 * 32


def test_tied_embedding_is_the_input_and_the_head_a_layer():
    gpt = models.build("gpt", seed=0, tie_weights=True)
    assert gpt.lm_head.weight is gpt.embed.weight
    g = to_graph(gpt)
    assert "lm_head" in g.layers and "embed" not in g.layers
    assert len(g.notes) == 1 and "shares its weight" in g.notes[0]   # said in the result
    assert models.build("gpt", seed=0) and to_graph(models.build("gpt", seed=0)).notes == ()
    # the input is every token's embedding: exact when the tied head is dense (a pruned head
    # also prunes embedding rows, which the graph does not see: docs/graph.md#beyond-convnets)
    masks = random_masks(g, 0.3, 0)
    masks = MaskSet({**dict(masks.items()), "lm_head": np.ones(g.layers["lm_head"].weight_shape,
                                                                  dtype=bool)})
    ids = (torch.randint(0, 64, (1, 16)),)
    truth = gradient_oracle(gpt, g, masks, ids)
    spatial = functional_edges(g, masks, semantics="spatial")
    assert all((truth[n] == spatial[n]).all() for n in g.layers)


def test_meta_device_model_extracts_without_weights():
    with torch.device("meta"):
        gpt = models.GPT(vocab_size=64, dim=32, depth=1, heads=4, hidden=64, context=8)
    g = to_graph(gpt, example_inputs=torch.zeros((1, 8), dtype=torch.long, device="meta"))
    attention = next(link for link in g.links if link.kind == "attention")
    assert len(attention.params["allowed"].rows) == 8 * 9 // 2  # the causal mask was read
    assert g.num_weights == 4 * 32 * 32 + 3 * 32 * 64 + 64 * 32


@pytest.mark.parametrize("name", ["gpt", "vit"])
def test_analyses_on_the_zoo_transformers(name):
    from graphpai.spectral import spectral

    model = models.build(name, seed=0)
    graph = to_graph(model)
    masks = random_masks(graph, 0.2, 0)
    spatial = audit(graph, masks, semantics="spatial")
    channel = audit(graph, masks, semantics="channel")
    assert 0 < spatial.functional <= channel.functional <= masks.kept()
    p = paths(graph, masks)
    assert np.isfinite(p.log10_paths)
    assert spectral(graph, masks) is not None


def test_export_tracer_gives_the_fx_graph():
    model = models.build("gpt", seed=0)
    a, b = to_graph(model, tracer="fx"), to_graph(model, tracer="export")
    assert list(a.layers.values()) == list(b.layers.values())
    masks = random_masks(a, 0.2, 3)
    for semantics in ("channel", "spatial"):
        fa, fb = functional_edges(a, masks, semantics=semantics), functional_edges(b, masks, semantics=semantics)
        assert all((fa[n] == fb[n]).all() for n in a.layers)


TOKENS_FILE = """import torch.nn as nn


class Tok(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids):
        return self.fc(self.emb(ids)).mean(1)


def make():
    return Tok()
"""


def test_cli_reads_token_inputs(tmp_path, capsys):
    import json

    from graphpai.cli import main

    path = tmp_path / "tok.py"
    path.write_text(TOKENS_FILE)
    code = main(["graph", "--model-file", f"{path}:make", "--input-shape", "5",
                 "--input-dtype", "long", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    fc = next(layer for layer in out["layers"] if layer["name"] == "fc")
    assert fc["in_size"] == [5] and fc["weight_shape"] == [3, 8]
    # without --input-dtype the ids would be floats: one line, exit 2
    assert main(["graph", "--model-file", f"{path}:make", "--input-shape", "5"]) == 2
    assert "\n" not in capsys.readouterr().err.strip()


class Decoder(nn.Module):
    """ConvTranspose2d/1d (strided, grouped, with output padding), Conv3d and bilinear-free
    upsampling: the U-Net decoder ops."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.line = nn.ConvTranspose1d(6, 4, 4, stride=2, padding=1)
        self.vol = nn.Conv3d(1, 2, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x):
        y = F.relu(self.up(F.relu(self.down(x))))              # (6, 8, 8)
        z = self.line(y.flatten(2))                            # (4, 128)
        return self.vol(z.reshape(z.shape[0], 1, 4, 8, 16))    # (2, 4, 8, 16)


def test_transposed_convs_and_conv3d_equal_the_oracle():
    model = Decoder()
    graph = to_graph(model, (3, 8, 8))
    up = graph.layers["up"]
    assert up.transposed and up.weight_shape == (6, 4, 3, 3) and up.out_size == (8, 8)
    assert graph.layers["vol"].kernel == (1, 3, 3)
    compare_with_oracle(model, graph, (torch.rand(1, 3, 8, 8),))
    from graphpai.torch.extract import canonical_weight, layer_weights, model_weight
    w = layer_weights(model)["up"]
    assert w.shape == up.weight_shape
    back = model_weight(torch.from_numpy(w), True, 2)
    assert torch.equal(back, model.up.weight.detach().double())
    assert torch.equal(canonical_weight(back, True, 2), torch.from_numpy(w))


class Bilinear(nn.Module):
    def __init__(self, align_corners):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=align_corners)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.up(F.relu(self.conv(x)))
        return self.out(y + F.interpolate(y, size=(8, 8), mode="bilinear"))


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_upsampling_equals_the_oracle(align_corners):
    model = Bilinear(align_corners)
    graph = to_graph(model, (3, 8, 8))
    assert sum(link.params.get("op") == "interpolate" for link in graph.links) == 2
    compare_with_oracle(model, graph, (torch.rand(1, 3, 8, 8),), densities=(0.2, 0.5))


class Norms(nn.Module):
    """GroupNorm on a conv map (statistics over a group's channels and every pixel), LayerNorm
    over (C, H, W), nn.RMSNorm on tokens, chunk into two halves, a residual stream."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(4, 8)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.ln = nn.LayerNorm([8, 4, 4])
        self.rms = nn.RMSNorm(8)
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x):
        y = self.gn(self.conv(x))
        y = self.ln(self.conv2(F.gelu(y)))
        t = y.flatten(2).transpose(1, 2)                      # (16 tokens, 8 features)
        t = t + self.fc1(self.rms(t))
        a, b = t.chunk(2, dim=-1)
        return self.fc2(F.gelu(a) * b)


def test_norms_and_chunks_equal_the_oracle():
    model = Norms()
    graph = to_graph(model, (3, 4, 4))
    norms = {link.name: link.params for link in graph.links if link.kind == "norm"}
    assert norms["gn"]["groups"] == 4 and norms["gn"]["positions"] == "all"
    assert graph.groups["ln"].size == () and graph.groups["ln"].channels == 8 * 16  # LN over C,H,W
    assert norms["rms"]["centred"] is False
    compare_with_oracle(model, graph, (torch.rand(1, 3, 4, 4),))


class Sorter(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.sort(self.fc(x), dim=-1).values


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Sorter()

    def forward(self, x):
        return self.inner(x)


def test_an_op_neither_tracer_models_is_named_with_its_module_path():
    from graphpai.errors import UnsupportedOpError

    with pytest.raises(UnsupportedOpError) as info:
        to_graph(Block(), (3, 4))
    message = str(info.value)
    assert "'sort'" in message and "'inner'" in message and "\n" not in message


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MOVES = {
    "transpose": lambda x: x.transpose(1, 2),
    "flip-view": lambda x: x.reshape(x.shape[0], x.shape[2], x.shape[1]),
    "roll": lambda x: torch.roll(x, 1, dims=1),
    "slice": lambda x: torch.cat([x[:, 1:], x[:, :1]], dim=1),
    "expand-sum": lambda x: x + x.mean(dim=1, keepdim=True),
    "double": lambda x: torch.cat([x, x.flip(2)], dim=2)[:, :, : x.shape[2]],
}


class Moves(nn.Module):
    """Linear layers over the last axis of (tokens, features) with element moves in between."""

    def __init__(self, ops, width):
        super().__init__()
        self.ops = list(ops)
        self.fcs = nn.ModuleList([nn.Linear(width, width) for _ in range(len(ops) + 1)])

    def forward(self, x):
        x = self.fcs[0](x)
        for op, fc in zip(self.ops, self.fcs[1:]):
            x = fc(F.gelu(MOVES[op](x)))
        return x


@settings(max_examples=12, deadline=None)
@given(ops=st.lists(st.sampled_from(sorted(MOVES)), min_size=1, max_size=3),
       density=st.sampled_from([0.15, 0.3, 0.6]), seed=st.integers(0, 10))
def test_random_element_moves_equal_the_oracle(ops, density, seed):
    torch.manual_seed(seed)
    model = Moves(ops, 4)
    graph = to_graph(model, (4, 4))
    masks = random_masks(graph, density, seed)
    truth = gradient_oracle(model, graph, masks, (torch.rand(1, 4, 4),), seed=seed)
    spatial = functional_edges(graph, masks, semantics="spatial")
    channel = functional_edges(graph, masks, semantics="channel")
    for name in graph.layers:
        assert (truth[name] == spatial[name]).all(), (ops, name)
        assert not (truth[name] & ~channel[name]).any(), (ops, name)


@pytest.mark.parametrize("name", ["gpt", "vit", "mobilenetv2"])
def test_prune_methods_on_the_zoo_transformers_and_mobilenet(name):
    import graphpai

    options = {"width": 0.25} if name == "mobilenetv2" else {}
    model = models.build(name, seed=0, **options)
    graph = to_graph(model)
    for method, compression in (("rpi", 10), ("mica", 10), ("magnitude", 10), ("nm", 2)):
        masks = graphpai.prune(model, method, compression=compression, seed=0)
        assert set(masks) == set(graph.layers)
        spatial = audit(graph, masks, semantics="spatial")
        channel = audit(graph, masks, semantics="channel")
        assert spatial.functional <= channel.functional <= masks.kept(), method
        if method == "mica":  # every kept weight functional (docs/mica.md, attention)
            assert spatial.functional == masks.kept(), name
        # global magnitude at 10x cuts MobileNetV2 (its 1x1 convs have the smallest weights)
        assert spatial.functional > 0 or (method, name) == ("magnitude", "mobilenetv2")


@pytest.mark.parametrize("cls,shape", [(Mixer, (3, 16, 16)), (UNet, (3, 16, 16)),
                                       (TransposedUNet, (3, 8, 8)), (Encoder, (5, 8))])
def test_prune_methods_on_the_hand_written_models(cls, shape):
    """Issue 11's hand-written MLP-Mixer, U-Nets (upsampling, and transposed convs) and
    nn.TransformerEncoder: every method gives one
    mask per graph layer (the ranking ones find the layers through input_shape: fx keeps
    nn.TransformerEncoder whole), and MiCA's and NPB's masks are fully functional."""
    import graphpai

    torch.manual_seed(0)
    model = cls()
    graph = to_graph(model, shape)
    for method, compression in (("rpi", 10), ("mica", 10), ("npb", 10), ("magnitude", 10),
                                ("nm", 2)):
        net = graph if method in ("rpi", "mica", "npb") else model
        options = {} if net is graph else {"input_shape": shape}
        masks = graphpai.prune(net, method, compression=compression, seed=0, **options)
        assert set(masks) == set(graph.layers), method
        spatial = audit(graph, masks, semantics="spatial")
        channel = audit(graph, masks, semantics="channel")
        assert spatial.functional <= channel.functional <= masks.kept(), method
        if method in ("mica", "npb"):
            assert spatial.functional == masks.kept(), method


@pytest.mark.parametrize("name", ["gpt", "vit", "mobilenetv2", "resnet20"])
def test_meta_default_device_gives_the_cpu_graph(name):
    cpu = to_graph(models.build(name, seed=0))
    with torch.device("meta"):
        meta = to_graph(models.build(name))
    assert list(meta.layers.values()) == list(cpu.layers.values())
    assert list(meta.groups.values()) == list(cpu.groups.values())
    assert [link.kind for link in meta.links] == [link.kind for link in cpu.links]
