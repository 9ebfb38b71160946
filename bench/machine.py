"""The machine and the software a benchmark ran on, for results.json and the table's header."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka
import fastavro

import terra_xfer


def _first_match(path: str, pattern: str) -> str | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    found = re.search(pattern, text, re.MULTILINE)
    return found.group(1).strip() if found else None


def _output(cmd: list[str], pattern: str) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(pattern, done.stdout + done.stderr)
    return found.group(1) if found else None


def _version_text(version: object) -> str:
    """confluent-kafka's version(): a string, or (string, int) in some releases."""
    return str(version[0] if isinstance(version, tuple) else version)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def describe(kafka_version: str) -> dict[str, Any]:
    """CPU count and model, RAM, kernel, and the versions of everything measured."""
    mem_kib = _first_match("/proc/meminfo", r"^MemTotal:\s+(\d+)")
    kcat = _output(["kcat", "-V"], r"Version (\S+)")
    kcat_rdkafka = _output(["kcat", "-V"], r"librdkafka (\S+)")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _first_match("/proc/cpuinfo", r"^model name\s*:\s*(.+)$")
        or platform.machine(),
        "ram_gib": round(int(mem_kib) / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {
            "terra-xfer": terra_xfer.__version__,
            "Python": platform.python_version(),
            "Kafka (embedded broker)": kafka_version,
            "confluent-kafka": _version_text(confluent_kafka.version()),
            "librdkafka": confluent_kafka.libversion()[0],
            "fastavro": fastavro.__version__,
            "kcat": f"{kcat} (librdkafka {kcat_rdkafka})" if kcat else "not installed",
            "Java": _output(["java", "-version"], r'version "([^"]+)"') or "not installed",
        },
    }
