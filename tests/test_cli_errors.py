"""Every user error of the CLI is one line on stderr and exit status 2 (graphpai/cli.py), and the
options of issue 13: --version, --out/--masks-out/--dry-run on prune, models --out, --device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from graphpai.cli import main
from graphpai.masks import MaskSet

GOOD = "import torch.nn as nn\n\ndef make():\n    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))\n"


def one_line_error(capsys, argv, *needles):
    """Run the CLI; check exit 2, one stderr line naming the problem, nothing on stdout."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == "", "no table when the command fails"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphpai: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def model_file(tmp_path, text, name="net.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("body, needle", [
    ("def make():\n    return 42\n", "returned a int, not a torch.nn.Module"),
    ("def make():\n    raise RuntimeError('no weights here')\n", "raised RuntimeError: no weights here"),
    ("import no_such_module_graphpai\n\ndef make():\n    pass\n", "failed to import: ModuleNotFoundError"),
    ("def make(:\n    pass\n", "syntax error at line 1"),
    ("make = 3\n", "has no function 'make'"),
])
def test_model_file_errors(tmp_path, capsys, body, needle):
    path = model_file(tmp_path, body)
    one_line_error(capsys, ["graph", "--model-file", f"{path}:make", "--input-shape", "4"], needle)


def test_empty_model_in_graph(tmp_path, capsys):
    path = model_file(tmp_path, "import torch.nn as nn\n\ndef make():\n    return nn.Sequential(nn.ReLU())\n")
    one_line_error(capsys, ["graph", "--model-file", f"{path}:make", "--input-shape", "4"],
                   "no Conv1d/Conv2d/Linear layer")


@pytest.mark.parametrize("classes", ["0", "-3"])
def test_num_classes_must_be_positive(capsys, classes):
    one_line_error(capsys, ["graph", "--model", "mlp", "--num-classes", classes], "--num-classes")


def test_out_onto_a_directory(tmp_path, capsys):
    one_line_error(capsys, ["graph", "--model", "mlp", "--out", str(tmp_path)], "is a directory")


def test_out_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    one_line_error(capsys, ["graph", "--model", "mlp", "--out", str(tmp_path / "file" / "g.json")],
                   "is a file, not a directory")


def test_out_in_a_read_only_directory(tmp_path, capsys):
    from test_results import read_only_directory

    ro = read_only_directory(tmp_path)
    one_line_error(capsys, ["audit", "--model", "mlp", "--out", os.path.join(ro, "a.json")],
                   "cannot write")
    one_line_error(capsys, ["prune", "--model", "mlp", "--method", "rpi", "--compression", "10",
                            "--masks-out", os.path.join(ro, "m.pt")], "cannot write")


@pytest.mark.parametrize("value", ["0", "-5", "10^-1"])
def test_compression_zero_or_negative_gets_the_range(tmp_path, capsys, value):
    one_line_error(capsys, ["prune", "--model", "mlp", "--method", "rpi", "--compression", value,
                            "--dry-run"], "outside the allowed range [1, 89400]")


def test_version():
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    done = subprocess.run([sys.executable, "-m", "graphpai", "--version"], capture_output=True,
                          text=True, env=env, timeout=60)
    import graphpai

    assert done.returncode == 0 and done.stdout.strip() == f"graphpai {graphpai.__version__}"


def test_seed_default_in_help(capsys):
    for command in ("prune", "spectral"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--seed SEED" in text and "default: 0)" in text


def test_prune_json_out_masks_out_and_dry_run(tmp_path, capsys):
    masks, result = tmp_path / "m.npz", tmp_path / "r.json"
    base = ["prune", "--model", "mlp", "--method", "rpi", "--budget", "uniform",
            "--compression", "100", "--seed", "1"]
    assert main(base + ["--masks-out", str(masks), "--out", str(result)]) == 0
    written = json.loads(result.read_text())
    capsys.readouterr()
    # uniform at 100 on mlp (784x100, 100x100, 100x10): N = 89,400, 1% of each layer
    assert written["num_weights"] == 89_400 and written["masks_out"] == str(masks)
    assert MaskSet.load(masks).counts() == {r["layer"]: r["count"] for r in written["layers"]}
    assert sum(r["count"] for r in written["layers"]) == 784 + 100 + 10
    # --dry-run: the same table, nothing written
    before = sorted(os.listdir(tmp_path))
    assert main(base + ["--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert sorted(os.listdir(tmp_path)) == before
    assert [r["count"] for r in dry["layers"]] == [r["count"] for r in written["layers"]]
    assert dry["dry_run"] is True and dry["masks_out"] is None
    one_line_error(capsys, base, "--masks-out")
    one_line_error(capsys, base + ["--masks-out", str(tmp_path / "m.txt")], "must end in .pt")


def test_models_out(tmp_path, capsys):
    out = tmp_path / "models.json"
    assert main(["models", "--out", str(out)]) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())["models"]}
    assert rows["lenet300_100"]["prunable_weights"] == 784 * 300 + 300 * 100 + 100 * 10
    assert "lenet300_100" in capsys.readouterr().out


def test_device_option(capsys, tmp_path):
    for argv in (["audit", "--model", "mlp", "--device", "cpu", "--semantics", "spatial"],
                 ["prune", "--model", "mlp", "--method", "magnitude", "--compression", "10",
                  "--device", "cpu", "--dry-run"]):
        assert main(argv) == 0
    capsys.readouterr()


def test_models_does_not_import_dynamo():
    code = ("import sys; from graphpai.cli import main; main(['models', '--json']); "
            "print('torch._dynamo' in sys.modules, file=sys.stderr)")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0 and done.stderr.strip() == "False", done.stderr


CONCAT = """import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h1 = torch.relu(self.conv1(x))
        h2 = torch.relu(self.conv2(h1))
        return self.fc(torch.flatten(self.pool(torch.cat([h1, h2], 1)), 1))


def make():
    return Net()
"""


def test_disconnected_warning_is_decided_by_the_audit(tmp_path, capsys):
    """conv2 keeps nothing, but conv1 -> cat -> fc still joins input and output (a concat net);
    on a chain (mlp) an empty middle layer does cut the network."""
    import numpy as np

    path = model_file(tmp_path, CONCAT)
    budget = tmp_path / "budget.npz"
    MaskSet({"conv1": np.ones((2, 1, 3, 3)), "conv2": np.zeros((2, 2, 3, 3)),
             "fc": np.ones((2, 4))}).save(budget)
    argv = ["prune", "--model-file", f"{path}:make", "--input-shape", "1,4,4", "--method", "rpi",
            "--budget", str(budget), "--masks-out", str(tmp_path / "m.npz")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "conv2 keep no weight" in out and "network is disconnected" not in out
    chain = tmp_path / "chain.npz"
    MaskSet({"features.0": np.ones((100, 784)), "features.2": np.zeros((100, 100)),
             "classifier": np.ones((10, 100))}).save(chain)
    assert main(["prune", "--model", "mlp", "--method", "rpi", "--budget", str(chain),
                 "--dry-run"]) == 0
    assert "the network is disconnected" in capsys.readouterr().out
