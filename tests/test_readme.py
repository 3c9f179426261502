"""The README's Python snippet runs as printed and shows what it says it shows."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_opens_with_the_two_commands():
    head = README.read_text().split("\n## ")[0]
    assert "make reproduce" in head and "make test" in head


def test_readme_snippet_runs_and_both_tasks_are_learned():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "README.md", "exec"), {})
    losses = [float(x) for x in re.findall(r"hinge loss ([0-9.]+)", buf.getvalue())]
    assert len(losses) == 2 and max(losses) < 0.05, buf.getvalue()
