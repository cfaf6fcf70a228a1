"""The README's "Reading the output" sample (issue 13 item 17) is what graphpai prints, and its
three node totals are the counts the README explains, computed here from the model's shape."""

import re
from pathlib import Path

import graphpai
from graphpai.torch import models

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_explains_the_columns_and_the_node_totals():
    section = README.split("## Reading the output", 1)[1].split("\n## ", 1)[0]
    for column in ("kept", "functional", "reached", "co-reached", "func. ch.", "lost in"):
        assert f"**{column}**" in section, column
    assert "Next steps" in section and "794" in section and "784" in section and "701" in section


def test_readme_sample_matches_the_audit_of_that_mask():
    model = models.build("resnet20", seed=0)
    masks = graphpai.prune(model, "rpi", budget="erk", compression=1e3, seed=0)
    result = graphpai.audit(model, masks, semantics="spatial")
    paths = graphpai.paths(model, masks)
    # 794: every layer's output channels; 784: without the 10 logits; 701: [NPB]'s tensors
    all_channels = sum(m.out_channels if hasattr(m, "out_channels") else m.out_features
                       for m in graphpai.torch.prunable_modules(model).values())
    assert result.total["channels"] == all_channels == 794
    assert result.nodes == all_channels - 10 == 784
    assert paths.nodes == 3 + 7 * 16 + 6 * 32 + 6 * 64 + 10 == 701  # input, 3 stages, logits
    total = re.search(r"^total .*$", README, re.M).group(0).split()
    t = result.total
    assert total[1:] == [f"{result.N:,}", str(result.kept), str(result.functional),
                         f"{t['functional_ratio']:.4g}", str(t["channels"]), str(t["reached"]),
                         str(t["co_reached"]), str(t["functional_channels"]),
                         str(t["lost_inputs"])]
    assert f"functional nodes = {result.functional_nodes}/{result.nodes}" in README
    assert f"effective nodes = {paths.effective_nodes}/{paths.nodes}" in README
    assert f"log10 effective paths = {paths.log10_paths:.4f}" in README
    row = re.search(r"^rpi +(\d+) +(\d+) +([\d.]+) +([\d.]+) +(\d+) +(\d+)$", README, re.M)
    assert row and int(row[1]) == result.kept and int(row[2]) == result.functional
    assert float(row[3]) == round(result.corrected_compression, 1)
