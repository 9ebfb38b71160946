"""``--config`` is taken before the command and after it, at any depth, as users type it."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from terra_xfer.cli import State, cli


def config_file(tmp_path: Path, name: str, prefix: str) -> Path:
    path = tmp_path / name
    path.write_text(f'[kafka]\ntopic_prefix = "{prefix}"\n', encoding="utf-8")
    return path


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The topic prefix of the configuration each `topics list` run would use (no broker)."""
    prefixes: list[str] = []

    def list_topics(state: State, *_args: object, **_kwargs: object) -> None:
        prefixes.append(state.config.kafka.topic_prefix)

    group = cli.get_command(click.Context(cli), "topics")
    assert isinstance(group, click.Group)
    command = group.commands["list"]
    monkeypatch.setattr(command, "callback", click.pass_obj(lambda state, **kw: list_topics(state)))
    return prefixes


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "{a}", "topics", "list"],
        ["topics", "--config", "{a}", "list"],
        ["topics", "list", "--config", "{a}"],
        ["--config", "{b}", "topics", "list", "--config", "{a}"],
    ],
)
def test_the_config_given_last_is_the_one_used(
    tmp_path: Path, seen: list[str], args: list[str]
) -> None:
    a = config_file(tmp_path, "a.toml", "site-a.")
    b = config_file(tmp_path, "b.toml", "site-b.")
    argv = [arg.format(a=a, b=b) for arg in args]
    result = CliRunner().invoke(cli, argv, env={"TERRA_XFER_CONFIG": ""}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen == ["site-a."]


def test_a_missing_config_after_the_command_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["up", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: config file {tmp_path / 'nope.toml'} does not exist"


def test_every_command_lists_the_option_in_its_help() -> None:
    for name in cli.list_commands(click.Context(cli)):
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        assert any(p.name == "config_after" for p in command.params), name
