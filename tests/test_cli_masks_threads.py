"""CLI: a pruned --model-file is audited with its own masks (issue 13 item 7); --threads is applied
and torch's setting restored (item 14)."""

import json

import torch

from graphpai.cli import main

PRUNED = '''
import torch
from torch.nn.utils import prune

def make():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 3))
    for m in (net[0], net[3]):
        prune.l1_unstructured(m, "weight", amount=0.9)
    return net
'''


def _file(tmp_path):
    path = tmp_path / "pruned.py"
    path.write_text(PRUNED)
    return f"{path}:make"


def test_model_file_pruned_by_torch_is_audited_with_its_masks(tmp_path, capsys):
    spec = _file(tmp_path)
    assert main(["audit", "--model-file", spec, "--input-shape", "1,4,4", "--json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    # 90% pruned by torch: 72 and 384 weights, round(0.1 * n) kept per layer
    assert data["total"]["N"] == 72 + 384
    assert data["total"]["kept"] == (72 - round(0.9 * 72)) + (384 - round(0.9 * 384))
    assert "using the model's torch.nn.utils.prune weight_mask buffers on 2 of 2 layers" in err


def test_threads_option_is_applied_and_restored(tmp_path, capsys, monkeypatch):
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    before = torch.get_num_threads()
    wanted = before + 1
    assert main(["audit", "--model", "lenet5", "--threads", str(wanted), "--json"]) == 0
    assert calls[0] == wanted and torch.get_num_threads() == before
    capsys.readouterr()
    assert main(["audit", "--model", "lenet5", "--threads", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "threads must be a whole number >= 1" in err
