"""Kafka's own console tools from the embedded broker's jars (consumer groups, perf test, ...).

``terra-xfer kafka-tool consumer-groups --bootstrap-server ... --reset-offsets ...`` runs exactly what
``kafka-consumer-groups.sh`` runs, so replay runbooks work the same here and on a real cluster.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from terra_xfer.broker import require_tool, resolve_jars

TOOLS = {
    "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "topics": "org.apache.kafka.tools.TopicCommand",
    "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "get-offsets": "org.apache.kafka.tools.GetOffsetShell",
}


def run_tool(
    version: str, tool: str, args: Sequence[str], timeout_s: float = 300.0, capture: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run Kafka's ``tool`` (a key of TOOLS) with ``args``; the caller checks the return code."""
    java = require_tool("java")
    libs = resolve_jars(version)
    cmd = [java, "-Xmx256m", "-cp", f"{libs}/*", TOOLS[tool], *args]
    return subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout_s, check=False)
