"""docs/definitions.md is the project's definitions page (issue 13 item 16): every link to it
names an anchor that exists, and no user-facing text cites the internal specification by its
section numbers."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "definitions.md").read_text()
ANCHORS = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', PAGE))


def _sources():
    yield from sorted((ROOT / "docs").glob("*.md"))
    yield ROOT / "README.md"
    yield from sorted((ROOT / "graphpai").rglob("*.py"))
    yield from sorted((ROOT / "benchmarks").glob("*.py"))


def test_every_link_to_the_definitions_page_has_its_anchor():
    missing = {}
    for path in _sources():
        for anchor in re.findall(r"definitions\.md#([a-z0-9-]+)", path.read_text()):
            if anchor not in ANCHORS:
                missing.setdefault(str(path.relative_to(ROOT)), []).append(anchor)
    assert not missing, missing
    # the sections the project's docs lean on, with their sources
    assert {"masks", "graph", "functional", "paths", "spectral", "budgets", "generators",
            "training", "npb", "pags", "dst", "transformers"} <= ANCHORS
    for tag in ("[RAM]", "[FS]", "[NPB]", "[MiCA]", "[VK]", "[SF]"):
        assert tag in PAGE.split("<a id=")[0], tag  # named in the sources list at the top


def test_user_docs_and_help_do_not_cite_the_internal_spec(capsys):
    from graphpai.cli import build_parser

    pages = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    cited = [p.name for p in pages if re.search(r"SPEC(\.md)? ?§", p.read_text())]
    assert not cited, cited
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in commands.choices.items():
        assert "SPEC" not in sub.format_help(), name


@pytest.mark.parametrize("anchor", ["functional", "paths", "gates"])
def test_help_points_to_the_page(anchor):
    from graphpai.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    text = "".join(sub.format_help() for sub in commands.choices.values())
    assert f"docs/definitions.md#{anchor}" in re.sub(r"\s+", "", text)  # argparse wraps lines
