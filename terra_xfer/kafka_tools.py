"""Kafka's own console tools from the embedded broker's jars (consumer groups, perf test, ...).

``terra-xfer kafka-tool consumer-groups --reset-offsets ...`` runs exactly what
``kafka-consumer-groups.sh`` runs, so replay runbooks work the same here and on a real cluster.
The cluster comes from the terra-xfer config: ``--bootstrap-server`` is added when not given, and on
a SASL or TLS cluster the Java client's security properties are passed with ``--command-config``
in a file only the user can read, removed when the tool exits.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from terra_xfer.broker import require_tool, resolve_jars
from terra_xfer.config import KafkaConfig
from terra_xfer.errors import TransientError
from terra_xfer.kafka import client_config
from terra_xfer.kafka_security import security_settings

TOOLS = {
    "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "topics": "org.apache.kafka.tools.TopicCommand",
    "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "transactions": "org.apache.kafka.tools.TransactionsCommand",
}
# The tools that name their cluster with --bootstrap-server (the perf test takes client properties).
BOOTSTRAP_TOOLS = frozenset(
    {"consumer-groups", "topics", "console-consumer", "get-offsets", "transactions"}
)
# Ours, not Kafka's: run consumer-groups on a --group the cluster does not have (see named_groups).
NEW_GROUP_FLAG = "--new-group"
LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def run_tool(
    version: str, tool: str, args: Sequence[str], timeout_s: float = 300.0, capture: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run Kafka's ``tool`` (a key of TOOLS) with ``args``; the caller checks the return code."""
    java = require_tool("java")
    libs = resolve_jars(version)
    cmd = [java, "-Xmx256m", "-cp", f"{libs}/*", TOOLS[tool], *args]
    return subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout_s, check=False)


def java_properties(kafka: KafkaConfig) -> str | None:
    """The Java client's properties for ``kafka``'s security settings; None on PLAINTEXT."""
    conf = security_settings(kafka)
    if conf["security.protocol"] == "PLAINTEXT":
        return None
    props = {"security.protocol": conf["security.protocol"]}
    if "sasl.mechanism" in conf:
        mechanism = conf["sasl.mechanism"]
        user, password = _jaas_quoted(conf["sasl.username"]), _jaas_quoted(conf["sasl.password"])
        props["sasl.mechanism"] = mechanism
        props["sasl.jaas.config"] = (
            f'{LOGIN_MODULES[mechanism]} required username="{user}" password="{password}";'
        )
    if "ssl.ca.location" in conf:
        props["ssl.truststore.type"] = "PEM"
        props["ssl.truststore.location"] = conf["ssl.ca.location"]
    return "".join(f"{key}={_escaped(value)}\n" for key, value in props.items())


def run_configured(
    kafka: KafkaConfig,
    version: str,
    tool: str,
    args: Sequence[str],
    timeout_s: float = 3600.0,
    capture: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``run_tool`` on the cluster of ``kafka``: its bootstrap servers and security settings
    are added unless ``args`` already name them, before the tool's own arguments (the
    transactions tool takes them only before its subcommand)."""
    extra: list[str] = []
    if tool in BOOTSTRAP_TOOLS and "--bootstrap-server" not in args:
        extra += ["--bootstrap-server", kafka.bootstrap_servers]
    props = None if "--command-config" in args else java_properties(kafka)
    if props is None:
        return run_tool(version, tool, [*extra, *args], timeout_s, capture)
    with tempfile.TemporaryDirectory(prefix="terra-xfer-tool-") as tmp:
        path = Path(tmp) / "client.properties"  # the directory is the user's alone (0700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(props)
        return run_tool(
            version, tool, [*extra, "--command-config", str(path), *args], timeout_s, capture
        )


def named_groups(args: Sequence[str]) -> list[str]:
    """The groups ``args`` of consumer-groups name with ``--group G`` or ``--group=G``.

    Kafka's tool answers a group the cluster does not have as it answers an empty one: describe
    prints a line and exits 0, and ``--reset-offsets --execute`` writes offsets for it, so a
    misspelt group in a replay runbook resets nothing and reports success. The wrapper checks
    these names first (``NEW_GROUP_FLAG`` skips the check, for offsets set before a first start).
    """
    groups: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--group" and i + 1 < len(args):
            groups.append(args[i + 1])
        elif arg.startswith("--group="):
            groups.append(arg.removeprefix("--group="))
    return groups


def existing_groups(kafka: KafkaConfig, timeout_s: float = 10.0) -> set[str]:
    """The consumer groups the cluster of ``kafka`` has (with members or committed offsets)."""
    admin = AdminClient(client_config(kafka))
    try:
        listed = admin.list_consumer_groups(request_timeout=timeout_s).result(timeout=timeout_s)
    except KafkaException as exc:
        raise TransientError(f"listing consumer groups: {exc}") from exc
    return {g.group_id for g in listed.valid}


def _jaas_quoted(value: str) -> str:
    """A JAAS option value inside double quotes: backslash and quote escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _escaped(value: str) -> str:
    """A value as java.util.Properties reads it back: backslashes doubled, line breaks escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
