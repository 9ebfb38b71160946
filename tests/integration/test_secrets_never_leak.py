"""Secrets never leak: a whole pipeline run with known secrets, then every log line and every event
searched for them, raw and encoded.

The run is the real thing end to end: the Kafka password is the SCRAM password of a SASL broker
started for this module, the Globus client secret authenticates the Globus backend against the
Transfer API double, and the Clowder key the catalog against the Clowder double; all three come
from the environment, as in production. Every log record at DEBUG (from every logger, formatted
with its arguments, exception and extra fields) and every event on every topic of the run must hold
none of them, nor their base64 or URL-encoded forms. So must ``repr(config)`` and the JSON log
lines of CLI commands that load the configuration.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from confluent_kafka.admin import AdminClient

from terra_xfer.broker import EmbeddedBroker, free_port
from terra_xfer.broker_scram import ScramUser
from terra_xfer.config import BrokerConfig, Config, Secret, load
from terra_xfer.kafka import client_config
from terra_xfer.reading import read_to_end
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.broker_tag import TEST_BROKER_TAG
from tests.doubles.clowder_api import ClowderDouble
from tests.doubles.globus_api import GlobusDouble
from tests.kafka_read import read_all
from tests.pipeline import built, run_until, write_night

pytestmark = pytest.mark.broker
KAFKA_USER = "terra-pipeline"
KAFKA_PASSWORD = "kafka-Pw+Leak/Probe-7Q2x"
GLOBUS_CLIENT = "terra-leak-client"
GLOBUS_SECRET = "globus-S3cret+Ab/Cd=Ef-Leak"
CLOWDER_KEY = "clowder-Key+Zz/Yy?&=Leak"


def forms(secret: str, *wrapped: str) -> set[bytes]:
    """The secret as it could appear: raw, base64 (standard, URL-safe, unpadded), URL-encoded."""
    out: set[bytes] = set()
    for text in (secret, *wrapped):
        raw = text.encode()
        out |= {raw, quote(text, safe="").encode(), quote_plus(text).encode()}
        out |= {base64.b64encode(raw).rstrip(b"="), base64.urlsafe_b64encode(raw).rstrip(b"=")}
    return out


# The Globus secret also travels inside HTTP basic auth: base64 of "client_id:secret".
FORMS = {
    "kafka password": forms(KAFKA_PASSWORD),
    "globus secret": forms(GLOBUS_SECRET, f"{GLOBUS_CLIENT}:{GLOBUS_SECRET}"),
    "clowder key": forms(CLOWDER_KEY),
}


def leaks(blob: bytes | str) -> list[str]:
    data = blob.encode("utf-8", "backslashreplace") if isinstance(blob, str) else blob
    return [name for name, found in FORMS.items() if any(f in data for f in found)]


class EveryRecord(logging.Handler):
    """Keeps each record as text: message with its arguments, exception, stack and extras."""

    _PLAIN = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.name, record.getMessage(), repr(record.args)]
        if record.exc_info:
            parts.append(self._formatter.formatException(record.exc_info))
        parts += [record.exc_text or "", record.stack_info or ""]
        parts += [f"{k}={v!r}" for k, v in vars(record).items() if k not in self._PLAIN]
        self.texts.append("\n".join(parts))


@contextlib.contextmanager
def every_log_record() -> Iterator[EveryRecord]:
    """Every logger at DEBUG into one handler (loggers that do not propagate too), then restored."""
    handler = EveryRecord()
    manager = logging.root.manager
    loggers = [
        logging.root,
        *(lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]
    levels = {lg: lg.level for lg in loggers}
    hooked = [lg for lg in loggers if lg is logging.root or not lg.propagate]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    for lg in hooked:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg in hooked:
            lg.removeHandler(handler)
        for lg, level in levels.items():
            lg.setLevel(level)


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    node = EmbeddedBroker(
        free_port(),
        tmp_path_factory.mktemp("leak-broker"),
        BrokerConfig().kafka_version,
        heap="512m",
        controller_port=free_port(),
        tag=f"{TEST_BROKER_TAG}-leak-{uuid.uuid4().hex[:8]}",
        scram_user=ScramUser(KAFKA_USER, Secret(KAFKA_PASSWORD)),
    )
    node.start(timeout_s=120)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def globus() -> Iterator[GlobusDouble]:
    with GlobusDouble(client_id=GLOBUS_CLIENT, client_secret=GLOBUS_SECRET) as double:
        yield double


@pytest.fixture
def clowder() -> Iterator[ClowderDouble]:
    with ClowderDouble(api_key=CLOWDER_KEY) as double:
        yield double


@dataclasses.dataclass
class Run:
    config: Config
    env: dict[str, str]  # what a CLI process needs besides the inherited environment


@pytest.fixture
def run(
    tmp_path: Path,
    sasl_broker: EmbeddedBroker,
    globus: GlobusDouble,
    clowder: ClowderDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> Run:
    """The configuration as an operator writes it: a TOML file, and the secrets in the environment."""
    cache, dest = tmp_path / "cache", tmp_path / "dest"
    source_endpoint = globus.add_endpoint(cache)
    destination_endpoint = globus.add_endpoint(dest)
    toml = tmp_path / "terra-xfer.toml"
    toml.write_text(
        f"""
[kafka]
bootstrap_servers = "{sasl_broker.bootstrap}"
topic_prefix = "leak{uuid.uuid4().hex[:6]}."
partitions = 2
security_protocol = "SASL_PLAINTEXT"
sasl_username = "{KAFKA_USER}"
[gantry]
xferlog = "{tmp_path / "log" / "xferlog"}"
cache_root = "{cache}"
log_root = "/gantry_data"
[batcher]
max_wait_s = 1.0
[monitor]
poll_initial_s = 0.05
poll_max_s = 0.5
[transfer]
backend = "globus"
destination_root = "{dest}"
state_dir = "{tmp_path / "transfer"}"
[transfer.globus]
client_id = "{GLOBUS_CLIENT}"
source_endpoint = "{source_endpoint}"
destination_endpoint = "{destination_endpoint}"
source_base = "/"
[catalog]
backend = "clowder"
[catalog.clowder]
url = "{clowder.url}"
[status]
index_path = "{tmp_path / "status.sqlite"}"
keeper_path = "{tmp_path / "keeper.sqlite"}"
[metrics]
port = 0
"""
    )
    env = {
        "TERRA_XFER_CONFIG": str(toml),
        "TERRA_XFER_KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
        "TERRA_XFER_GLOBUS_CLIENT_SECRET": GLOBUS_SECRET,
        "TERRA_XFER_CLOWDER_KEY": CLOWDER_KEY,
        **globus.env(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Run(load(toml), env)


def every_event(config: Config) -> Iterator[tuple[str, Any]]:
    """Every message (key, value, headers) of every topic of this run, from the beginning."""
    admin = AdminClient(client_config(config.kafka))
    topics = sorted(
        t for t in admin.list_topics(timeout=30).topics if t.startswith(config.kafka.topic_prefix)
    )
    assert len(topics) >= 8, topics
    for topic in topics:
        for msg in read_to_end(config.kafka, topic, timeout_s=60):
            yield topic, msg


def test_no_secret_in_any_log_line_or_event_of_a_pipeline_run(
    run: Run, clowder: ClowderDouble
) -> None:
    config = run.config
    assert config.kafka.sasl_password == Secret(KAFKA_PASSWORD)  # all three really came from env
    assert config.transfer.globus.client_secret == Secret(GLOBUS_SECRET)
    assert config.catalog.clowder.key == Secret(CLOWDER_KEY)
    shipped = set(write_night(config, 24, seed=31, size=32))
    keys = {f"ua-mac/{rel}" for rel in shipped}

    def done() -> bool:
        states = {v["key"]: v for _, v in read_all(config.kafka, config.topic("files.state"))}
        return all(states.get(k, {}).get("state") == "DONE" for k in keys)

    with every_log_record() as records:
        create_topics(config)
        with built(config, [s.name for s in registry.running(config)]) as stages:
            run_until([stage for _, stage in stages], done, timeout_s=240)
        events = list(every_event(config))

    assert records.texts, "no log record was captured"
    assert any("batch" in t for t in records.texts)  # the stages did log as they worked
    leaked = {name for text in records.texts for name in leaks(text)}
    assert not leaked, f"secrets in log records: {leaked}"
    assert {t for t, _ in events} >= {config.topic(n) for n in ("files.arrived", "files.state")}
    for topic, msg in events:
        headers = b"".join(k.encode() + (v or b"") for k, v in msg.headers() or [])
        blob = (msg.key() or b"") + (msg.value() or b"") + headers
        assert not leaks(blob), f"{leaks(blob)} in an event on {topic}"
    used_key = {s.key_via for s in clowder.seen()}
    assert used_key == {"header"}  # the Clowder key never travelled in a URL


def test_no_secret_in_the_config_repr_or_the_cli_json_logs(run: Run) -> None:
    config = run.config
    for text in (repr(config), str(config), json.dumps(dataclasses.asdict(config), default=str)):
        assert not leaks(text)
    create_topics(config)
    env = {**os.environ, **run.env}
    for command in (["topics", "create"], ["status", "--json"], ["lag"]):
        done = subprocess.run(
            [sys.executable, "-m", "terra_xfer", "--log-json", "--log-level", "DEBUG", *command],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert not leaks(done.stdout + done.stderr), (
            f"{command}: {leaks(done.stdout + done.stderr)}"
        )
        for line in done.stderr.decode().splitlines():
            doc = json.loads(line)  # every log line is one JSON object
            assert "***" not in line, f"{command}: a secret reached a log record: {doc}"
