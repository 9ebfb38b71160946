"""`terra-xfer broker start|status|stop` as a new user runs them, on a real broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from terra_xfer.broker import EmbeddedBroker, free_port, require_tool
from terra_xfer.config import BrokerConfig
from terra_xfer.errors import BrokerError

pytestmark = pytest.mark.broker


def terra_xfer(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "terra_xfer", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=180,
        check=False,
    )


def free_port_pair() -> int:
    """A free port whose next one is free too: the embedded broker's controller takes port + 1
    (other test workers start brokers meanwhile)."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def test_start_status_stop_through_the_cli(tmp_path: Path) -> None:
    port = free_port_pair()
    env = {
        **os.environ,
        "TERRA_XFER_BROKER_PORT": str(port),
        "TERRA_XFER_BROKER_DATA_DIR": str(tmp_path / "broker"),
        "TERRA_XFER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
    }
    started = terra_xfer(["broker", "start"], env)
    try:
        assert started.returncode == 0, started.stderr
        assert f"bootstrap 127.0.0.1:{port}" in started.stdout
        pid = int((tmp_path / "broker" / "broker.pid").read_text())
        again = terra_xfer(["broker", "start"], env)  # already running: no second broker
        assert again.returncode == 0 and f"pid {pid}" in again.stdout
        status = terra_xfer(["broker", "status"], env)
        assert status.returncode == 0 and "answering" in status.stdout
        topics = terra_xfer(["topics", "create"], env)
        assert topics.returncode == 0 and "terra.files.state" in topics.stdout
    finally:
        stopped = terra_xfer(["broker", "stop"], env)
    assert stopped.returncode == 0 and "broker stopped" in stopped.stdout
    assert not (tmp_path / "broker" / "broker.pid").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    status = terra_xfer(["broker", "status"], env)
    assert status.returncode == 1 and "not running" in status.stdout
    # A restart reuses the formatted storage: the topics are still there.
    restarted = terra_xfer(["broker", "start"], env)
    try:
        assert restarted.returncode == 0, restarted.stderr
        topics = terra_xfer(["topics", "create"], env)
        assert "created" not in topics.stdout and "exists" in topics.stdout
    finally:
        terra_xfer(["broker", "stop"], env)


def test_missing_java_is_named_with_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="`java` is not on PATH: install a Java 17"):
        require_tool("java")
    with pytest.raises(BrokerError, match="`mvn` is not on PATH: install Apache Maven"):
        require_tool("mvn")
    node = EmbeddedBroker(free_port(), tmp_path / "b", BrokerConfig().kafka_version)
    with pytest.raises(BrokerError, match="java"):
        node.start(timeout_s=5)


def test_a_broker_that_cannot_start_reports_its_log_tail(tmp_path: Path) -> None:
    node = EmbeddedBroker(
        free_port(),
        tmp_path / "b",
        BrokerConfig().kafka_version,
        extra_properties={"log.retention.hours": "not-a-number"},
    )
    with pytest.raises(
        BrokerError, match=r"exited with code|did not answer|formatting the broker storage failed"
    ) as info:
        node.start(timeout_s=60)
    assert "Invalid value not-a-number for configuration log.retention.hours" in str(info.value)
    assert node.pid() is None
