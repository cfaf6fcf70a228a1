"""graphpai train: outputs, resume, and one-line errors with exit status 2."""

import json

import pytest

torch = pytest.importorskip("torch")
from graphpai.cli import main  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mlp_masks(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("m") / "mlp.npz")
    assert main(["prune", "--model", "mlp", "--method", "rpi", "--compression", "10",
                 "--masks-out", path]) == 0
    return path


def test_train_writes_metrics_and_resumes(tmp_path, mlp_masks, capsys):
    out = str(tmp_path / "run")
    args = ["train", "--model", "mlp", "--masks", mlp_masks, "--data", "synthetic",
            "--device", "cpu", "--batch-size", "100", "--out", out, "--quiet"]
    assert main(args + ["--epochs", "1"]) == 0
    metrics = json.load(open(f"{out}/metrics.json"))
    assert metrics["epochs"] == 1 and metrics["recipe"]["name"] == "mica-resnet20"
    assert 9 < metrics["compression"] < 11
    assert main(args + ["--epochs", "2", "--json"]) == 0
    metrics = json.load(open(f"{out}/metrics.json"))
    assert metrics["epochs"] == 2 and metrics["resumed_from"] == 1
    state = torch.load(f"{out}/final.pt")
    assert set(state) == {"features.0.weight", "features.0.bias", "features.2.weight",
                          "features.2.bias", "classifier.weight", "classifier.bias"}
    from graphpai.masks import MaskSet

    masks = MaskSet.load(mlp_masks)
    for layer in masks:  # the saved weights are zero wherever the mask prunes
        assert (state[f"{layer}.weight"].numpy()[~masks[layer]] == 0).all()


def bad(argv, capsys, text):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and text in err, err


def test_bad_input_is_one_line(tmp_path, mlp_masks, capsys):
    base = ["train", "--data", "synthetic", "--out", str(tmp_path / "x"), "--quiet"]
    bad(base + ["--model", "lenet5", "--masks", mlp_masks, "--device", "cpu", "--epochs", "1"],
        capsys, "make the masks for this model")
    bad(base + ["--model", "mlp", "--recipe", "nope"], capsys, "unknown recipe")
    bad(base + ["--model", "mlp", "--epochs", "0"], capsys, "epochs=0")
    bad(base + ["--model", "mlp", "--data", str(tmp_path / "none")], capsys, "does not exist")
    if not torch.cuda.is_available():
        bad(base + ["--model", "mlp", "--device", "cuda"], capsys, "no CUDA GPU")
