"""MaskSet (docs/definitions.md#masks): counts, validation against a graph, .npz files, renaming, bad inputs.

Expected counts are computed here with numpy; .pt files and torch models are covered in
tests/torch/test_torch_masks.py.
"""

from __future__ import annotations

import os
from math import prod

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from graphpai.errors import GraphpaiError, MaskError
from graphpai.graph import Group, Layer, NetGraph
from graphpai.masks import MaskSet

SHAPES = {"conv": (4, 3, 3, 3), "block.conv": (4, 4, 1, 1), "fc": (10, 16)}


def small_graph() -> NetGraph:
    conv = dict(stride=(1, 1), dilation=(1, 1), in_size=(2, 2), out_size=(2, 2))
    groups = [Group("input", 3, (2, 2)), Group("conv", 4, (2, 2)), Group("block.conv", 4, (2, 2)),
              Group("flat", 16), Group("fc", 10)]
    from graphpai.graph import Link

    return NetGraph(
        groups,
        [Layer("conv", "conv", SHAPES["conv"], "input", "conv", padding=((1, 1), (1, 1)), **conv),
         Layer("block.conv", "conv", SHAPES["block.conv"], "conv", "block.conv",
               padding=((0, 0), (0, 0)), **conv),
         Layer("fc", "linear", SHAPES["fc"], "flat", "fc")],
        [Link("flat", "flatten", ("block.conv",), "flat")], ["input"], ["fc"])


def random_maskset(seed, density=0.3, shapes=SHAPES) -> MaskSet:
    rng = np.random.default_rng(seed)
    return MaskSet({k: rng.random(s) < density for k, s in shapes.items()})


# --------------------------------------------------------------------------------- counts
@given(seed=st.integers(0, 2**32 - 1), density=st.floats(0.0, 1.0))
def test_counts_density_and_compression_match_numpy(seed, density):
    masks = random_maskset(seed, density)
    kept = {k: int(np.sum(masks[k])) for k in SHAPES}
    total = sum(prod(s) for s in SHAPES.values())
    assert masks.counts() == kept
    assert masks.kept() == sum(kept.values()) and masks.numel() == total
    for name, shape in SHAPES.items():
        assert masks.kept(name) == kept[name] and masks.numel(name) == prod(shape)
        assert masks.density(name) == kept[name] / prod(shape)
        expected = float("inf") if kept[name] == 0 else prod(shape) / kept[name]
        assert masks.compression(name) == expected
    assert masks.density() == sum(kept.values()) / total
    assert masks.compression() == (float("inf") if masks.kept() == 0 else total / masks.kept())


def test_nothing_kept_is_infinite_compression():
    masks = MaskSet({k: np.zeros(s) for k, s in SHAPES.items()})
    assert masks.kept() == 0 and masks.density() == 0.0
    assert masks.compression() == float("inf") and masks.compression("fc") == float("inf")


def test_docstring_example_and_value_kinds():
    m = MaskSet({"fc": [[1, 0], [1, 1]]})
    assert (m.kept(), m.numel(), m.compression()) == (3, 4, 4 / 3)
    # ints, floats and bools are all accepted when 0/1, and stored as bool
    for value in ([[1, 0]], [[1.0, 0.0]], [[True, False]], np.array([[1, 0]], dtype=np.uint8)):
        got = MaskSet({"fc": value})["fc"]
        assert got.dtype == bool and got.tolist() == [[True, False]]


def test_dense_is_all_ones_for_every_layer():
    graph = small_graph()
    masks = MaskSet.dense(graph)
    assert set(masks) == set(SHAPES)
    assert all(masks[k].shape == s and masks[k].all() for k, s in SHAPES.items())
    assert masks.validate(graph) is masks and masks.compression() == 1.0


def test_state_dict_suffixes_are_stripped():
    assert MaskSet.layer_name("features.0.weight_mask") == "features.0"
    assert MaskSet.layer_name("fc.weight") == "fc"
    assert MaskSet.layer_name("layer1.0.conv1") == "layer1.0.conv1"
    m = MaskSet({"conv.weight_mask": np.ones(SHAPES["conv"]), "fc.weight": np.ones(SHAPES["fc"])})
    assert set(m) == {"conv", "fc"}
    with pytest.raises(MaskError, match="two masks given for layer 'fc'"):
        MaskSet({"fc": np.ones((2, 2)), "fc.weight_mask": np.ones((2, 2))})


def test_equality_rename_and_intersect():
    a, b = random_maskset(1), random_maskset(2)
    assert a == random_maskset(1) and a != b
    assert a == {k: a[k].astype(np.uint8) for k in a}  # equal to a plain mapping of 0/1
    both = a.intersect(b)
    assert all(np.array_equal(both[k], a[k] & b[k]) for k in SHAPES)
    renamed = a.rename({"conv": "stem", "fc": "head"})
    assert set(renamed) == {"stem", "block.conv", "head"}
    assert np.array_equal(renamed["stem"], a["conv"]) and renamed.kept() == a.kept()
    with pytest.raises(MaskError, match="renaming gives two masks the name 'fc'"):
        a.rename({"conv": "fc"})  # regression: a dict comprehension silently dropped a mask
    swapped = a.rename({"conv": "fc", "fc": "conv"})  # a permutation is fine
    assert np.array_equal(swapped["fc"], a["conv"]) and np.array_equal(swapped["conv"], a["fc"])


# --------------------------------------------------------------------------------- errors
def test_bad_values_raise_mask_errors_naming_the_layer():
    with pytest.raises(MaskError, match=r"mask for 'fc' has value 0\.5 \(1 entries not 0/1\).*threshold"):
        MaskSet({"fc": [[1.0, 0.5], [0.0, 1.0]]})
    with pytest.raises(MaskError, match="mask for 'fc' has value 2"):
        MaskSet({"fc": [[1, 2]]})
    with pytest.raises(MaskError, match="mask for 'fc' has value -1"):
        MaskSet({"fc": [[1, -1]]})
    with pytest.raises(MaskError, match="mask for 'conv' contains NaN"):
        MaskSet({"conv": [[1.0, float("nan")]]})
    with pytest.raises(MaskError, match="mask for 'fc' has dtype <U1"):
        MaskSet({"fc": [["a", "b"]]})
    assert issubclass(MaskError, GraphpaiError) and issubclass(MaskError, ValueError)


def test_validate_names_unknown_missing_and_misshapen_layers():
    graph = small_graph()
    good = {k: np.ones(s, dtype=bool) for k, s in SHAPES.items()}
    with pytest.raises(MaskError, match=r"unknown layer\(s\) \['head'\].*prunable layers are"):
        MaskSet({**good, "head": np.ones((2, 2))}).validate(graph)
    missing = dict(good)
    del missing["block.conv"]
    with pytest.raises(MaskError, match=r"no mask for layer\(s\) \['block.conv'\].*MaskSet.dense"):
        MaskSet(missing).validate(graph)
    wrong = {**good, "conv": np.ones((4, 3, 5, 5))}
    with pytest.raises(MaskError) as info:
        MaskSet(wrong).validate(graph)
    message = str(info.value)
    assert "'conv'" in message and "(4, 3, 5, 5)" in message and "(4, 3, 3, 3)" in message
    assert "regenerate the mask" in message
    with pytest.raises(MaskError, match=r"no mask for layer 'nope'; masks exist for"):
        MaskSet(good)["nope"]


# --------------------------------------------------------------------------------- files
@given(seed=st.integers(0, 2**32 - 1), density=st.sampled_from([0.0, 0.01, 0.5, 1.0]))
def test_npz_round_trip_keeps_every_bit(tmp_path_factory, seed, density):
    path = tmp_path_factory.mktemp("npz") / "masks.npz"
    masks = random_maskset(seed, density)
    masks.save(path)
    back = MaskSet.load(path)
    assert list(back) == list(masks)
    for k in masks:
        assert back[k].dtype == bool and np.array_equal(back[k], masks[k])
    assert back == masks


def test_npz_of_weight_mask_keys_and_plain_numpy_files(tmp_path):
    masks = random_maskset(5)
    np.savez(tmp_path / "sd.npz", **{f"{k}.weight_mask": v.astype(np.float32) for k, v in masks.items()})
    assert MaskSet.load(tmp_path / "sd.npz") == masks
    np.savez(tmp_path / "plain.npz", **{k: v.astype(np.int8) for k, v in masks.items()})
    assert MaskSet.load(str(tmp_path / "plain.npz")) == masks


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    masks = random_maskset(6)
    masks.save(tmp_path / "sub" / "m.npz")  # creates the directory
    assert os.listdir(tmp_path / "sub") == ["m.npz"]


def test_file_errors_are_mask_errors(tmp_path):
    with pytest.raises(MaskError, match=r"unknown mask file type .*masks\.txt.*use a \.npz, \.pt or \.safetensors file"):
        MaskSet.load(tmp_path / "masks.txt")
    with pytest.raises(MaskError, match="unknown mask file type"):
        random_maskset(0).save(tmp_path / "masks.json")
    with pytest.raises(MaskError, match=r"mask file .*missing\.npz' does not exist"):
        MaskSet.load(tmp_path / "missing.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file")
    with pytest.raises(MaskError, match="is not a .npz archive"):
        MaskSet.load(tmp_path / "garbage.npz")
    np.savez(tmp_path / "scores.npz", fc=np.full((2, 2), 0.7))
    with pytest.raises(MaskError, match="mask for 'fc' has value 0.7"):
        MaskSet.load(tmp_path / "scores.npz")


def test_issue_2_npz_keeps_layer_names_that_are_numpy_keywords(tmp_path):
    """np.savez(file, **masks) breaks on a layer named 'file' or 'allow_pickle'."""
    masks = MaskSet({"file": np.eye(2), "allow_pickle": np.ones((1, 3)), "features.0": np.zeros((2, 2))})
    path = tmp_path / "m.npz"
    masks.save(path)
    assert MaskSet.load(path) == masks
    with np.load(path) as data:  # a plain numpy archive, readable without graphpai
        assert sorted(data.files) == ["allow_pickle", "features.0", "file"]
        assert np.array_equal(data["file"], np.eye(2, dtype=bool))


def test_issue_2_empty_mask_set_is_refused():
    with pytest.raises(MaskError, match="at least one layer"):
        MaskSet({})


def test_issue_2_mask_set_does_not_alias_the_callers_array():
    array = np.ones((2, 2), dtype=bool)
    masks = MaskSet({"fc": array})
    array[:] = False
    assert masks.kept() == 4


def test_issue_2_mask_set_from_a_non_mapping_is_a_mask_error():
    with pytest.raises(MaskError, match="mapping of layer name"):
        MaskSet([np.ones((2, 2))])
