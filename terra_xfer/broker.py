"""The embedded broker: a real Apache Kafka node in KRaft mode, for local use and tests.

Kafka's jars are resolved from Maven Central with Maven once per version into the per-user cache and
reused. The node is combined (broker + controller), listens on 127.0.0.1 only, and is started with the
machine's Java. There is deliberately no fallback: without ``java`` or ``mvn`` this fails with a clear
sentence, never with a stand-in broker.

With a :class:`~terra_xfer.broker_scram.ScramUser` the client listener is SASL_PLAINTEXT with
SCRAM-SHA-512 instead of PLAINTEXT, so a client without that user's credentials is refused (see
``terra_xfer.broker_scram``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from terra_xfer.broker_scram import ScramUser, client_security, sasl_listener
from terra_xfer.config import KafkaConfig, cache_home
from terra_xfer.errors import BrokerError
from terra_xfer.kafka_security import client_config

log = logging.getLogger(__name__)

LOG4J_VERSION = "2.26.1"
STORAGE_TOOL = "kafka.tools.StorageTool"
SERVER_MAIN = "kafka.Kafka"
_INSTALL_HINT = {
    "java": "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)",
    "mvn": "install Apache Maven (Debian: apt-get install maven)",
}


def require_tool(name: str) -> str:
    """Path of ``name`` on PATH, or a BrokerError saying how to install it."""
    found = shutil.which(name)
    if not found:
        raise BrokerError(f"`{name}` is not on PATH: {_INSTALL_HINT.get(name, 'install it')}")
    return found


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_jars(version: str, cache: Path | None = None) -> Path:
    """Directory holding Kafka ``version``'s runtime classpath; resolved with Maven on first use."""
    root = (cache or cache_home()) / f"kafka-{version}"
    libs = root / "libs"
    marker = root / ".resolved"
    if marker.exists():
        return libs
    with _file_lock(root.parent / f".kafka-{version}.lock"):
        if marker.exists():
            return libs
        mvn = require_tool("mvn")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="terra-xfer-mvn-") as work:
            pom = Path(work) / "pom.xml"
            template = resources.files("terra_xfer").joinpath("broker_pom.xml").read_text()
            pom.write_text(
                template.replace("@KAFKA_VERSION@", version).replace(
                    "@LOG4J_VERSION@", LOG4J_VERSION
                )
            )
            staged = Path(work) / "libs"
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staged}",
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0 or not any(staged.glob("kafka_2.13-*.jar")):
                tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
                raise BrokerError(
                    f"Maven could not resolve Kafka {version} from Maven Central:\n"
                    + "\n".join(tail)
                )
            if libs.exists():
                shutil.rmtree(libs)
            root.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staged), libs)
        marker.write_text(f"{time.monotonic() - started:.1f}s\n")
        log.info("resolved Kafka %s into %s in %.1f s", version, libs, time.monotonic() - started)
    return libs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def answers_metadata(kafka: str | KafkaConfig, timeout_s: float = 5.0) -> bool:
    """True when a broker at ``kafka`` (bootstrap servers, or a whole client config with its
    credentials) answers a metadata request and lists itself."""
    quiet = logging.getLogger("terra_xfer.broker.probe")
    quiet.propagate = False
    kafka = KafkaConfig(bootstrap_servers=kafka) if isinstance(kafka, str) else kafka
    admin = AdminClient(client_config(kafka, logger=quiet))
    try:
        return bool(admin.list_topics(timeout=timeout_s).brokers)
    except Exception:  # KafkaException and transport errors all mean "not answering yet"
        return False


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    answering: bool
    data_dir: Path


class EmbeddedBroker:
    """Start, stop and inspect one KRaft node whose files all live in ``data_dir``."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        version: str,
        heap: str = "768m",
        controller_port: int | None = None,
        extra_properties: dict[str, str] | None = None,
        tag: str = "terra-xfer-broker",
        scram_user: ScramUser | None = None,
    ):
        self.port = port
        self.controller_port = controller_port or port + 1
        self.data_dir = Path(data_dir)
        self.version = version
        self.heap = heap
        self.extra = dict(extra_properties or {})
        self.tag = tag  # on the java command line, so leftover nodes can be found with pgrep -f
        self.scram_user = scram_user
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kafka_config(self, **fields: Any) -> KafkaConfig:
        """A client config for this node: its bootstrap and, with SASL, the user's credentials."""
        security = client_security(self.scram_user) if self.scram_user is not None else {}
        return KafkaConfig(**({"bootstrap_servers": self.bootstrap} | security | fields))

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "broker.log"

    def properties(self) -> dict[str, str]:
        """server.properties of a single combined node; transactions need RF 1 internal topics."""
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.data_dir / "logs"),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "log.cleaner.backoff.ms": "1000",
        }
        if self.scram_user is not None:
            props.update(sasl_listener(self.scram_user, self.port, self.controller_port))
        props.update(self.extra)
        return props

    def pid(self) -> int | None:
        """PID from the pidfile when that process is alive, else None (a stale pidfile is removed)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            self.pidfile.unlink(missing_ok=True)
            return None
        except PermissionError:
            pass
        return pid

    def status(self) -> BrokerStatus:
        pid = self.pid()
        answering = (
            pid is not None and port_open(self.port) and answers_metadata(self.kafka_config(), 3.0)
        )
        return BrokerStatus(pid is not None, pid, self.bootstrap, answering, self.data_dir)

    def start(self, timeout_s: float = 60.0) -> BrokerStatus:
        """Start the node (formatting storage on first start) and wait until it answers metadata."""
        if self.pid() is not None:
            return self._wait_ready(timeout_s, self.pid())
        java = require_tool("java")
        libs = resolve_jars(self.version)
        if port_open(self.port) or port_open(self.controller_port):
            raise BrokerError(
                f"port {self.port} or {self.controller_port} on 127.0.0.1 is already in use by another "
                "process: stop it or set [broker] port"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        classpath = f"{libs}/*"
        if not (self.data_dir / "logs" / "meta.properties").exists():
            self._format(java, classpath, config)
        with self.logfile.open("ab") as out:
            proc = subprocess.Popen(
                [
                    java,
                    f"-Xmx{self.heap}",
                    f"-Xms{min_heap(self.heap)}",
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    f"-Dterra.xfer.tag={self.tag}",
                    f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
                    f"-Dkafka.logs.dir={self.data_dir}",
                    "-cp",
                    classpath,
                    SERVER_MAIN,
                    str(config),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._proc = proc  # kept so this process can reap its child
        self.pidfile.write_text(f"{proc.pid}\n")
        return self._wait_ready(timeout_s, proc.pid, proc)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the node and wait for it to exit (SIGKILL after ``timeout_s``). False if not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        if not _wait_exit(pid, timeout_s, self._proc):
            log.warning("broker pid %d did not stop in %.0f s; killing it", pid, timeout_s)
            os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, timeout_s, self._proc)
        self._proc = None
        self.pidfile.unlink(missing_ok=True)
        return True

    def kill(self, timeout_s: float = 30.0) -> bool:
        """SIGKILL the node, as a crash would, and wait until it is gone. False if not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        if not _wait_exit(pid, timeout_s, self._proc):
            raise BrokerError(f"broker pid {pid} survived SIGKILL for {timeout_s:.0f} s")
        self._proc = None
        self.pidfile.unlink(missing_ok=True)
        return True

    def _format(self, java: str, classpath: str, config: Path) -> None:
        cluster_id = _cluster_id()
        cmd = [
            java,
            "-cp",
            classpath,
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            STORAGE_TOOL,
            "format",
            f"--cluster-id={cluster_id}",  # one argument: an id may begin with "-"
            "-c",
            str(config),
        ]
        if self.scram_user is not None:
            cmd += ["--add-scram", self.scram_user.add_scram_argument()]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            output = done.stdout + done.stderr
            if self.scram_user is not None:
                output = output.replace(self.scram_user.password.reveal(), "***")
            raise BrokerError(f"formatting the broker storage failed:\n{output}")

    def _write_config(self) -> Path:
        config = self.data_dir / "server.properties"
        # Owner-only: with SASL the file holds the broker's password (in its JAAS line).
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        (self.data_dir / "log4j2.yaml").write_text(
            resources.files("terra_xfer").joinpath("broker_log4j2.yaml").read_text()
        )
        return config

    def _wait_ready(
        self, timeout_s: float, pid: int | None, proc: subprocess.Popen[bytes] | None = None
    ) -> BrokerStatus:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                self.pidfile.unlink(missing_ok=True)
                raise BrokerError(
                    f"the broker exited with code {proc.returncode}:\n{self.log_tail()}"
                )
            if port_open(self.port) and answers_metadata(self.kafka_config(), 2.0):
                return BrokerStatus(True, pid, self.bootstrap, True, self.data_dir)
            time.sleep(0.2)
        raise BrokerError(
            f"the broker did not answer a metadata request on {self.bootstrap} within {timeout_s:.0f} s; "
            f"last lines of {self.logfile}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:])


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as random-uuid prints)."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _wait_exit(pid: int, timeout_s: float, proc: subprocess.Popen[bytes] | None) -> bool:
    """Wait until ``pid`` has exited (reaping it when it is our child); False on timeout."""
    if proc is not None:
        try:
            proc.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def min_heap(heap: str) -> str:
    """Initial heap: a quarter of the maximum, so a small machine is not reserved up front."""
    units = {"k": 1, "m": 1024, "g": 1024 * 1024}
    number, unit = heap[:-1], heap[-1].lower()
    if unit not in units or not number.isdigit():
        raise BrokerError(f"[broker] heap must look like 768m or 1g, not {heap!r}")
    kib = int(number) * units[unit] // 4
    return f"{max(kib // 1024, 64)}m"
