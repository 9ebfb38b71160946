"""``terra-xfer <stage>``: one pipeline stage as its own process, as each Kubernetes Deployment runs
it. The commands are made from the stage registry; each runs the stage's one host until SIGTERM or
Ctrl-C (or ``--once`` / ``--idle-exit`` for scripts and tests)."""

from __future__ import annotations

import inspect
import logging

import click

from terra_xfer.cli import State
from terra_xfer.kafka_security import KafkaUnreachableError, check_access
from terra_xfer.stages import registry
from terra_xfer.stages.host import RunOptions, serve
from terra_xfer.stages.spec import StageSpec

log = logging.getLogger(__name__)

once_option = click.option("--once", is_flag=True, help="Do one unit of work and exit.")
idle_exit_option = click.option(
    "--idle-exit",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Exit after this long with nothing to do (default: run until SIGTERM/Ctrl-C).",
)


def run(state: State, spec: StageSpec, once: bool, idle_exit: float | None) -> int:
    """Run ``spec``'s stage with the host, after checking the cluster accepts our credentials."""
    refuse_bad_credentials(state)
    return serve(spec, state.config, RunOptions(once=once, idle_exit_s=idle_exit))


def refuse_bad_credentials(state: State, timeout_s: float = 10.0) -> None:
    """Stop at once, with the reason, when the cluster refuses this command's credentials.

    An unreachable cluster is only a warning: the stage retries until the brokers are back.
    """
    try:
        check_access(state.config.kafka, timeout_s)
    except KafkaUnreachableError as exc:
        log.warning("%s; starting anyway, the stage retries until the brokers answer", exc)


def stage_command(spec: StageSpec) -> click.Command:
    """The command that runs ``spec`` on its own."""

    @once_option
    @idle_exit_option
    @click.pass_obj
    def command(state: State, once: bool, idle_exit: float | None) -> None:
        run(state, spec, once, idle_exit)

    return click.command(name=spec.name, help=inspect.cleandoc(spec.help), short_help=spec.summary)(
        command
    )


def commands() -> dict[str, click.Command]:
    """Every stage that runs as ``terra-xfer <its name>``, by name."""
    return {s.name: stage_command(s) for s in registry.STAGES if s.argv == (s.name,)}
