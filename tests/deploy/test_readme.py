"""The README promises: its first commands, and a settings table that matches the code."""

from __future__ import annotations

from pathlib import Path

from seam.settings_table import END, START, table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block


def test_settings_table_matches_the_settings_classes():
    readme = (ROOT / "README.md").read_text()
    documented = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert documented == table(), "run `python -m seam.settings_table --write`"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
