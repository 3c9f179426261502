"""The README's first Python snippet runs as printed and shows what it says it shows."""

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FLOAT = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


BLOCK = re.compile(r"^[ \t]*```[ \t]*(?:python|py)\b[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    """The bodies of the fenced blocks tagged python (```python or ```py, any attributes after the tag)."""
    return BLOCK.findall(text.replace("\r\n", "\n"))


def first_python_block(text: str) -> str:
    blocks = python_blocks(text)
    assert blocks, "README.md has no ```python block"
    return blocks[0]


def run_block(code: str, monkeypatch) -> str:
    monkeypatch.chdir(ROOT)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    return buf.getvalue()


def test_first_python_block_is_found_whatever_its_fence():
    text = "intro\n```bash\nmake test\n```\n```python title=x\r\nprint(1)\r\n```\n```python\nprint(2)\n```\n"
    assert first_python_block(text) == "print(1)\n"
    assert first_python_block("```py\nx = 1\n  ```\n") == "x = 1\n"


def test_readme_opens_with_the_two_commands():
    head = README.read_text().split("\n## ")[0]
    assert "make reproduce" in head and "make test" in head


def test_readme_snippet_runs_and_both_tasks_are_learned(monkeypatch):
    out = run_block(first_python_block(README.read_text()), monkeypatch)
    losses = [float(x) for x in re.findall(r"hinge loss\s*[:=]?\s*" + FLOAT, out)]
    assert len(losses) >= 2 and max(losses) < 0.05, out


def test_the_practitioners_snippets_run_and_print_what_the_readme_says(monkeypatch):
    """The similarity snippet (a model that is not this project's) and the merging snippet run as printed."""
    blocks = python_blocks(README.read_text())
    similarity = [b for b in blocks if "similarity." in b]
    merging = [b for b in blocks if "merge." in b]
    assert similarity and merging
    out = run_block(similarity[0], monkeypatch)
    alpha_hat = float(re.search(r"alpha_hat = " + r"(-?[0-9.]+)", out).group(1))
    assert abs(alpha_hat) < 0.1 and "(irrelevant)" in out and "validation's choice" in out, out
    out = run_block(merging[0], monkeypatch)
    assert "task arithmetic" in out and "TIES" in out, out
