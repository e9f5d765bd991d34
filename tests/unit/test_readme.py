"""The README is where users look: every setting must be documented there."""

from __future__ import annotations

from pipeline.settings import PROJECT_ROOT, Settings


def test_every_setting_is_in_the_readme() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    missing = [
        f"CDP_{name.upper()}"
        for name in Settings.model_fields
        if f"CDP_{name.upper()}" not in readme
    ]
    assert not missing, f"settings missing from README.md: {missing}"


def test_readme_shows_the_two_commands() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "make demo" in readme
    assert "make test" in readme
