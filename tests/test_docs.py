"""The README agrees with the option declarations."""

from __future__ import annotations

from pathlib import Path

from watchdog.cli import configuration_table

README = Path(__file__).parent.parent / "README.md"


def test_readme_configuration_table_matches_options() -> None:
    assert configuration_table() in README.read_text()
