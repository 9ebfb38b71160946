"""``status --state`` takes the states a file can be in, in any case, and refuses anything else
before reading a thing (no broker needed to be told of a typo)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from schemas.codec import current_schemas
from terra_xfer.cli import cli
from terra_xfer.cli.status import FILE_STATES


def test_the_states_offered_are_the_schemas() -> None:
    schema = current_schemas()["FileState"].schema
    (kind,) = [f["type"] for f in schema["fields"] if f["name"] == "state"]
    assert tuple(kind["symbols"]) == FILE_STATES and "QUARANTINED" in FILE_STATES


def test_an_unknown_state_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\n')  # nothing listens there
    result = CliRunner().invoke(cli, ["--config", str(config), "status", "--state", "FOO"])
    assert result.exit_code == 2
    assert "'FOO' is not one of" in result.output and "quarantined" in result.output
    assert "Traceback" not in result.output
