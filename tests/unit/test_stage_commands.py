"""A stage is the same stage however it is started: the container command of its Kubernetes
Deployment and ``terra-xfer up`` resolve to one registry entry and build the same objects.

Both are resolved through the real command line (:data:`terra_xfer.cli.cli`); only the last call
is replaced, the one that would run the stage (``host.serve``) or every stage (``run_up``). The
stages are built offline (Kafka pointed nowhere, local backends) and never stepped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consumers.state.view import StateFollower
from terra_xfer import k8s
from terra_xfer.cli import cli
from terra_xfer.config import Config
from terra_xfer.stages import registry
from terra_xfer.stages.child import Orders, read_orders
from terra_xfer.stages.commit import StageKafka
from terra_xfer.stages.spec import Stage, StageSpec, Wiring
from tests.fakes import UNREACHABLE


def everything_enabled(tmp_path: Path) -> Path:
    """A configuration under which ``up`` runs every stage of the registry, reaching nothing."""
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "xferlog").touch()
    (tmp_path / "log" / "nas.log").touch()
    path = tmp_path / "site.toml"
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "{UNREACHABLE}"
[gantry]
xferlog = "{tmp_path}/log/xferlog"
nas_log = "{tmp_path}/log/nas.log"
cache_root = "{tmp_path}/cache"
[danforth]
enabled = true
blob_root = "{tmp_path}/blobs"
cache_root = "{tmp_path}/danforth"
[transfer]
backend = "local"
destination_root = "{tmp_path}/destination"
state_dir = "{tmp_path}/transfer"
[catalog]
backend = "local"
path = "{tmp_path}/catalog.sqlite"
[deleter]
enabled = true
[status]
index_path = "{tmp_path}/status.sqlite"
keeper_path = "{tmp_path}/keeper.sqlite"
""",
        encoding="utf-8",
    )
    return path


class Resolved:
    """What the command line handed to the stage host or to ``up``."""

    def __init__(self) -> None:
        self.served: list[tuple[StageSpec, Config]] = []
        self.up: list[Config] = []


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> Resolved:
    got = Resolved()

    def serve(spec: StageSpec, config: Config, options: object = None) -> int:
        got.served.append((spec, config))
        return 0

    def run_up(config: Config, *_args: object, **_kwargs: object) -> dict[str, int]:
        got.up.append(config)
        return {}

    monkeypatch.setattr("terra_xfer.cli.stage_command.serve", serve)
    monkeypatch.setattr("terra_xfer.cli.stage_command.refuse_bad_credentials", lambda *_: None)
    monkeypatch.setattr("terra_xfer.cli.up.run_up", run_up)
    monkeypatch.setattr("terra_xfer.cli.up.refuse_bad_credentials", lambda *_: None)
    monkeypatch.setattr("terra_xfer.cli.configure", lambda *_a, **_k: None)  # pytest's logging
    return got


def invoke(argv: list[str], config_path: Path) -> None:
    """``terra-xfer *argv`` with the configuration named as a container names it."""
    result = CliRunner().invoke(cli, argv, env={"TERRA_XFER_CONFIG": str(config_path)})
    assert result.exit_code == 0, (argv, result.output, result.exception)


def container_command(spec: StageSpec) -> list[str]:
    (container,) = k8s.workload(spec)["spec"]["template"]["spec"]["containers"]
    command: list[str] = container["command"]
    return command


def as_a_child_gets_it(spec: StageSpec, config: Config) -> tuple[StageSpec, Config]:
    """``spec`` and ``config`` after the trip to a stage process of ``up`` (its orders)."""
    read, write = os.pipe()
    try:
        os.write(write, Orders(spec, config, os.getpid(), -1).encode())
        os.close(write)
        orders = read_orders(read)
    finally:
        os.close(read)
    return orders.spec, orders.config


class Holding(contextlib.ExitStack):
    """An exit stack that remembers what it was given to close."""

    def __init__(self) -> None:
        super().__init__()
        self.things: list[object] = []

    def callback(self, callback: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.things.append(getattr(callback, "__self__", callback))
        return super().callback(callback, *args, **kwargs)


@contextlib.contextmanager
def built(spec: StageSpec, config: Config) -> Iterator[tuple[Stage, list[object]]]:
    """``spec``'s stage built from ``config`` as the host builds it, and what it was given."""
    with Holding() as held:
        stage = spec.build(Wiring(config, spec, held))
        given = list(held.things)
        held.callback(stage.close)
        yield stage, given


def shape(stage: Stage, given: list[object]) -> tuple[str, dict[str, str], list[str]]:
    """The stage's type, the type of each of its attributes, and the types of what it holds."""
    attributes = {k: type(v).__qualname__ for k, v in vars(stage).items()}
    return type(stage).__qualname__, attributes, [type(g).__qualname__ for g in given]


def index_path(given: object) -> Path:
    """The file of a view of files.state a stage was given."""
    assert isinstance(given, StateFollower), type(given).__qualname__
    return given.index.path


def kafka_identity(stage: Stage) -> tuple[str, str, list[str]]:
    """Whose entry the stage's Kafka clients were made for, its transactional id and its inputs."""
    kafka = getattr(stage, "kafka", None) or getattr(getattr(stage, "loop", None), "kafka", None)
    assert isinstance(kafka, StageKafka), f"{type(stage).__name__} has no StageKafka"
    return kafka.spec.name, kafka.producer.transactional_id, kafka.topics


@pytest.mark.parametrize(
    "spec",
    [*registry.deployed(), *registry.deployed("danforth")],
    ids=lambda s: s.name,
)
def test_the_kubernetes_command_and_up_build_the_same_stage(
    spec: StageSpec, resolved: Resolved, tmp_path: Path
) -> None:
    path = everything_enabled(tmp_path)
    program, *argv = container_command(spec)
    assert program == "terra-xfer"
    invoke(argv, path)  # as the Deployment's container runs it
    invoke(["up"], path)  # as a user runs the whole pipeline
    ((served, k8s_config),) = resolved.served
    (up_config,) = resolved.up
    assert k8s_config == up_config
    running = registry.running(up_config)
    assert [s.name for s in running] == [s.name for s in registry.STAGES]  # everything enabled
    (up_spec,) = [s for s in running if s.name == spec.name]
    assert served is spec and up_spec is spec  # the one entry of the registry
    child_spec, child_config = as_a_child_gets_it(up_spec, up_config)
    assert child_spec == spec and child_spec.build is spec.build
    with (
        built(served, k8s_config) as (k8s_stage, k8s_given),
        built(child_spec, child_config) as (up_stage, up_given),
    ):
        assert shape(k8s_stage, k8s_given) == shape(up_stage, up_given)
        if not spec.outputs:  # the indexer: no Kafka identity, the same index file
            assert [index_path(g) for g in k8s_given] == [index_path(g) for g in up_given]
            assert index_path(k8s_given[0]) == k8s_config.status.index_path
            return
        identity = kafka_identity(k8s_stage)
        assert identity == kafka_identity(up_stage)  # the same group and transactional id
        assert identity[0] == spec.name


@pytest.mark.parametrize("spec", registry.STAGES, ids=lambda s: s.name)
def test_every_stage_command_resolves_to_its_registry_entry(
    spec: StageSpec, resolved: Resolved, tmp_path: Path
) -> None:
    invoke(list(spec.argv), everything_enabled(tmp_path))
    ((served, _config),) = resolved.served
    assert served is spec


def test_the_nas_log_producer_is_the_gantry_command_with_its_source() -> None:
    assert registry.spec("gantry-nas").argv == ("gantry", "--source", "nas_log")
    assert registry.spec("gantry").argv == ("gantry",)
