"""Every example in the user docs and the README runs: ```python blocks are executed in order,
one namespace per page (in a temporary directory, since examples write files), and pages with
``>>>`` examples are run as doctests, so their printed numbers are checked too."""

import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def python_blocks(text):
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
            if not b.lstrip().startswith(">>>")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_examples_run(page, tmp_path, monkeypatch):
    text = page.read_text()
    blocks = python_blocks(text)
    has_doctest = ">>>" in text
    assert blocks or has_doctest, f"{page.name} has no runnable example"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for index, block in enumerate(blocks):
        exec(compile(block, f"{page.name}[block {index}]", "exec"), namespace)
    if has_doctest:
        result = doctest.testfile(str(page), module_relative=False,
                                  optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0
