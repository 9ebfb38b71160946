"""Where one benchmark run lives: the broker it uses, its directory, topics and config file.

Every run gets a fresh topic prefix and directory, so runs never see each other's events, and
removes both afterwards (topics, consumer groups, files), so the broker does not fill up.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from terra_xfer.broker import EmbeddedBroker, answers_metadata
from terra_xfer.config import Config, load
from terra_xfer.topics import create_topics

Settings = dict[str, dict[str, Any]]
DEMO_CONFIG = Path("examples/demo.toml")


@contextlib.contextmanager
def broker(config_path: Path = DEMO_CONFIG) -> Iterator[tuple[Config, bool]]:
    """The embedded broker of ``config_path``: started when it is not running, and then stopped
    again at the end (a broker that was already running is left running). Yields (config, started)."""
    config = load(config_path)
    b = config.broker
    node = EmbeddedBroker(b.port, b.data_dir, b.kafka_version, b.heap)
    started = False
    if not answers_metadata(config.kafka, 5.0):
        node.start(timeout_s=b.start_timeout_s)
        started = True
    try:
        yield config, started
    finally:
        if started:
            node.stop()


def broker_pid(config_path: Path = DEMO_CONFIG) -> int | None:
    """The process id of ``config_path``'s embedded broker, when it runs from its pidfile."""
    b = load(config_path).broker
    return EmbeddedBroker(b.port, b.data_dir, b.kafka_version, b.heap).pid()


def to_toml(settings: Mapping[str, Mapping[str, Any]]) -> str:
    """A TOML document of one level of tables holding strings, numbers, booleans and paths."""
    out: list[str] = []
    for section, values in settings.items():
        out.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, int | float):
                text = repr(value)
            else:
                text = json.dumps(str(value))  # a JSON string is a valid TOML basic string
            out.append(f"{key} = {text}")
        out.append("")
    return "\n".join(out)


class Workspace:
    """A directory, a topic prefix and a config file for one pipeline run."""

    def __init__(self, base: Path, name: str, bootstrap: str, partitions: int = 6) -> None:
        tag = uuid.uuid4().hex[:8]
        self.root = (base / f"{name}-{tag}").resolve()
        self.prefix = f"bench-{name}-{tag}."
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.config_path = self.root / "terra-xfer.toml"
        self.root.mkdir(parents=True)

    def settings(self, cache_root: Path | None = None) -> Settings:
        """The local defaults of examples/demo.toml, pointed at this workspace."""
        r = self.root
        return {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "topic_prefix": self.prefix,
                "partitions": self.partitions,
            },
            "gantry": {
                "xferlog": r / "log" / "xferlog",
                "cache_root": cache_root or r / "cache",
                "log_root": "/gantry_data",
            },
            "batcher": {"max_files": 500, "max_wait_s": 2.0},
            "transfer": {
                "backend": "local",
                "destination_root": r / "destination",
                "state_dir": r / "transfer",
            },
            "monitor": {"poll_initial_s": 0.2, "poll_max_s": 2.0},
            "catalog": {"backend": "local", "path": r / "catalog.sqlite"},
            "deleter": {"dry_run": False},
            "sweeper": {"min_age_s": 172800.0, "interval_s": 86400.0},
            "status": {
                "index_path": r / "status.sqlite",
                "keeper_path": r / "state-keeper.sqlite",
            },
            "metrics": {"port": 0},
        }

    def write(self, settings: Settings) -> Config:
        """Write the config file and create the topics; the config as the CLI will read it."""
        self.config_path.write_text(to_toml(settings), encoding="utf-8")
        config = load(self.config_path)
        config.gantry.xferlog.parent.mkdir(parents=True, exist_ok=True)
        config.gantry.xferlog.touch()
        config.gantry.cache_root.mkdir(parents=True, exist_ok=True)
        create_topics(config)
        return config

    def drop(self) -> None:
        """Delete this run's topics, consumer groups and directory."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(self.prefix)]
        for future in admin.delete_topics(topics, operation_timeout=30).values() if topics else []:
            with contextlib.suppress(Exception):  # already gone is as good as deleted
                future.result()
        listed = admin.list_consumer_groups(request_timeout=30).result()
        groups = [g.group_id for g in listed.valid if g.group_id.startswith(self.prefix)]
        for future in admin.delete_consumer_groups(groups).values() if groups else []:
            with contextlib.suppress(Exception):
                future.result()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def scratch_topics(bootstrap: str, *names: str, partitions: int = 6) -> Iterator[None]:
    """Topics created for one measurement and deleted after it, whatever happens in between."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result()
    try:
        yield
    finally:
        for future in admin.delete_topics(list(names)).values():
            future.result()


@contextlib.contextmanager
def workspace(base: Path, name: str, bootstrap: str) -> Iterator[Workspace]:
    ws = Workspace(base, name, bootstrap)
    try:
        yield ws
    finally:
        ws.drop()


def wait_ready(port: int, timeout_s: float, alive: Any = None) -> float:
    """Wait until ``/readyz`` on ``port`` answers 200 (every stage has stepped); seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if alive is not None and not alive():
            raise RuntimeError("the process exited before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - began
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"/readyz on port {port} did not answer 200 within {timeout_s:.0f} s")


def wait_groups_stable(bootstrap: str, groups: list[str], timeout_s: float) -> float:
    """Wait until every consumer group is Stable with partitions assigned; seconds waited."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        described = admin.describe_consumer_groups(groups, request_timeout=10)
        settled = 0
        for future in described.values():
            with contextlib.suppress(Exception):
                group = future.result()
                assigned = sum(len(m.assignment.topic_partitions) for m in group.members)
                settled += str(group.state).endswith("STABLE") and assigned > 0
        if settled == len(groups):
            return time.monotonic() - began
        time.sleep(0.2)
    raise TimeoutError(f"consumer groups {groups} were not stable within {timeout_s:.0f} s")
