"""``graphpai report``: one and two mask files and ``--study DIR`` (numbers checked against
numpy on the mask files), and bad inputs: one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from graphpai.cli import main  # noqa: E402
from graphpai.masks import MaskSet  # noqa: E402

LAYERS = ("features.0", "features.2", "classifier")  # the zoo mlp: 784 -> 100 -> 100 -> 10


def snapshot(directory):
    if not os.path.exists(directory):
        return None
    return {os.path.relpath(os.path.join(d, f), directory):
            open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(directory) for f in files}


@pytest.fixture(scope="module")
def masks(tmp_path_factory):
    root = tmp_path_factory.mktemp("masks")
    paths = {}
    for name, method in (("rpi", "rpi"), ("mica", "mica")):
        paths[name] = root / f"{name}.pt"
        assert main(["prune", "--model", "mlp", "--method", method, "--compression", "100",
                     "--seed", "1", "--masks-out", str(paths[name]), "--quiet"]) == 0
    paths["lenet5"] = root / "lenet5.pt"
    assert main(["prune", "--model", "lenet5", "--method", "rpi", "--compression", "10",
                 "--masks-out", str(paths["lenet5"]), "--quiet"]) == 0
    paths["garbage"] = root / "garbage.pt"
    paths["garbage"].write_bytes(b"not a mask file")
    return paths


def load(path):
    m = MaskSet.load(path)
    return {name: np.asarray(m[name]).astype(bool).reshape(m[name].shape[0], -1)
            for name in LAYERS}


def functional_oracle(layers):
    """Functional weights of a masked MLP by reachability: unit i of a layer's input reaches
    from the network input, and unit j of its output reaches the network output."""
    mats = [layers[name] for name in LAYERS]  # (out, in)
    forward = [np.ones(mats[0].shape[1], bool)]
    for w in mats:
        forward.append((w & forward[-1][None, :]).any(axis=1))
    backward = [np.ones(mats[-1].shape[0], bool)]
    for w in reversed(mats):
        backward.insert(0, (w & backward[0][:, None]).any(axis=0))
    return sum(int((w & forward[i][None, :] & backward[i + 1][:, None]).sum())
               for i, w in enumerate(mats))


def test_one_mask_file(masks, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "--model", "mlp", "--masks", str(masks["rpi"]), "--out",
                 str(out)]) == 0
    text = capsys.readouterr().out
    assert f"report written to {out / 'report.html'}" in text
    data = json.loads((out / "report.json").read_text())
    (entry,) = data["masks"]
    assert data["comparisons"] == []
    layers = load(masks["rpi"])
    assert entry["total"]["kept"] == sum(int(m.sum()) for m in layers.values())
    assert entry["total"]["N"] == sum(m.size for m in layers.values())
    assert entry["total"]["channel_functional"] == functional_oracle(layers)
    assert entry["total"]["spatial_functional"] == functional_oracle(layers)  # linear: equal
    for row in entry["layers"]:
        m = layers[row["layer"]].astype(float)
        assert row["kept"] == int(m.sum())
        s = np.linalg.svd(m, compute_uv=False)  # dense SVD of the 0/1 biadjacency
        assert row["sigma_1"] == pytest.approx(s[0], rel=1e-6)
        assert row["sigma_2"] == pytest.approx(s[1], rel=1e-6)
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert len(pngs) == 3 and all((out / "figures" / p).stat().st_size > 0 for p in pngs)
    page = (out / "report.html").read_text()
    assert page.count("<img ") == 3 and "Mask rpi" in page


def test_two_mask_files_are_compared(masks, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "--model", "mlp", "--masks", str(masks["rpi"]), "--masks",
                 str(masks["mica"]), "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in data["masks"]] == ["rpi", "mica"]
    (pair,) = data["comparisons"]
    a, b = load(masks["rpi"]), load(masks["mica"])
    inter = {n: int((a[n] & b[n]).sum()) for n in LAYERS}
    union = {n: int((a[n] | b[n]).sum()) for n in LAYERS}
    for row in pair["layers"]:
        n = row["layer"]
        assert row["jaccard_kept"] == pytest.approx(inter[n] / union[n])
    assert pair["total"]["jaccard_kept"] == pytest.approx(sum(inter.values())
                                                          / sum(union.values()))
    assert data["masks"][1]["total"]["channel_functional"] == functional_oracle(b)
    page = (out / "report.html").read_text()
    assert "rpi vs mica" in page and page.count("<img ") == 6
    assert data.pop("report") == str(out / "report.html")
    assert json.loads((out / "report.json").read_text()) == data


def test_study_page_is_rerendered_from_the_store(tmp_path, capsys):
    study = tmp_path / "study"
    assert main(["sweep", "--model", "mlp", "--methods", "rpi,mica", "--compressions",
                 "1e1,1e3", "--out", str(study), "--workers", "1", "--quiet",
                 "--no-report"]) == 0
    capsys.readouterr()
    store = (study / "results.sqlite").read_bytes()
    assert main(["report", "--study", str(study)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("4 points (4 finished, 0 failed) on mlp")
    page = (study / "report.html").read_text()
    results = page.split("<h2>Results</h2>", 1)[1].split("</table>", 1)[0]
    assert results.count("<tr>") == 1 + 4  # header and one row per point
    assert (study / "results.sqlite").read_bytes() == store  # nothing recomputed or stored
    assert (study / "figures" / "functional_ratio.png").stat().st_size > 0
    other = tmp_path / "elsewhere"
    before = snapshot(study)
    assert main(["report", "--study", str(study), "--out", str(other), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["report"] == str(other / "report.html") and got["summary"][0].startswith("4 points")
    assert snapshot(study) == before
    assert re.search(r"MiCA-ERK keeps every weight functional", (other / "report.html").read_text())


def _bad(args, message, capsys, out):
    before = snapshot(out)
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and err.startswith("graphpai: error:")
    assert snapshot(out) == before  # nothing written, nothing half-written


@pytest.mark.parametrize("case, message", [
    ("unknown model", "unknown model 'nope'"),
    ("missing masks", "does not exist"),
    ("unreadable masks", "cannot read masks"),
    ("masks of another model", "masks for unknown layer(s)"),
    ("no masks", "give the masks to report"),
    ("no out", "give the report's directory"),
])
def test_bad_mask_inputs(case, message, masks, tmp_path, capsys):
    out = tmp_path / "rep"
    args = {"unknown model": ["--model", "nope", "--masks", str(masks["rpi"])],
            "missing masks": ["--model", "mlp", "--masks", str(tmp_path / "none.pt")],
            "unreadable masks": ["--model", "mlp", "--masks", str(masks["garbage"])],
            "masks of another model": ["--model", "mlp", "--masks", str(masks["lenet5"])],
            "no masks": ["--model", "mlp"],
            "no out": ["--model", "mlp", "--masks", str(masks["rpi"])]}[case]
    _bad(args + ([] if case == "no out" else ["--out", str(out)]), message, capsys, out)
    assert not out.exists()


def test_unwritable_out_and_an_existing_report_kept(masks, tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("x")
    _bad(["--model", "mlp", "--masks", str(masks["rpi"]), "--out", str(afile / "rep")],
         "is a file, not a directory", capsys, afile)
    study = tmp_path / "study"
    _bad(["--study", str(tmp_path / "nothing")], "no study at", capsys, study)
    study.mkdir()
    _bad(["--study", str(study)], "holds no study", capsys, study)
    # a failing second report leaves the first one as it was
    out = tmp_path / "rep"
    assert main(["report", "--model", "mlp", "--masks", str(masks["mica"]), "--out",
                 str(out)]) == 0
    capsys.readouterr()
    _bad(["--model", "mlp", "--masks", str(masks["garbage"]), "--out", str(out)],
         "cannot read masks", capsys, out)
    _bad(["--study", str(out), "--masks", str(masks["rpi"])], "--study re-renders", capsys, out)
