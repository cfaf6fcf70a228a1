"""graphpai train --dst/--track-every and sweep --train --dst: outputs, resume, one-line errors."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")
from graphpai.cli import main  # noqa: E402
from graphpai.masks import MaskSet  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bad(argv, capsys, text):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and text in err, err


def test_train_dst_tracks_reports_and_resumes(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "--model", "mlp", "--compression", "10", "--data", "synthetic",
            "--device", "cpu", "--batch-size", "100", "--out", out, "--quiet", "--dst", "rigl",
            "--update-every", "2", "--track-every", "2", "--masks-every", "4"]
    assert main(args + ["--epochs", "1"]) == 0
    metrics = json.load(open(f"{out}/metrics.json"))
    assert metrics["dst"]["method"] == "rigl" and metrics["dst"]["update_every"] == 2
    updates = metrics["dst_updates"]
    assert [u["step"] for u in updates] == [2, 4]  # 8 steps, stop at 0.75 x 8 = 6
    assert all(u["kept"] == updates[0]["kept"] and u["dropped"] == u["regrown"] for u in updates)
    track = json.load(open(f"{out}/topology.json"))
    steps = [r["step"] for r in track["rows"]]
    assert steps == [0, 2, 4, 6, 8] and track["meta"]["dst"]["method"] == "rigl"
    assert track["rows"][-1]["jaccard_initial"] < 1 and track["rows"][1]["dropped"] > 0
    assert os.path.exists(f"{out}/report.html") and os.path.exists(f"{out}/topology.csv")
    assert sorted(os.listdir(f"{out}/masks")) == ["step_0000000.npz", "step_0000004.npz",
                                                  "step_0000008.npz"]
    final = MaskSet.load(f"{out}/masks/step_0000008.npz")
    state = torch.load(f"{out}/final.pt")
    for layer in final:  # the final weights are zero outside the final (moved) mask
        assert (state[f"{layer}.weight"].numpy()[~final[layer]] == 0).all()
    assert final.counts() == MaskSet.load(f"{out}/masks/step_0000000.npz").counts()

    page = tmp_path / "page"
    assert main(["report", "--run", out, "--out", str(page)]) == 0
    assert (page / "report.html").exists() and (page / "figures" / "tracked_metrics.png").exists()
    capsys.readouterr()
    bad(["report", "--run", str(tmp_path)], capsys, "track-every")

    assert main(args + ["--epochs", "2"]) == 0  # resumes and continues the tables
    track = json.load(open(f"{out}/topology.json"))
    assert [r["step"] for r in track["rows"]][:5] == steps and track["rows"][-1]["step"] == 16
    capsys.readouterr()
    bad(args[:-6] + ["--update-every", "3", "--track-every", "2",
                     "--epochs", "3"], capsys, "other DST settings")
    static = [a for a in args if a not in ("--dst", "rigl")]
    bad(static + ["--epochs", "3"], capsys, "holds the state of callbacks")


def test_bad_dst_input_is_one_line(tmp_path, capsys):
    masks = str(tmp_path / "m.npz")
    assert main(["prune", "--model", "mlp", "--method", "rpi", "--compression", "10",
                 "--masks-out", masks]) == 0
    capsys.readouterr()
    base = ["train", "--model", "mlp", "--data", "synthetic", "--device", "cpu", "--epochs", "1",
            "--out", str(tmp_path / "x"), "--quiet"]
    bad(base + ["--dst", "set"], capsys, "--dst needs initial masks")
    bad(base + ["--masks", masks, "--compression", "10"], capsys, "not both")
    bad(base + ["--masks", masks, "--method", "mica"], capsys, "with --compression C")
    bad(base + ["--masks", masks, "--masks-every", "3"], capsys, "add --track-every")
    bad(base + ["--masks", masks, "--track-no-spectral"], capsys, "add --track-every")
    bad(base + ["--masks", masks, "--dst", "set", "--drop-fraction", "1.5"], capsys,
        "drop_fraction must be in (0, 1)")
    bad(base + ["--masks", masks, "--track-every", "0"], capsys, ">= 1")
    assert not os.path.exists(tmp_path / "x" / "checkpoint.pt")


def test_sweep_train_dst_column(tmp_path, capsys):
    out = str(tmp_path / "study")
    assert main(["sweep", "--model", "mlp", "--methods", "rpi", "--compressions", "1e1",
                 "--out", out, "--train", "mica-resnet20", "--epochs", "1", "--device", "cpu",
                 "--workers", "1", "--quiet", "--no-report", "--dst", "set",
                 "--update-every", "2"]) == 0
    from graphpai.study.store import read_table

    rows = read_table(out)
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["dst"] == "set"
    capsys.readouterr()
    bad(["sweep", "--model", "mlp", "--methods", "rpi", "--compressions", "1e1", "--out",
         str(tmp_path / "s2"), "--dst", "set"], capsys, "add --train")
    bad(["sweep", "--model", "mlp", "--methods", "rpi", "--compressions", "1e1", "--out",
         str(tmp_path / "s3"), "--train", "mica-resnet20", "--dst", "set", "--update-every", "0"],
        capsys, "update_every")
    assert not os.path.exists(tmp_path / "s3")
    assert np.isfinite(rows[0]["final_test_acc"])


def test_sweep_dst_axis_compares_static_and_dst_in_one_store(tmp_path, capsys):
    """--dst static,set is a grid axis: one row per mode from the same initial masks, drawn as
    separate series, and a rerun adding rigl computes only the new points."""
    out = str(tmp_path / "study")
    base = ["sweep", "--model", "mlp", "--methods", "rpi", "--compressions", "1e1,1e2", "--out",
            out, "--train", "mica-resnet20", "--epochs", "1", "--device", "cpu", "--workers", "1",
            "--quiet", "--update-every", "2"]
    assert main(base + ["--dst", "static,set"]) == 0
    from graphpai.report.figures import functional_ratio
    from graphpai.study.store import read_table

    rows = read_table(out)
    assert sorted(str(r.get("dst")) for r in rows) == ["None", "None", "set", "set"]
    assert all(r["status"] == "ok" for r in rows)
    by_mode = {}
    for r in rows:  # the same masks: same kept and functional counts in both modes
        by_mode.setdefault(r["compression"], set()).add((r["kept"], r["channel_functional"]))
    assert all(len(v) == 1 for v in by_mode.values())
    labels = {line.get_label() for line in functional_ratio(rows).axes[0].get_lines()
              if (line.get_gid() or "").startswith("series:")}
    assert labels == {"RPI-ERK", "RPI+SET-ERK"}
    capsys.readouterr()
    assert main(base + ["--dst", "static,set,rigl", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = read_table(out)
    assert len(rows) == 6 and sorted(str(r.get("dst")) for r in rows).count("rigl") == 2
    assert summary["done"] == 2 and summary["skipped"] == 4, summary
    bad(base + ["--dst", "static,sett"], capsys, "unknown DST mode 'sett'")
