"""`graphpai spectral`: table by default, JSON with --json, masks from a file, clean errors."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from graphpai import MaskSet  # noqa: E402
from graphpai.cli import main  # noqa: E402


def test_table_and_json(capsys, tmp_path):
    from graphpai.torch import models
    from graphpai.torch.extract import to_graph

    graph = to_graph(models.build("lenet5"))
    rng = np.random.default_rng(0)
    masks = MaskSet({n: rng.random(l.weight_shape) < 0.3 for n, l in graph.layers.items()})
    path = tmp_path / "masks.npz"
    masks.save(path)

    assert main(["spectral", "--model", "lenet5", "--masks", str(path)]) == 0
    text = capsys.readouterr().out
    assert "profile iclr23" in text and all(name in text for name in graph.layers)

    out = tmp_path / "spectral.json"
    assert main(["spectral", "--model", "lenet5", "--masks", str(path), "--profile",
                 "neurips23", "--json", "--out", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["profile"] == "neurips23" and json.loads(out.read_text()) == data
    assert [row["layer"] for row in data["layers"]] == list(graph.layers)
    assert all(row["E"] == masks.kept(row["layer"]) for row in data["layers"])


def test_bad_mask_file_is_a_clean_error(capsys, tmp_path):
    assert main(["spectral", "--model", "lenet5", "--masks", str(tmp_path / "no.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
