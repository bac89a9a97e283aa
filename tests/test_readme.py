"""The README opens with the two commands a new user needs, and CI runs the README's test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_opens_with_install_and_run_then_install_and_test():
    first, second = _commands()[:2]
    for cmd in (first, second):
        assert "\n" not in cmd  # one line each, to paste
        assert cmd.startswith("python -m venv .venv && . .venv/bin/activate && ")  # its own virtual environment
    assert first.endswith("&& initwise")  # the main job with no arguments
    assert '".[test]"' in second and second.endswith("python -m pytest -q")
    text = (ROOT / "README.md").read_text()
    assert "from the root of a clone" in text[: text.index(second)]  # where to run it


def test_ci_runs_the_readmes_test_command_verbatim():
    test_cmd = _commands()[1]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci


def test_command_table_gives_advise_the_options_a_users_model_needs():
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| advise |"))
    assert "--input SHAPE" in row and "--task TASK" in row
