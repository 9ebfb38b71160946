"""Prometheus metrics of every stage: one registry, the metric definitions and their updates.

One registry for the process (``REGISTRY``), so ``terra-xfer up`` serves every stage's series from
one port. Metric names are a contract with the alert rules and the Grafana dashboard
(``deploy/k8s/base/terra-xfer-dashboard.json``): rename nothing without changing both.

Counters count events as a stage emits them, inside its transaction: a transaction aborted and
retried counts its events again, so the counters are an upper bound of what was committed (the
difference is rare and small; files.state stays the authority on what happened to each file).

Nothing is served at import time: ``terra_xfer.metrics_http.serve`` exposes ``REGISTRY`` when the
CLI runs a stage.

With ``up`` running a process per stage (its default), each stage process writes these same metrics
to files in a directory that the parent shares with it (prometheus_client's multiprocess mode,
chosen by the stage process before it imports this module), and the parent serves :func:`gathered`
over that directory: the counters and histograms of every process added up, each gauge as its
``multiprocess_mode`` says: its last value (``mostrecent``), as in one process.

Every gauge has labels, so it is exported only by the stage that sets it, never as 0 by the others
(a gauge without labels would be, by every process that imports this module): when its owner is
gone the gauge is absent, ``max()`` over the pods is not fooled into reading 0, and the alerts say
so (deploy/k8s/base/alerts.yaml). Every running stage exports ``terra_xfer_stage_retrying`` from
its start, which tells those alerts where terra-xfer runs."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)
UNKNOWN_SENSOR = "unknown"

REGISTRY = CollectorRegistry()
FILES = PromCounter(
    "terra_xfer_files_total",
    "Files per stage event (arrived, requeued, transferred, failed, ingested, deleted) and sensor.",
    ["stage", "sensor"],
    registry=REGISTRY,
)
BYTES = PromCounter(
    "terra_xfer_bytes_total",
    "Bytes of the files counted in terra_xfer_files_total.",
    ["stage", "sensor"],
    registry=REGISTRY,
)
DEAD_LETTERS = PromCounter(
    "terra_xfer_dead_letters_total",
    "Messages or log lines sent to the dead-letter topic, by source and reason class.",
    ["source", "reason"],
    registry=REGISTRY,
)
BATCH_FILES = Histogram(
    "terra_xfer_batch_files",
    "Files per submitted transfer batch.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 5000),
    registry=REGISTRY,
)
BATCH_WINDOWS = PromCounter(
    "terra_xfer_batch_windows_closed_total",
    "Batching windows closed with files, by why: files (max_files), bytes (max_bytes), waited"
    " (max_wait_s) or idle (the batcher's transfers were idle and it had read all there was).",
    ["why"],
    registry=REGISTRY,
)
BATCH_AGE = Histogram(
    "terra_xfer_batch_age_seconds",
    "Age (since its mtime) of a batch's oldest file when the batch is submitted.",
    buckets=(1, 10, 30, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400),
    registry=REGISTRY,
)
TASKS = Gauge(
    "terra_xfer_tasks",
    "Transfer tasks being followed, by last status.",
    ["status"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
TASK_DURATION = Histogram(
    "terra_xfer_task_duration_seconds",
    "From the first poll of a transfer task to its final status, by that status (SUCCEEDED, "
    'FAILED): its _count{status="FAILED"} counts the tasks that failed.',
    ["status"],
    buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 2 * 3600, 6 * 3600, 12 * 3600, 86400),
    registry=REGISTRY,
)
OLDEST_UNTRANSFERRED = Gauge(
    "terra_xfer_oldest_untransferred_age_seconds",
    "Since the last state change of the oldest file not yet transferred, per untransferred state "
    "(ARRIVED, BATCHED, FAILED; 0: no file in it). Set by the sweeper.",
    ["state"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
FILES_BY_STATE = Gauge(
    "terra_xfer_files_by_state",
    "Files per state in files.state.",
    ["state"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
TAILER_POSITION = Gauge(
    "terra_xfer_tailer_position_bytes",
    "Byte offset of the gantry tailer's checkpoint in the file it reads.",
    ["source"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
TAILER_BEHIND = Gauge(
    "terra_xfer_tailer_bytes_behind",
    "Bytes of the live log not yet read (the whole live log while a rotated file is read).",
    ["source"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
CACHE_DISK = Gauge(
    "terra_xfer_cache_disk_used_ratio",
    "Used fraction of the file system holding the cache root, as the gantry producer following "
    "the log source sees it.",
    ["source"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
_GTP = ["group", "topic", "partition"]
CONSUMER_LAG = Gauge(
    "terra_xfer_consumer_lag_messages",
    "Offsets from the group's oldest unconsumed record to the last stable offset (0 when only "
    "transaction markers are left), per group (terra_xfer/lag.py).",
    _GTP,
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
CONSUMER_LAG_SECONDS = Gauge(
    "terra_xfer_consumer_lag_seconds",
    "Age of the oldest record the group has not consumed (0 when none).",
    _GTP,
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
COMMITTED_OFFSET = Gauge(
    "terra_xfer_committed_offset",
    "Committed offset of the group.",
    _GTP,
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
GROUP_MEMBERS = Gauge(
    "terra_xfer_group_members",
    "Members of a consumer group.",
    ["group"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
STAGE_RETRIES = PromCounter(
    "terra_xfer_stage_retries_total",
    "Steps of a stage that failed with a transient error (broker or remote service away) and were "
    "retried with backoff.",
    ["stage"],
    registry=REGISTRY,
)
STAGE_RETRYING = Gauge(
    "terra_xfer_stage_retrying",
    "1 while a stage is backing off after transient errors, else 0 (every running stage exports "
    "it from its start).",
    ["stage"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
INGEST_ATTEMPTS = PromCounter(
    "terra_xfer_ingest_attempts_total",
    "Catalog attempts of ingest per file, by outcome: ingested, refused (a final failure) or "
    "transient (the file waits for another attempt).",
    ["outcome"],
    registry=REGISTRY,
)
INGEST_WAITING = Gauge(
    "terra_xfer_ingest_waiting_files",
    "Files ingest has consumed and not finished: waiting for a catalog attempt, mostly another "
    "one after a transient failure.",
    ["catalog"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
INGEST_OLDEST_WAITING = Gauge(
    "terra_xfer_ingest_oldest_waiting_seconds",
    "Since the longest-waiting file held by ingest was consumed (0: none waits).",
    ["catalog"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
CATALOG_CIRCUIT = Gauge(
    "terra_xfer_catalog_circuit_state",
    "The remote catalog's circuit breaker: 0 closed, 1 half-open (one trial request goes), "
    "2 open (no request goes while the catalog keeps failing).",
    ["catalog"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
STAGE_RESTARTS = PromCounter(
    "terra_xfer_stage_restarts_total",
    "Stages that ended on their own (crashed, fenced, stalled, killed) and were started again by "
    "up, by stage and cause.",
    ["stage", "cause"],
    registry=REGISTRY,
)
COPY_SEEDS = PromCounter(
    "terra_xfer_copy_seeds_total",
    "Local copies of files.state that started empty, by copy and by outcome: seeded (from a "
    "peer's snapshot, [status] seed_from) or none (no peer gave one: rebuilt from the topic).",
    ["store", "outcome"],
    registry=REGISTRY,
)
LOCAL_ROWS_PRUNED = PromCounter(
    "terra_xfer_local_rows_pruned_total",
    "Settled files let go by a stage's local copy of files.state after [status] "
    "retain_settled_days (files.state and the status index keep them), by copy.",
    ["store"],
    registry=REGISTRY,
)

# Short reason classes for dead letters: the first pattern found in the reason text names it.
_REASONS: tuple[tuple[str, str], ...] = (
    ("longer than the", "oversize"),
    ("middle of a line", "fragment"),
    ("missing from the cache", "missing"),
    ("not a regular file", "not_regular"),
    ("NUL byte", "unsafe"),
    ("'..'", "unsafe"),
    ("outside the log root", "unsafe"),
    ("names a directory", "unsafe"),
    ("does not follow", "unrecognised"),
    ("no published schema", "unknown_schema"),
    ("corrupt", "corrupt_event"),
    ("not an Avro", "corrupt_event"),
    ("is not an event", "unexpected_event"),
)


def reason_class(reason: str, default: str = "malformed") -> str:
    """A short, bounded class for a dead letter's free-text reason (a safe label value)."""
    for pattern, name in _REASONS:
        if pattern in reason:
            return name
    return default


def sensor_of(where: object) -> str:
    """The sensor of a classified cache path, or ``unknown`` for a path that has none."""
    sensor = getattr(where, "sensor", None)
    return sensor if isinstance(sensor, str) and sensor else UNKNOWN_SENSOR


def count_file(stage: str, sensor: str | None, size: int, files: int = 1) -> None:
    """``files`` file events of ``stage`` (arrived, requeued, transferred, failed, ingested,
    deleted). ``arrived`` is a producer's announcement; the sweeper's announcements (a file
    offered again, or one whose log line was lost) are ``requeued``, so the arrivals on the
    dashboard count no file twice."""
    label = sensor or UNKNOWN_SENSOR
    FILES.labels(stage, label).inc(files)
    BYTES.labels(stage, label).inc(max(0, size))


def count_dead_letter(source: str, reason: str) -> None:
    DEAD_LETTERS.labels(source, reason_class(reason)).inc()


def observe_batch(files: Sequence[Mapping[str, Any]], now_s: float | None = None) -> None:
    """A submitted batch: its size, and the age of its oldest file (by mtime)."""
    BATCH_FILES.observe(len(files))
    if files:
        oldest_s = min(int(f["mtime_ns"]) for f in files) / 1e9
        BATCH_AGE.observe(max(0.0, (time.time() if now_s is None else now_s) - oldest_s))


class TaskGauge:
    """Tasks in flight by last status, and each task's duration once it is final."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.tasks: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def observe(self, task_id: str, status: str, final: bool) -> None:
        with self._lock:
            _, first = self.tasks.get(task_id, (status, self.clock()))
            if final:
                self.tasks.pop(task_id, None)
                TASK_DURATION.labels(status).observe(self.clock() - first)
            else:
                self.tasks[task_id] = (status, first)
            counts: dict[str, int] = {s: 0 for s in ("ACTIVE", "INACTIVE")}
            for s, _ in self.tasks.values():
                counts[s] = counts.get(s, 0) + 1
        for s, n in counts.items():
            TASKS.labels(s).set(n)


TASK_GAUGE = TaskGauge()


def observe_task(task_id: str, status: object, final: bool) -> None:
    """A polled transfer task (``status`` as the backend names it)."""
    TASK_GAUGE.observe(task_id, str(getattr(status, "value", status)), final)


class Position(Protocol):
    """A tailer checkpoint: the file it is in (device, inode) and the offset in it."""

    @property
    def dev(self) -> int: ...

    @property
    def ino(self) -> int: ...

    @property
    def offset(self) -> int: ...


def observe_tailer(source: str, live_log: str, checkpoint: Position, cache_root: str) -> None:
    """The tailer's checkpoint, the bytes of the live log behind it, and the cache disk usage
    (all three labelled by ``source``, the log followed)."""
    TAILER_POSITION.labels(source).set(checkpoint.offset)
    try:
        st = os.stat(live_log)
    except OSError:
        behind = 0
    else:
        on_live = (st.st_dev, st.st_ino) == (checkpoint.dev, checkpoint.ino)
        behind = max(0, st.st_size - checkpoint.offset) if on_live else st.st_size
    TAILER_BEHIND.labels(source).set(behind)
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(cache_root)
        CACHE_DISK.labels(source).set(usage.used / usage.total if usage.total else 0.0)


class StateCounts(Protocol):
    def counts_by_state(self) -> dict[str, int]: ...


class OldestChanges(Protocol):
    def oldest_updated_ms(self, states: Iterable[str]) -> dict[str, int]: ...


UNTRANSFERRED = ("ARRIVED", "BATCHED", "FAILED")


def observe_counts(index: StateCounts) -> None:
    """Files per state, from an index that holds every file (the status index)."""
    counts = index.counts_by_state()
    for state in {*counts, *UNTRANSFERRED, "DONE"}:
        FILES_BY_STATE.labels(state).set(counts.get(state, 0))


def observe_oldest(index: OldestChanges, now_ms: int | None = None) -> None:
    """For each untransferred state, how long its oldest file has been in it, from an index that
    holds every file not settled (any view)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    oldest = index.oldest_updated_ms(UNTRANSFERRED)
    for state in UNTRANSFERRED:
        since = oldest.get(state)
        OLDEST_UNTRANSFERRED.labels(state).set(0.0 if since is None else max(0, now - since) / 1000)


class Periodic:
    """Runs ``action`` at most every ``interval_s``; a failure is logged (as ``what`` failing),
    never raised: the next call tries again."""

    def __init__(
        self,
        interval_s: float,
        action: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        what: str = "publishing metrics",
    ) -> None:
        self.interval_s = interval_s
        self.action = action
        self.clock = clock
        self.what = what
        self._next = 0.0

    def maybe(self) -> bool:
        if self.clock() < self._next:
            return False
        self._next = self.clock() + self.interval_s
        try:
            self.action()
        except Exception as exc:  # never stops a stage; the next call tries again
            log.warning("%s failed: %s", self.what, exc)
        return True


def exported_names() -> set[str]:
    """Every series name the registry can expose (``_total``, ``_bucket``, ``_sum``, ``_count``)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


@contextlib.contextmanager
def shared_dir() -> Iterator[str]:
    """A new private directory (mode 0700) where stage processes write their metrics; removed,
    with every file in it, when the block ends."""
    path = tempfile.mkdtemp(prefix="terra-xfer-metrics-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def gathered(path: str) -> CollectorRegistry:
    """A registry of the series that every stage process wrote under ``path``, read afresh at
    each scrape: counters and histograms added up, each gauge merged by its ``multiprocess_mode``;
    with the supervisor's own series (stage restarts), which only the supervisor writes.
    """
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]  # untyped upstream
    registry.register(STAGE_RESTARTS)
    return registry
