"""Masks from safetensors files and Hugging Face-style state dicts (docs/llm.md): round trips,
prefixes, tied weights, bf16 weights, and one clear error for keys or shapes that do not match."""

import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from graphpai.errors import MaskError
from graphpai.masks import MaskSet
from graphpai.torch.masks import apply_masks
from graphpai.torch.state import load_masks, masks_from_state_dict, state_dict_keys

safetensors_torch = pytest.importorskip("safetensors.torch")  # the 'io' extra (in 'dev')


class Block(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.q_proj = nn.Linear(d, d, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)
        self.norm = nn.LayerNorm(d)


class TinyDecoder(nn.Module):
    """The key layout of a Hugging Face decoder: embed_tokens, layers.i.*, a tied lm_head."""

    def __init__(self, vocab=16, d=8, f=12, n=2):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d, f) for _ in range(n))
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.embed_tokens.weight  # tied, as tie_word_embeddings=True

    def forward(self, ids):
        x = self.embed_tokens(ids)
        for block in self.layers:
            x = x + block.down_proj(block.up_proj(block.q_proj(block.norm(x))))
        return self.lm_head(x)


class ForCausalLM(nn.Module):
    """``model.`` prefix, as LlamaForCausalLM wraps LlamaModel."""

    def __init__(self):
        super().__init__()
        self.model = TinyDecoder()


def random_masks(model, seed, density=0.5):
    rng = np.random.default_rng(seed)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            out[name] = rng.random(tuple(module.weight.shape)) < density
    return MaskSet(out)


def pruned_state_dict(model, masks, dtype=torch.float32, prefix=""):
    """What Wanda/SparseGPT save: the weights with pruned entries zeroed, tied lm_head left out."""
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().clone().to(dtype)
        layer = key[: -len(".weight")] if key.endswith(".weight") else None
        if layer in masks:
            value[torch.from_numpy(~masks[layer])] = 0
        state[prefix + key] = value
    state.pop(prefix + "lm_head.weight", None)
    return state


def test_maskset_safetensors_round_trip_is_bool_and_atomic(tmp_path):
    masks = random_masks(TinyDecoder(), 0)
    path = tmp_path / "out" / "masks.safetensors"
    masks.save(path)
    assert os.listdir(tmp_path / "out") == ["masks.safetensors"]
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        assert sorted(f.keys()) == sorted(masks)
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BOOL"}
    assert MaskSet.load(path) == masks


def test_hf_checkpoint_in_bf16_with_a_prefix_and_a_tied_head(tmp_path):
    torch.manual_seed(0)
    model = TinyDecoder()
    # the tied lm_head shares embed_tokens' tensor; an embedding weight has no exact zeros
    masks = random_masks(model, 1)
    lm = dict(masks)
    lm["lm_head"] = np.ones((16, 8), dtype=bool)  # what a tied, unpruned head must read back
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(pruned_state_dict(model, MaskSet(lm), torch.bfloat16, "model."),
                                str(path))
    got = load_masks(model, path)
    assert list(got) == list(MaskSet(lm))
    for name in masks:
        if name != "lm_head":
            assert np.array_equal(got[name], masks[name]), name
    assert got["lm_head"].all()
    # the bf16 values themselves: nonzero exactly where the mask keeps (the direct computation)
    raw = safetensors_torch.load_file(str(path))
    for name in masks:
        if name != "lm_head":
            assert np.array_equal((raw["model." + name + ".weight"].float() != 0).numpy(),
                                  got[name])
    # the same file for the wrapper with the 'model.' prefix: keys match without stripping
    assert load_masks(ForCausalLM(), path) == {"model." + k: v for k, v in got.items()}
    assert "model.layers.0.q_proj.weight" in state_dict_keys(path)


def test_prefix_the_other_way_and_torch_files(tmp_path):
    inner = TinyDecoder()
    masks = random_masks(inner, 2)
    masks = MaskSet({**masks, "lm_head": np.ones((16, 8), bool)})
    torch.save(pruned_state_dict(inner, masks), tmp_path / "pytorch_model.bin")
    wrapped = ForCausalLM()  # layers are 'model.layers.0.q_proj', the file has 'layers.0.q_proj'
    got = load_masks(wrapped, tmp_path / "pytorch_model.bin")
    assert got == {"model." + k: v for k, v in masks.items()}
    ddp = {"module." + k: v for k, v in pruned_state_dict(inner, masks).items()}
    assert masks_from_state_dict(inner, ddp) == masks


def test_torch_prune_buffers_and_graphpai_files_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    masks = random_masks(model, 3)
    apply_masks(model, masks)
    state = model.state_dict()
    assert any(k.endswith("weight_orig") for k in state)
    fresh = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    assert masks_from_state_dict(fresh, state) == masks
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()},
                                str(tmp_path / "pruned.safetensors"))
    assert load_masks(fresh, tmp_path / "pruned.safetensors") == masks
    assert MaskSet.load(tmp_path / "pruned.safetensors") == masks
    masks.save(tmp_path / "m.safetensors")
    assert load_masks(fresh, tmp_path / "m.safetensors") == masks  # bare layer names


def test_sharded_directory_and_maskset_weights_mode(tmp_path):
    model = TinyDecoder()
    masks = random_masks(model, 4)
    state = pruned_state_dict(model, masks, torch.bfloat16)
    keys = sorted(state)
    half = len(keys) // 2
    for i, part in enumerate((keys[:half], keys[half:])):
        safetensors_torch.save_file({k: state[k] for k in part},
                                    str(tmp_path / f"model-0000{i + 1}-of-00002.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    got = load_masks(model, tmp_path)
    assert all(np.array_equal(got[k], masks[k]) for k in masks if k != "lm_head")
    single = tmp_path / "one.safetensors"
    safetensors_torch.save_file(state, str(single))
    direct = MaskSet.load(single, weights=True)  # every 2-D weight: embedding included
    assert "embed_tokens" in direct and "layers.0.norm" not in direct
    assert all(np.array_equal(direct[k], masks[k]) for k in masks if k != "lm_head")
    with pytest.raises(MaskError, match="model's state dict without masks"):
        MaskSet.load(single)  # weights are not masks unless asked


def test_mismatched_keys_and_shapes_are_one_clear_error(tmp_path):
    model = TinyDecoder()
    masks = random_masks(model, 5)
    state = pruned_state_dict(model, masks)
    gone = {k: v for k, v in state.items() if "layers.1.up_proj" not in k}
    with pytest.raises(MaskError, match=r"no mask or weight for 1 layer.*'layers\.1\.up_proj'"):
        masks_from_state_dict(model, gone)
    dense = masks_from_state_dict(model, gone, missing="dense")
    assert dense["layers.1.up_proj"].all()
    bigger = TinyDecoder(f=16)
    with pytest.raises(MaskError, match=r"'layers\.0\.up_proj' has weight shape \(16, 8\) but "
                                        r"'layers\.0\.up_proj\.weight' has shape \(12, 8\)"):
        masks_from_state_dict(bigger, state)
    stray = dict(masks)
    stray["layers.9.q_proj"] = np.ones((8, 8), bool)
    with pytest.raises(MaskError, match=r"masks for 1 layer\(s\) the model does not have.*"
                                        r"layers\.9\.q_proj"):
        masks_from_state_dict(model, {**stray, "lm_head": np.ones((16, 8), bool)})
    with pytest.raises(MaskError, match="no mask or weight"):
        masks_from_state_dict(model, {"vision.patch.weight": torch.ones(3, 3)})
    half = {k + ".weight_mask": torch.from_numpy(v * 0.5) for k, v in masks.items()}
    with pytest.raises(MaskError, match=r"has value 0\.5"):
        masks_from_state_dict(model, half)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(MaskError, match="not a safetensors file"):
        load_masks(model, bad)
    with pytest.raises(MaskError, match="not a safetensors file"):
        MaskSet.load(bad)
    with pytest.raises(MaskError, match="does not exist"):
        load_masks(model, tmp_path / "nope.safetensors")
    with pytest.raises(MaskError, match="holds no .safetensors"):
        (tmp_path / "empty").mkdir()
        load_masks(model, tmp_path / "empty")


def test_hugging_face_llama_wanda_save_pretrained_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")  # in the 'dev' extra
    import graphpai
    from graphpai.torch.masks import remove_masks

    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=4, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    data = [{"input_ids": torch.randint(0, 64, (2, 8))}]  # Hugging Face keyword batches
    masks = graphpai.prune(model, "wanda", compression=2, data=data, nm="2:4",
                           exclude=["lm_head"])
    assert masks["lm_head"].all() and masks.nm_compliant("2:4")["model.layers.1.mlp.down_proj"]
    apply_masks(model, masks)
    remove_masks(model)  # what a pruning script saves: zeros in plain weights
    model.save_pretrained(tmp_path / "pruned")
    fresh = transformers.LlamaForCausalLM(config)
    assert load_masks(fresh, tmp_path / "pruned") == masks
    assert load_masks(fresh.model, tmp_path / "pruned" / "model.safetensors", missing="dense") \
        == {k[len("model."):]: v for k, v in masks.items() if k != "lm_head"}


def test_attention_in_proj_and_transposed_conv1d_weights(tmp_path):
    transformers = pytest.importorskip("transformers")
    from graphpai.generators import nm_masks

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, bias=False, batch_first=True)
            self.c_fc = transformers.pytorch_utils.Conv1D(12, 8)  # held (in=8, out=12)

    torch.manual_seed(0)
    model = Net()
    masks = nm_masks(model, "2:4", scores="random", seed=0)
    assert list(masks) == ["attn.in_proj_weight", "attn.out_proj", "c_fc"]
    assert masks["c_fc"].shape == (12, 8)  # the layer's (out, in)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["attn.in_proj_weight"][torch.from_numpy(~masks["attn.in_proj_weight"])] = 0
    state["attn.out_proj.weight"][torch.from_numpy(~masks["attn.out_proj"])] = 0
    state["c_fc.weight"][torch.from_numpy(~masks["c_fc"].T)] = 0  # the model's (in, out)
    safetensors_torch.save_file(state, str(tmp_path / "m.safetensors"))
    assert load_masks(Net(), tmp_path / "m.safetensors") == masks
    apply = {"attn.in_proj_weight_mask": torch.from_numpy(masks["attn.in_proj_weight"]),
             "attn.in_proj_weight_orig": torch.randn(24, 8), "c_fc.weight": state["c_fc.weight"],
             "attn.out_proj.weight_mask": torch.from_numpy(masks["attn.out_proj"])}
    assert masks_from_state_dict(Net(), apply) == masks
