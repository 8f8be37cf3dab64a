"""The README's configuration table is the user's contract: it must name every setting."""

from pathlib import Path

from broker.config import ENV

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_broker_setting_is_in_the_readme_table_with_its_default():
    for var, (_name, default, _doc) in ENV.items():
        row = next((line for line in README.splitlines() if line.startswith(f"| `{var}` |")), None)
        assert row is not None, f"{var} missing from the README configuration table"
        if default and var not in ("BROKER_PUBLIC_URL",):
            assert f"`{default}`" in row, f"{var}: README does not show default {default}"


def test_readme_shows_the_two_commands():
    assert "docker compose up --build" in README and "make test" in README
