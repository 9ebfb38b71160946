"""Typed, frozen configuration: one TOML file, then environment overrides, read once by the CLI.

Every key can be overridden by ``TERRA_XFER_<SECTION>_<KEY>`` (``[transfer.globus] client_id`` →
``TERRA_XFER_TRANSFER_GLOBUS_CLIENT_ID``), or by the name its field's ``env`` metadata gives
(``[kafka] instance_id`` → ``TERRA_XFER_INSTANCE_ID``). Secrets are never read from the file, only from the
environment, and are held as :class:`Secret` so they cannot leak through a repr or a log line.
A bad file or value raises :class:`ConfigError` with one sentence naming the key and the problem.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from terra_xfer.errors import ConfigError

ENV_PREFIX = "TERRA_XFER_"
# Read elsewhere than the config's fields: the config file's path, and the test run's broker tag.
OTHER_ENV = frozenset({"TERRA_XFER_CONFIG", "TERRA_XFER_TEST_TAG"})
log = logging.getLogger(__name__)
_warned: set[str] = set()  # unknown variables already told, once per process
DEFAULT_WHITELIST = (
    "LemnaTec/MovingSensor/",
    "LemnaTec/EnvironmentLogger/",
    "LemnaTec/3DScannerRawDataTmp/",
    "MAC/",
)


class Secret:
    """A value that must not be logged: ``repr``/``str`` show ``***``; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def data_home() -> Path:
    """Per-user directory for terra-xfer's state when the config does not name one."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "terra-xfer"


def cache_home() -> Path:
    """Per-user cache (the broker's resolved jars live here, reused across runs)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "terra-xfer"


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "terra."
    partitions: int = field(default=6, metadata={"min": 1})
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = field(default=None, metadata={"secret": "KAFKA_SASL_PASSWORD"})
    ssl_ca_location: Path | None = None  # CA bundle that signed the brokers' TLS certificates
    # This replica's name among the replicas of a stage (its static group membership and
    # transactional id), from TERRA_XFER_INSTANCE_ID (the pod name on Kubernetes); the host name
    # when unset. Two replicas of one stage must never share it, or they fence each other.
    instance_id: str | None = field(default=None, metadata={"env": "INSTANCE_ID"})


@dataclass(frozen=True)
class BrokerConfig:
    port: int = 9092
    data_dir: Path = field(default_factory=lambda: data_home() / "broker")
    kafka_version: str = "4.4.0"
    heap: str = "768m"
    start_timeout_s: float = 60.0


@dataclass(frozen=True)
class GantryConfig:
    xferlog: Path = Path("/var/log/xferlog")
    nas_log: Path | None = None
    cache_root: Path = Path("/gantry_data")
    log_root: str | None = None
    whitelist: tuple[str, ...] = DEFAULT_WHITELIST
    timezone: str = "America/Phoenix"
    site: str = "ua-mac"
    max_line_bytes: int = 65536
    chunk_lines: int = 10_000
    poll_s: float = 0.5


DEFAULT_CAMERAS = ("VIS=2454x2056", "NIR=636x508", "PSII=1388x1038")


@dataclass(frozen=True)
class DanforthConfig:
    """The Danforth producer: the LemnaTec database it polls and the cache it writes PNGs into.

    ``dsn`` is a libpq connection string without the password (that comes only from
    ``TERRA_XFER_DANFORTH_PASSWORD``). ``cameras`` gives each camera label prefix its frame size
    (``PREFIX=WIDTHxHEIGHT``, the longest matching prefix wins): the database does not hold it.
    """

    enabled: bool = False  # `terra-xfer up` runs the Danforth producer too
    dsn: str = "host=localhost dbname=LTSystem user=lemnatec"
    password: Secret | None = field(default=None, metadata={"secret": "DANFORTH_PASSWORD"})
    blob_root: Path = Path("/data/lemnatec/blobs")
    cache_root: Path = Path("/danforth_data")
    site: str = "danforth"
    timezone: str = "America/Chicago"
    poll_s: float = 10.0
    chunk_snapshots: int = 10
    workers: int = 0  # threads making PNGs; 0: one per core
    png_level: int = 1
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    give_up_after_s: float = 86400.0


@dataclass(frozen=True)
class BatcherConfig:
    max_files: int = 500
    max_wait_s: float = 30.0
    # A window also closes once its files hold this many bytes: a few large files (a 68 GB VNIR
    # cube) go at once instead of waiting for max_files or max_wait_s.
    max_bytes: int = field(default=10_000_000_000, metadata={"min": 1})
    max_pending_tasks: int = 20
    # While fewer of its tasks than this are running, the batcher closes its windows as soon as it
    # has read all there is (0: windows wait for max_files, max_bytes or max_wait_s). 3 is the
    # number of tasks Globus runs at once for one user.
    idle_tasks: int = field(default=3, metadata={"min": 0})


@dataclass(frozen=True)
class GlobusConfig:
    source_endpoint: str = ""
    destination_endpoint: str = ""
    destination_base: str = "/"
    source_base: str = ""
    client_id: str = ""
    client_secret: Secret | None = field(default=None, metadata={"secret": "GLOBUS_CLIENT_SECRET"})
    deadline_s: int = 86400


@dataclass(frozen=True)
class TransferConfig:
    backend: Literal["local", "globus", "record"] = "local"  # record: benchmarks only
    destination_root: Path = field(default_factory=lambda: data_home() / "destination")
    state_dir: Path = field(default_factory=lambda: data_home() / "transfer")
    globus: GlobusConfig = field(default_factory=GlobusConfig)


@dataclass(frozen=True)
class MonitorConfig:
    max_attempts: int = 5
    poll_initial_s: float = 0.5
    poll_max_s: float = 60.0
    retry_backoff_s: float = 30.0
    # How long a PREPARED batch waits for the batcher's SUBMITTED record before the monitor submits
    # it itself (the batcher died or failed between recording and submitting): one submit per batch
    # against a rate-limited service when the batcher is healthy.
    submit_grace_s: float = 30.0


@dataclass(frozen=True)
class ClowderConfig:
    url: str = ""
    space_id: str | None = None
    mounted_prefix: str | None = None
    key: Secret | None = field(default=None, metadata={"secret": "CLOWDER_KEY"})


@dataclass(frozen=True)
class CatalogConfig:
    backend: Literal["local", "clowder"] = "local"
    path: Path = field(default_factory=lambda: data_home() / "catalog.sqlite")
    clowder: ClowderConfig = field(default_factory=ClowderConfig)


@dataclass(frozen=True)
class DeleterConfig:
    enabled: bool = True
    dry_run: bool = False


@dataclass(frozen=True)
class SweeperConfig:
    min_age_s: float = 172800.0
    interval_s: float = 86400.0
    stuck_after_s: float = 86400.0


# How long the event topics keep what they carry (``topics create`` sets their retention.ms).
EVENT_RETENTION_DAYS = 14


@dataclass(frozen=True)
class StatusConfig:
    index_path: Path = field(default_factory=lambda: data_home() / "status.sqlite")
    keeper_path: Path = field(default_factory=lambda: data_home() / "state-keeper.sqlite")
    # Settled files (DONE, MISSING) leave the stages' local copies this long after their last
    # change; files.state and the status index keep them. 0: never.
    retain_settled_days: float = 30.0
    # Peers a copy that starts empty asks for a snapshot of theirs before reading files.state
    # whole: base URLs of their metrics servers, or dns+http://HOST:PORT for every address of
    # HOST (terra_xfer.seeding). Empty: a new copy is rebuilt from the topic.
    seed_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricsConfig:
    port: int = 9100  # /metrics, /healthz and /readyz; 0 turns the server off
    # Where they listen: this machine only, unless set (Kubernetes sets 0.0.0.0 for its probes).
    address: str = "127.0.0.1"
    # A step running this long exits the process for a restart (see terra_xfer.stages.stall_guard); 0: never.
    stall_exit_s: float = 900.0


@dataclass(frozen=True)
class Config:
    """The whole configuration; each service takes the sections it needs."""

    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    gantry: GantryConfig = field(default_factory=GantryConfig)
    danforth: DanforthConfig = field(default_factory=DanforthConfig)
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    deleter: DeleterConfig = field(default_factory=DeleterConfig)
    sweeper: SweeperConfig = field(default_factory=SweeperConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def group(self, stage: str) -> str:
        """Consumer group (and transactional id stem) of a stage: ``terra.batcher``. Prefixed like
        the topics, so two pipelines sharing a cluster never share a group."""
        return self.kafka.topic_prefix + stage

    def topic(self, name: str) -> str:
        """Full topic name for a catalogue name (``files.arrived`` → ``terra.files.arrived``)."""
        return self.kafka.topic_prefix + name


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (optional) and apply environment overrides and secrets."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        base = Path(path).resolve().parent
    config = _build(Config, raw, "", env, base)
    _check_together(config)
    for name, hint in unknown_env(env).items():
        if name not in _warned:
            _warned.add(name)
            log.warning("%s is not a terra-xfer setting and is ignored%s", name, hint)
    return config


def _check_together(config: Config) -> None:
    """Settings valid one by one but not together."""
    t, d = config.transfer, config.deleter
    keep = config.status.retain_settled_days
    if keep < 0 or 0 < keep <= EVENT_RETENTION_DAYS:
        raise ConfigError(
            f"[status] retain_settled_days = {keep:g} must be more than {EVENT_RETENTION_DAYS}"
            " (the days the event topics keep their events: while one of them may still name a"
            " file, the stages must know its record), or 0 to keep every settled file"
        )
    if t.backend == "record" and d.enabled and not d.dry_run:
        raise ConfigError(
            '[transfer] backend = "record" copies nothing (it measures the pipeline\'s overhead):'
            " set [deleter] dry_run = true (or enabled = false) with it, so that no cache file"
            " is removed"
        )


def env_names(cls: type = Config, section: str = "") -> set[str]:
    """Every ``TERRA_XFER_*`` variable the configuration reads (settings and secrets)."""
    names = set()
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        dotted = f"{section}.{fld.name}" if section else fld.name
        if dataclasses.is_dataclass(hints[fld.name]):
            names |= env_names(hints[fld.name], dotted)
        elif "secret" in fld.metadata:
            names.add(ENV_PREFIX + fld.metadata["secret"])
        else:
            names.add(ENV_PREFIX + fld.metadata.get("env", dotted.replace(".", "_").upper()))
    return names


def unknown_env(env: Mapping[str, str]) -> dict[str, str]:
    """The set ``TERRA_XFER_*`` variables nothing reads (a typo, a renamed setting), each with
    a "; did you mean X?" hint when one known name is close."""
    known = env_names() | OTHER_ENV
    tails = {k.removeprefix(ENV_PREFIX): k for k in known}  # the shared prefix is no likeness
    out = {}
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            near = _near(name.removeprefix(ENV_PREFIX), tails, cutoff=0.75)
            out[name] = f"; did you mean {tails[near]}?" if near else ""
    return out


def _near(name: str, known: typing.Iterable[str], cutoff: float) -> str | None:
    """The one name of ``known`` close to ``name`` (a typo's intended name), if any."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=cutoff)
    return close[0] if close else None


T = TypeVar("T")


def _build(
    cls: type[T], raw: Mapping[str, Any], section: str, env: Mapping[str, str], base: Path
) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    where = f"[{section}]" if section else "the top level"
    for key, value in raw.items():
        if key not in fields:
            near = _near(key, fields, cutoff=0.6)
            hint = f"; did you mean {near!r}?" if near else ""
            raise ConfigError(f"unknown key {key!r} in {where}{hint}")
        if "secret" in fields[key].metadata:
            env_name = ENV_PREFIX + fields[key].metadata["secret"]
            raise ConfigError(
                f"{section}.{key} is a secret: set it with {env_name}, not in the file"
            )
        if dataclasses.is_dataclass(hints[key]) and not isinstance(value, dict):
            raise ConfigError(f"{section + '.' if section else ''}{key} must be a table [{key}]")
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        hint = hints[name]
        dotted = f"{section}.{name}" if section else name
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw.get(name, {}), dotted, env, base)  # type: ignore[arg-type]
            continue
        if "secret" in fld.metadata:
            secret = env.get(ENV_PREFIX + fld.metadata["secret"])
            values[name] = Secret(secret) if secret else None
            continue
        env_name = ENV_PREFIX + fld.metadata.get("env", dotted.replace(".", "_").upper())
        if env_name in env:
            values[name] = _coerce(hint, env[env_name], f"{env_name}", base, from_env=True)
        elif name in raw:
            values[name] = _coerce(hint, raw[name], f"{dotted} in the config file", base)
        least = fld.metadata.get("min")
        if least is not None and name in values and values[name] < least:
            source = env_name if env_name in env else f"{dotted} in the config file"
            raise ConfigError(f"{source} must be at least {least}, not {values[name]!r}")
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str, base: Path, from_env: bool = False) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        if value in ("", None) or (from_env and str(value).lower() == "none"):
            return None
        return _coerce(inner[0], value, where, base, from_env)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{where} must be one of {allowed}, not {value!r}")
        return value
    if origin is tuple:
        items = [s.strip() for s in value.split(",") if s.strip()] if from_env else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(items)
    if hint is bool:
        if from_env:
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        elif isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if hint in (int, float):
        try:
            number = hint(value) if from_env else value
        except ValueError:
            raise ConfigError(f"{where} must be a number, not {value!r}") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        if hint is int and not isinstance(number, int):
            raise ConfigError(f"{where} must be a whole number, not {value!r}")
        if number < 0:
            raise ConfigError(f"{where} must not be negative, not {value!r}")
        return hint(number)
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a path (a non-empty string)")
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(os.path.normpath(base / path))
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")
        return value
    raise ConfigError(f"{where} has an unsupported type")  # pragma: no cover - schema bug
