"""The ``terra-xfer`` command line: one subcommand per module, loaded only when it is run."""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Any

import click

from terra_xfer import __version__
from terra_xfer.config import Config, load
from terra_xfer.errors import ConfigError, TerraXferError
from terra_xfer.logs import configure, secrets_of

# name -> (module, attribute, one-line help shown in `terra-xfer --help` without importing it)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "broker": ("terra_xfer.cli.broker", "broker", "Run the embedded single-node Kafka broker."),
    "topics": ("terra_xfer.cli.topics", "topics", "Create and show the pipeline's topics."),
    "events": ("terra_xfer.cli.events", "events", "Read what flows through a topic, decoded."),
    "gantry": ("terra_xfer.cli.gantry", "gantry", "Tail xferlog into files.arrived (producer)."),
    "danforth": (
        "terra_xfer.cli.danforth",
        "danforth",
        "Ship LemnaTec snapshots into files.arrived (producer).",
    ),
    "batcher": ("terra_xfer.cli.stages", "batcher", "Batch arrivals into transfer tasks."),
    "monitor": ("terra_xfer.cli.stages", "monitor", "Follow transfer tasks; per-file outcomes."),
    "state-keeper": ("terra_xfer.cli.stages", "state_keeper", "Fold events into files.state."),
    "ingest": ("terra_xfer.cli.stages", "ingest", "Register transferred files in the catalog."),
    "deleter": ("terra_xfer.cli.stages", "deleter", "Remove verified files from the cache."),
    "up": ("terra_xfer.cli.up", "up", "Run every stage, a process each (the main job)."),
    "sweeper": ("terra_xfer.cli.stages", "sweeper", "Re-queue old untransferred cache files."),
    "status": ("terra_xfer.cli.status", "status", "A file's history, or files by state."),
    "report": ("terra_xfer.cli.status", "report", "Files and bytes per sensor and day."),
    "lag": ("terra_xfer.cli.lag", "lag", "Consumer lag per group and partition (messages, s)."),
    "kafka-tool": ("terra_xfer.cli.kafka_tool", "kafka_tool", "Kafka's console tools (replay)."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on use, so ``--help`` and each command start fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class State:
    """What subcommands share: the configuration, read once on first use."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load(self.config_path)
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from None
        return self._config


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TERRA_XFER_CONFIG",
    help="TOML config file (env TERRA_XFER_CONFIG).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-json/--log-plain",
    default=None,
    help="Log format; default: plain on a terminal, JSON lines otherwise.",
)
@click.version_option(__version__, prog_name="terra-xfer")
@click.pass_context
def cli(
    ctx: click.Context, config_path: Path | None, log_level: str, log_json: bool | None
) -> None:
    """terra-xfer moves instrument files from an acquisition cache to an HPC site through Kafka,
    and never loses one.

    \b
    Start here:
      terra-xfer broker start          # a local Kafka broker (KRaft, 127.0.0.1:9092)
      terra-xfer topics create         # the pipeline's topics
      terra-xfer events tail terra.files.arrived --from-beginning
    """
    state = State(config_path)
    ctx.obj = state
    secrets: list[str] = []
    with contextlib.suppress(click.UsageError):  # reported by the subcommand that needs the config
        secrets = secrets_of(state.config)
    configure(log_level, log_json, secrets)


def main() -> Any:
    """Console-script entry point: our own errors become one clear line and exit code 1."""
    try:
        return cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except TerraXferError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
