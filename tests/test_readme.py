"""The README's tagged Python examples run as written, and its commands match CI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TAGGED = re.findall(r"<!-- tested[^>]*-->\n```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("code", TAGGED, ids=[f"block{i}" for i in range(len(TAGGED))])
def test_tagged_example_runs(code):
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)


def test_there_are_tagged_examples():
    assert TAGGED


def test_ci_runs_the_readme_test_command():
    command = next(line for line in README.splitlines() if '".[test]"' in line)
    assert command.strip() in (ROOT / ".ci" / "run").read_text()
