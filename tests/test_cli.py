"""The ``graphpai models`` and ``graphpai graph`` commands (graphpai/cli.py).

Other commands are tested in their own files. Expected numbers come from docs/definitions.md#masks
and the
architecture plans, not from the commands' own output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from graphpai.cli import main
from graphpai.masks import MaskSet

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def vgg16_weights(classes=10):
    widths = [3] + [w for w in VGG16 if w != "M"]
    return sum(9 * a * b for a, b in zip(widths, widths[1:])) + widths[-1] * classes


def resnet20_layers():
    """{name: weight shape} of ResNet-20 from its plan (3 stages x 3 blocks, width 16)."""
    shapes, c_in = {"conv": (16, 3, 3, 3)}, 16
    for stage, w in enumerate((16, 32, 64)):
        for b in range(3):
            shapes[f"layer{stage + 1}.{b}.conv1"] = (w, c_in, 3, 3)
            shapes[f"layer{stage + 1}.{b}.conv2"] = (w, w, 3, 3)
            if c_in != w:
                shapes[f"layer{stage + 1}.{b}.shortcut.0"] = (w, c_in, 1, 1)
            c_in = w
    shapes["fc"] = (10, 64)
    return shapes


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_table_lists_the_zoo_with_spec_counts(capsys):
    assert vgg16_weights() == 14_715_584  # docs/definitions.md#masks
    code, out, err = run(capsys, "models")
    assert code == 0 and err == ""
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert "14,715,584" in rows["vgg16"] and "270,896" in rows["resnet20"]
    assert rows["vgg16"].split()[2] == "14" and rows["resnet20"].split()[2] == "22"
    assert {"vgg11", "vgg19", "resnet56", "resnet50", "lenet5", "lenet300_100", "mlp"} <= set(rows)


def test_models_json_in_a_subprocess():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "graphpai", "models", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {row["model"]: row for row in json.loads(done.stdout)["models"]}
    assert rows["vgg16"]["prunable_weights"] == vgg16_weights() and rows["vgg16"]["layers"] == 14
    assert rows["resnet20"]["prunable_weights"] == sum(
        int(np.prod(s)) for s in resnet20_layers().values()) == 270_896
    assert rows["resnet20"]["input_shape"] == "3x32x32" and rows["lenet5"]["input_shape"] == "1x28x28"


def test_graph_json_parses_and_describes_resnet20(capsys, tmp_path):
    out_file = tmp_path / "graph.json"
    code, out, err = run(capsys, "graph", "--model", "resnet20", "--json", "--out", str(out_file))
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data == json.loads(out_file.read_text())
    expected = resnet20_layers()
    layers = {row["name"]: row for row in data["layers"]}
    assert {k: tuple(v["weight_shape"]) for k, v in layers.items()} == expected
    assert data["num_weights"] == 270_896 and all(row["density"] == 1.0 for row in layers.values())
    assert [k["kind"] for k in data["links"]].count("add") == 9
    assert data["inputs"] == ["input"] and data["outputs"] == ["fc"]
    assert layers["layer2.0.conv1"]["stride"] == [2, 2] and layers["layer2.0.conv1"]["in_size"] == [32, 32]


def test_graph_table_with_masks(capsys, tmp_path):
    rng = np.random.default_rng(0)
    masks = MaskSet({k: rng.random(s) < 0.25 for k, s in resnet20_layers().items()})
    masks.save(tmp_path / "m.npz")
    code, out, err = run(capsys, "graph", "--model", "resnet20", "--masks", str(tmp_path / "m.npz"))
    assert code == 0 and err == ""
    assert "layer3.2.conv2" in out and f"{masks.kept():,} of 270,896 weights kept" in out
    code, out, _ = run(capsys, "graph", "--model", "resnet20", "--json", "--masks", str(tmp_path / "m.npz"))
    kept = {row["name"]: row["kept"] for row in json.loads(out)["layers"]}
    assert kept == masks.counts()


def test_bad_model_name_is_one_line_exit_2(capsys):
    code, out, err = run(capsys, "graph", "--model", "resnet21")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'resnet21'" in lines[0] and "resnet20" in lines[0]
    assert "Traceback" not in err


def test_wrong_shaped_mask_file_is_exit_2_with_the_message(capsys, tmp_path):
    shapes = resnet20_layers()
    shapes["layer1.0.conv1"] = (16, 16, 5, 5)
    MaskSet({k: np.ones(s, dtype=bool) for k, s in shapes.items()}).save(tmp_path / "bad.npz")
    code, out, err = run(capsys, "graph", "--model", "resnet20", "--masks", str(tmp_path / "bad.npz"))
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert "'layer1.0.conv1'" in line and "(16, 16, 5, 5)" in line and "(16, 16, 3, 3)" in line
    code, _, err = run(capsys, "graph", "--model", "resnet20", "--masks", str(tmp_path / "none.npz"))
    assert code == 2 and "does not exist" in err


def test_wrong_input_shape_and_model_file(capsys, tmp_path):
    code, _, err = run(capsys, "graph", "--model", "resnet20", "--input-shape", "1,32,32")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "input_shape" in err
    (tmp_path / "net.py").write_text(
        "import torch.nn as nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.ReLU(), nn.Flatten(),"
        " nn.Linear(4 * 4 * 4, 3))\n")
    code, out, err = run(capsys, "graph", "--model-file", f"{tmp_path / 'net.py'}:make",
                         "--input-shape", "2,6,6", "--json")
    assert code == 0, err
    layers = {row["name"]: row for row in json.loads(out)["layers"]}
    assert layers["0"]["groups"] == 2 and layers["3"]["weight_shape"] == [3, 64]
    code, _, err = run(capsys, "graph", "--model-file", f"{tmp_path / 'net.py'}:nope")
    assert code == 2 and "has no function 'nope'" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["graph"])  # --model or --model-file is required
    assert info.value.code == 2
    assert "--model" in capsys.readouterr().err
