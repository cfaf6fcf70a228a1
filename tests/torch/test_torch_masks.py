"""MaskSets and torch (graphpai/torch/masks.py, MaskSet .pt files; docs/definitions.md#masks,
DESIGN "Masks
interoperate with PyTorch"): every round trip keeps every bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.nn.utils import prune

from graphpai.errors import MaskError
from graphpai.masks import MaskSet
from graphpai.torch import models
from graphpai.torch.extract import prunable_modules, to_graph
from graphpai.torch.masks import apply_masks, dense_masks, masks_from_model, remove_masks


def random_masks(model, seed, density=0.3) -> MaskSet:
    rng = np.random.default_rng(seed)
    return MaskSet({k: rng.random(tuple(m.weight.shape)) < density
                    for k, m in prunable_modules(model).items()})


def assert_same_bits(a, b):
    assert set(a) == set(b)
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == bool and x.shape == y.shape and np.array_equal(x, y), k


# --------------------------------------------------------------------------- prune buffers
@given(seed=st.integers(0, 2**32 - 1), density=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_apply_then_read_keeps_every_bit(seed, density):
    model = models.build("lenet5", seed=0)
    masks = random_masks(model, seed, density)
    assert apply_masks(model, masks) is model
    assert_same_bits(masks_from_model(model, missing="error"), masks)
    for name, module in prunable_modules(model).items():
        # torch's own view of the mask: the buffer, and zeros exactly where the mask is 0
        assert np.array_equal(module.weight_mask.numpy().astype(bool), masks[name])
        assert torch.equal(module.weight, module.weight_orig * torch.as_tensor(masks[name]))


def test_reading_a_model_pruned_by_torch_directly():
    model = models.build("resnet20", seed=0)
    torch.manual_seed(0)
    for name, module in prunable_modules(model).items():
        if name != "layer1.0.conv2":  # one layer left unpruned: it reads as dense
            prune.random_unstructured(module, "weight", amount=0.7)
    masks = masks_from_model(model)
    for name, module in prunable_modules(model).items():
        if name == "layer1.0.conv2":
            assert masks[name].all()
            continue
        expected = module.weight_mask.detach().numpy() == 1
        assert np.array_equal(masks[name], expected)
        assert masks.kept(name) == round(0.3 * module.weight_mask.numel())
    masks.validate(to_graph(model))
    with pytest.raises(MaskError, match="'layer1.0.conv2' has no weight_mask buffer"):
        masks_from_model(model, missing="error")


def test_reapplying_replaces_the_mask_and_keeps_weight_orig():
    model = models.build("lenet5", seed=0)
    first, second = random_masks(model, 1), random_masks(model, 2)
    apply_masks(model, first)
    orig = {k: m.weight_orig.detach().clone() for k, m in prunable_modules(model).items()}
    apply_masks(model, second)
    assert_same_bits(masks_from_model(model), second)  # replaced, not first & second
    for name, module in prunable_modules(model).items():
        assert torch.equal(module.weight_orig, orig[name])
        assert torch.equal(module.weight, orig[name] * torch.as_tensor(second[name]))
        assert len(module._forward_pre_hooks) == 1
    # the forward pass uses the new mask
    model.eval()
    x = torch.randn(2, 1, 28, 28)
    reference = models.build("lenet5", seed=0).eval()
    with torch.no_grad():
        for name, module in prunable_modules(reference).items():
            module.weight.mul_(torch.as_tensor(second[name]))
        torch.testing.assert_close(model(x), reference(x))


def test_partial_masks_touch_only_their_layers():
    model = models.build("lenet5", seed=0)
    apply_masks(model, {"classifier.4": np.zeros((10, 84))})
    assert not hasattr(model.features[0], "weight_mask")
    masks = masks_from_model(model)
    assert masks.kept("classifier.4") == 0 and masks["features.0"].all()


def test_bad_masks_leave_the_model_untouched():
    model = models.build("lenet5", seed=0)
    good = random_masks(model, 3)
    bad = {**good, "features.3": np.ones((16, 6, 3, 3))}
    with pytest.raises(MaskError) as info:
        apply_masks(model, bad)
    message = str(info.value)
    assert "'features.3'" in message and "(16, 6, 3, 3)" in message and "(16, 6, 5, 5)" in message
    with pytest.raises(MaskError, match=r"unknown layer\(s\) \['head'\]"):
        apply_masks(model, {**good, "head": np.ones((2, 2))})
    with pytest.raises(MaskError, match="has value 0.5"):
        apply_masks(model, {"classifier.4": np.full((10, 84), 0.5)})
    assert not any(hasattr(m, "weight_mask") for m in prunable_modules(model).values())


def test_dense_and_remove():
    model = models.build("lenet5", seed=0)
    dense = dense_masks(model)
    assert dense.compression() == 1.0 and dense == MaskSet.dense(to_graph(model))
    masks = random_masks(model, 4)
    apply_masks(model, masks)
    remove_masks(model)
    for name, module in prunable_modules(model).items():
        assert not hasattr(module, "weight_orig") and not hasattr(module, "weight_mask")
        assert not module.weight[~torch.as_tensor(masks[name])].any()
    assert masks_from_model(model) == dense  # no buffers left: every layer reads as dense


# --------------------------------------------------------------------------- .pt files
@given(seed=st.integers(0, 2**32 - 1))
def test_pt_round_trip_keeps_every_bit(tmp_path_factory, seed):
    model = models.build("lenet5", seed=0)
    masks = random_masks(model, seed, 0.5)
    path = tmp_path_factory.mktemp("pt") / "masks.pt"
    masks.save(path)
    raw = torch.load(path, weights_only=True)  # a plain {name: bool tensor} dict
    assert set(raw) == set(masks) and all(raw[k].dtype == torch.bool for k in raw)
    assert_same_bits(MaskSet.load(path), masks)


def test_full_pruned_state_dict_and_weight_mask_dicts(tmp_path):
    model = models.build("resnet20", seed=0)
    masks = random_masks(model, 5, 0.1)
    apply_masks(model, masks)
    state = model.state_dict()
    assert "conv.weight_orig" in state and "bn.running_mean" in state
    torch.save(state, tmp_path / "model.pt")
    assert_same_bits(MaskSet.load(tmp_path / "model.pt"), masks)  # only *.weight_mask is read
    assert_same_bits(MaskSet.from_state_dict(state), masks)
    torch.save({f"{k}.weight_mask": torch.as_tensor(v, dtype=torch.float32) for k, v in masks.items()},
               tmp_path / "buffers.pth")
    assert_same_bits(MaskSet.load(tmp_path / "buffers.pth"), masks)
    # the loaded masks fit the model's graph and drive a fresh model to the same buffers
    loaded = MaskSet.load(tmp_path / "model.pt").validate(to_graph(model))
    fresh = apply_masks(models.build("resnet20", seed=0), loaded)
    assert_same_bits(masks_from_model(fresh), masks)
    # .npz of the same masks gives the same bits
    masks.save(tmp_path / "masks.npz")
    assert_same_bits(MaskSet.load(tmp_path / "masks.npz"), masks)


def test_pt_file_errors(tmp_path):
    model = models.build("lenet5", seed=0)
    torch.save(model, tmp_path / "whole.pt")  # a pickled module, not a state dict
    with pytest.raises(MaskError, match="pickled Python objects.*model.state_dict"):
        MaskSet.load(tmp_path / "whole.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(MaskError, match=r"cannot read masks from .*junk\.pt"):
        MaskSet.load(tmp_path / "junk.pt")
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    with pytest.raises(MaskError, match="holds a Tensor, not a mapping of layer masks"):
        MaskSet.load(tmp_path / "tensor.pt")
    torch.save(model.state_dict(), tmp_path / "unpruned.pt")
    with pytest.raises(MaskError, match=r"looks like a model's state dict without masks \(it has "
                                        r"'features.0.bias' and no '\*.weight_mask' buffers\)"):
        MaskSet.load(tmp_path / "unpruned.pt")
    torch.save({"fc": torch.tensor([1.0, float("nan")])}, tmp_path / "nan.pt")
    with pytest.raises(MaskError, match="mask for 'fc' contains NaN"):
        MaskSet.load(tmp_path / "nan.pt")
    for path in (tmp_path / "whole.pt", tmp_path / "junk.pt"):
        with pytest.raises(MaskError) as info:
            MaskSet.load(path)
        assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_torch_tensors_are_accepted_as_masks():
    grad_tensor = torch.ones(3, 2, requires_grad=True)
    m = MaskSet({"a": torch.tensor([[1, 0]]), "b": torch.tensor([[True, False]]), "c": grad_tensor})
    assert m["a"].tolist() == [[True, False]] and m["b"].tolist() == [[True, False]]
    assert m["c"].all() and m.kept() == 8


def test_issue_2_partly_pruned_state_dict_reads_untouched_layers_as_dense(tmp_path):
    model = models.build("lenet300_100", seed=0)
    prune.random_unstructured(model.features[0], "weight", amount=0.9)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    masks = MaskSet.load(path).validate(to_graph(model))
    expected = model.features[0].weight_mask.numpy().astype(bool)
    assert np.array_equal(masks["features.0"], expected)
    others = [name for name in masks if name != "features.0"]
    assert others and all(masks[name].all() for name in others)


def test_masked_copy_makes_masks_permanent_and_leaves_the_model():
    from graphpai.torch.masks import masked_copy

    model = models.build("lenet300_100", seed=0)
    masks = random_masks(model, seed=4)
    apply_masks(model, masks)
    clone = masked_copy(model)
    original = prunable_modules(model)
    for name, module in prunable_modules(clone).items():
        assert not hasattr(module, "weight_mask") and not hasattr(module, "weight_orig")
        assert torch.equal(module.weight, original[name].weight)  # orig * mask
        assert (module.weight[~torch.as_tensor(masks[name])] == 0).all()
    assert masks_from_model(model) == masks  # the original keeps its hooks


# ------------------------------------------------------- issue 13 item 6: uncalled modules
class WithSpare(torch.nn.Module):
    """fc1 -> fc2; `spare` is registered but forward never calls it."""

    def __init__(self, input_shape=True):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 6)
        self.spare = torch.nn.Linear(50, 40)
        self.fc2 = torch.nn.Linear(6, 3)
        if input_shape:
            self.input_shape = (4,)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("input_shape", [True, False])
def test_uncalled_module_is_named_and_left_out_everywhere(input_shape):
    from graphpai.torch.masks import UncalledModuleWarning, layer_modules

    model = WithSpare(input_shape)
    with pytest.warns(UncalledModuleWarning, match="'spare'"):
        assert list(layer_modules(model)) == ["fc1", "fc2"]
    with pytest.warns(UncalledModuleWarning, match="'spare'"):
        dense = dense_masks(model)
    assert set(dense) == {"fc1", "fc2"} and dense.numel() == 4 * 6 + 6 * 3  # N without spare
    with pytest.warns(UncalledModuleWarning):
        assert set(masks_from_model(model)) == {"fc1", "fc2"}
    # the graph agrees: the MaskSets validate against it
    if input_shape:
        graph = to_graph(model)
        assert set(graph.layers) == {"fc1", "fc2"}
        dense.validate(graph)


@pytest.mark.parametrize("method", ["magnitude", "snip", "grasp", "synflow"])
def test_ranking_methods_leave_out_an_uncalled_module(method):
    """Before the rule, magnitude kept weights of `spare` and the compression counted them."""
    import graphpai
    from graphpai.torch.data import synthetic_batches
    from graphpai.torch.masks import UncalledModuleWarning

    model = WithSpare()
    data = synthetic_batches((4,), 3, batch_size=6, seed=0) \
        if method in ("snip", "grasp") else None
    with pytest.warns(UncalledModuleWarning, match="'spare'"):
        masks = graphpai.prune(model, method, compression=2, data=data, seed=0)
    assert set(masks) == {"fc1", "fc2"}
    n = 4 * 6 + 6 * 3
    assert masks.numel() == n and masks.kept() <= n - int(n / 2)
    graphpai.audit(model, masks)  # accepted by the audit


def test_apply_masks_skips_an_uncalled_module_with_a_warning():
    from graphpai.torch.masks import UncalledModuleWarning

    model = WithSpare()
    masks = {"fc1": np.ones((6, 4), bool), "spare": np.zeros((40, 50), bool)}
    with pytest.warns(UncalledModuleWarning, match="'spare'"):
        apply_masks(model, masks)
    assert hasattr(model.fc1, "weight_mask") and not hasattr(model.spare, "weight_mask")


# ------------------------------------------- issue 13 item 7: a pruned model's own masks
def _pruned_resnet20(amount=0.999):
    model = models.build("resnet20", seed=0)
    for module in prunable_modules(model).values():
        prune.l1_unstructured(module, "weight", amount=amount)
    return model


def test_audit_and_paths_of_a_torch_pruned_model_read_its_masks():
    """A 99.9%-pruned ResNet-20 reported compression 1 before: it was audited as dense."""
    import graphpai

    model = _pruned_resnet20()
    result = graphpai.audit(model)
    expected = sum(int(m.weight_mask.sum()) for m in prunable_modules(model).values())
    assert result.kept == expected and result.N == 270_896
    assert result.direct_compression == pytest.approx(270_896 / expected)
    assert result.masks_source.startswith("model: torch.nn.utils.prune weight_mask buffers")
    assert "22 of 22 layers" in result.masks_source
    assert "masks: model: torch.nn.utils.prune" in result.table()
    assert result.to_dict()["masks"] == result.masks_source
    paths = graphpai.paths(model)
    assert paths.log10_paths == graphpai.paths(model, masks_from_model(model)).log10_paths
    dense = graphpai.audit(models.build("resnet20", seed=0))
    assert dense.masks_source == "dense" and dense.direct_compression == 1


def test_torch_ao_parametrized_masks_are_read():
    """torch.ao.pruning's sparsifier keeps masks in parametrizations (FakeSparsity.mask)."""
    import graphpai
    from torch.ao.pruning import WeightNormSparsifier

    from graphpai.torch.masks import masked_copy, model_masks

    model = models.build("lenet300_100", seed=0)
    sparsifier = WeightNormSparsifier(sparsity_level=0.75, sparse_block_shape=(1, 4),
                                      zeros_per_block=4)
    sparsifier.prepare(model, [{"tensor_fqn": f"{n}.weight"} for n in prunable_modules(model)])
    sparsifier.step()
    expected = {n: m.parametrizations.weight[0].mask.detach().numpy().astype(bool)
                for n, m in prunable_modules(model).items()}
    masks, source = model_masks(model)
    assert_same_bits(masks, expected)
    assert "torch.ao.pruning" in source
    assert 0 < masks.kept() < masks.numel()
    result = graphpai.audit(model)
    assert result.kept == masks.kept() and result.masks_source.startswith("model: torch.ao")
    clone = masked_copy(model)  # parametrizations folded: plain weights with the zeros in them
    for name, module in prunable_modules(clone).items():
        assert isinstance(module.weight, torch.nn.Parameter)
        assert not module.weight.detach().numpy()[~expected[name]].any()
