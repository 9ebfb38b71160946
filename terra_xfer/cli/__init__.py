"""The ``terra-xfer`` command line: one subcommand per module, loaded only when it is run."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from typing import Any

import click

from terra_xfer import __version__
from terra_xfer.config import Config, load
from terra_xfer.errors import ConfigError, TerraXferError
from terra_xfer.logs import configure, secrets_of

# name -> (module, attribute, one-line help shown in `terra-xfer --help` without importing it).
# The pipeline's stages are not here: their commands are made from the stage registry
# (terra_xfer.cli.stage_command); the gantry's has a module of its own, as it also re-seats.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "broker": ("terra_xfer.cli.broker", "broker", "Run the embedded single-node Kafka broker."),
    "topics": ("terra_xfer.cli.topics", "topics", "Create and show the pipeline's topics."),
    "events": ("terra_xfer.cli.events", "events", "Read what flows through a topic, decoded."),
    "gantry": ("terra_xfer.cli.gantry", "gantry", ""),
    "up": ("terra_xfer.cli.up", "up", "Run every stage, a process each (the main job)."),
    "status": ("terra_xfer.cli.status", "status", "A file's history, or files by state."),
    "report": ("terra_xfer.cli.status", "report", "Files and bytes per sensor and day."),
    "lag": ("terra_xfer.cli.lag", "lag", "Consumer lag per group and partition (messages, s)."),
    "kafka-tool": ("terra_xfer.cli.kafka_tool", "kafka_tool", "Kafka's console tools (replay)."),
}
CONFIG_HELP = "TOML config file (env TERRA_XFER_CONFIG); before or after the command."


def _stage_commands() -> dict[str, click.Command]:
    """The stage commands, made from the registry (which imports every stage: only on use)."""
    made: dict[str, click.Command] = importlib.import_module(
        "terra_xfer.cli.stage_command"
    ).commands()
    return made


class LazyGroup(click.Group):
    """A group whose subcommands are imported on use, so ``--help`` and each command start fast.

    Every subcommand, at every depth, also takes ``--config`` (as users type
    ``terra-xfer up --config site.toml``); given there, it replaces one given before.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *_stage_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, attr, _ = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attr)
        else:
            command = _stage_commands().get(cmd_name)
        if command is None:
            return None
        assert isinstance(command, click.Command)
        return _taking_config(command)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            summary = COMMANDS[name][2] if name in COMMANDS else ""
            if not summary:
                command = self.get_command(ctx, name)
                summary = command.get_short_help_str(60) if command is not None else ""
            rows.append((name, summary))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _use_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.find_root().obj.use(value)


def _taking_config(command: click.Command) -> click.Command:
    """``command`` and its subcommands, each with a ``--config`` option (added once)."""
    if not any(p.name == "config_after" for p in command.params):
        command.params.append(
            click.Option(
                ["--config", "config_after"],
                type=click.Path(dir_okay=False, path_type=Path),
                expose_value=False,
                is_eager=True,
                callback=_use_config,
                help=CONFIG_HELP,
            )
        )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _taking_config(sub)
    return command


class BadConfig(click.ClickException):
    """The configuration cannot be used: told in one line (no usage banner; the command line
    was fine), exit status 2 like any other usage error."""

    exit_code = 2


class State:
    """What subcommands share: the configuration, read once on first use, and the logging set
    up for it (its secrets are redacted from every line)."""

    def __init__(self, config_path: Path | None, log_level: str, log_json: bool | None) -> None:
        self.config_path = config_path
        self.log_level = log_level
        self.log_json = log_json
        self._config: Config | None = None

    def use(self, config_path: Path) -> None:
        """Read the configuration from ``config_path`` instead, from now on."""
        self.config_path, self._config = config_path, None
        self.configure_logging()

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load(self.config_path)
            except ConfigError as exc:
                raise BadConfig(str(exc)) from None
        return self._config

    def with_broker(self) -> Config:
        """The configuration, once its broker has answered (a clear error within a few seconds
        when it does not; see :func:`terra_xfer.kafka_security.require_broker`)."""
        config = self.config
        importlib.import_module("terra_xfer.kafka_security").require_broker(config.kafka)
        return config

    def configure_logging(self) -> None:
        secrets: list[str] = []
        with contextlib.suppress(BadConfig):  # reported by the command that needs it
            secrets = secrets_of(self.config)
        configure(self.log_level, self.log_json, secrets)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TERRA_XFER_CONFIG",
    help=CONFIG_HELP,
)
@click.option(
    "--log-level",
    default="info",
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
      make demo                         # from a clone: one night through every stage
      terra-xfer broker start           # a local Kafka broker (KRaft, 127.0.0.1:9092)
      terra-xfer topics create          # the pipeline's topics
      terra-xfer --config site.toml up  # every stage, a process each (the main job)
      terra-xfer status; terra-xfer report   # where the files are, per sensor and day
      terra-xfer events tail files.arrived --from-beginning
    """
    state = State(config_path, log_level, log_json)
    ctx.obj = state
    state.configure_logging()


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
    except Exception as exc:
        if not _from_kafka(exc):
            raise
        # A broker that went away mid-command, say: the service's condition, told in one line.
        err = exc.args[0] if exc.args else exc
        click.echo(f"Error: Kafka: {getattr(err, 'str', lambda: str(err))()}", err=True)
        raise SystemExit(1) from None


def _from_kafka(exc: BaseException) -> bool:
    """True for the Kafka client's own exception (its module is not imported to ask)."""
    kafka = sys.modules.get("confluent_kafka")
    return kafka is not None and isinstance(exc, kafka.KafkaException)
