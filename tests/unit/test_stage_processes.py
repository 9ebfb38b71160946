"""`up --processes`: every stage in a process of its own, stopped together, failures not hidden.

The children are real spawned processes; their stages are small stand-ins built by
:func:`stand_in` (no broker), which record their steps and their closing in files. The children
import this module before they choose where their metrics go: it must not import
prometheus_client (nor ``terra_xfer.metrics``) at its top.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from terra_xfer.config import Config
from terra_xfer.errors import TransientError
from terra_xfer.runner import MULTIPROC_DIR_ENV, ProcessRunner, StageProcessError, loop
from terra_xfer.stages import gc_tuning as heap


class StandIn:
    """Handles one item per step for five steps, then idles; ``fail`` raises at the third."""

    def __init__(self, where: Path, fail: bool) -> None:
        self.where, self.fail, self.steps = where, fail, 0

    def step(self) -> int:
        self.steps += 1
        if self.fail and self.steps == 3:
            raise RuntimeError("the stage breaks")
        if self.steps == 2:
            raise TransientError("the broker is away for a moment")
        return 1 if self.steps <= 6 else 0

    def close(self) -> None:
        # What the process's collector was set to while the stage ran (terra_xfer.stages.gc_tuning).
        self.where.write_text(f"{gc.get_threshold()} {gc.get_freeze_count() > 0}")


@contextlib.contextmanager
def stand_in(config: Config, name: str) -> Iterator[StandIn]:
    yield StandIn(config.status.index_path.with_name(f"{name}.closed"), fail=name == "broken")


def config_in(tmp_path: Path) -> Config:
    base = Config()
    return dataclasses.replace(
        base, status=dataclasses.replace(base.status, index_path=tmp_path / "status.sqlite")
    )


def test_stage_processes_step_until_stopped_and_close_their_stages(tmp_path: Path) -> None:
    stepped: set[str] = set()
    runner = ProcessRunner(
        config_in(tmp_path), ["a", "b"], on_step=stepped.add, builder=stand_in
    ).start()
    try:
        assert runner.wait(lambda: all(t.handled == 5 for t in runner.threads), timeout_s=60)
        assert runner.wait(lambda: stepped == {"a", "b"}, timeout_s=10)
    finally:
        runner.join(timeout_s=30)
    assert {t.name: t.handled for t in runner.threads} == {"a": 5, "b": 5}
    assert [t.process.exitcode for t in runner.threads] == [0, 0]
    assert (tmp_path / "a.closed").exists() and (tmp_path / "b.closed").exists()
    settled = f"{heap.THRESHOLDS} True"  # each child froze its start-up and collects less often
    assert (tmp_path / "a.closed").read_text() == settled


def test_a_failing_stage_process_stops_every_stage(tmp_path: Path) -> None:
    runner = ProcessRunner(config_in(tmp_path), ["broken", "fine"], builder=stand_in).start()
    try:
        assert not runner.wait(lambda: False, timeout_s=60)  # ends early: the runner stopped
    finally:
        with pytest.raises(StageProcessError, match="broken"):
            runner.join(timeout_s=30)
    assert (tmp_path / "broken.closed").exists()  # closed on the way out
    assert (tmp_path / "fine.closed").exists()
    assert [t.process.exitcode for t in runner.threads] == [1, 0]


def test_the_loop_retries_transient_errors_and_counts_what_it_handled() -> None:
    class Stop:
        def __init__(self) -> None:
            self.waits: list[float] = []

        def is_set(self) -> bool:
            return len(self.waits) >= 3

        def wait(self, timeout: float | None = None) -> bool:
            self.waits.append(timeout or 0.0)
            return self.is_set()

    class Count:
        handled = 0

    stage, stop, count = StandIn(Path("/nonexistent"), fail=False), Stop(), Count()
    stage.steps = 4  # two more items, then idle
    loop("x", stage.step, stop, 0.05, count)
    assert count.handled == 2
    assert stop.waits == [0.05, 0.05, 0.05]


class Measured:
    """Three steps, each counting one file of sensor ``shared`` and one of its own, observing a
    batch and setting gauges; stage ``a`` alone sets the cache-disk gauge. Then idles."""

    def __init__(self, name: str) -> None:
        self.name, self.steps = name, 0

    def step(self) -> int:
        from terra_xfer import metrics  # here, in the child, after it chose its metrics directory

        if self.steps == 3:
            return 0
        self.steps += 1
        metrics.count_file("arrived", "shared", 100)
        metrics.count_file("arrived", self.name, 1)
        metrics.observe_batch([{"mtime_ns": 0}] * self.steps, now_s=5.0)
        metrics.TAILER_POSITION.labels(self.name).set(10 * self.steps)
        if self.name == "a":
            metrics.CACHE_DISK.set(0.25 * self.steps)
        return 1

    def close(self) -> None:
        pass


@contextlib.contextmanager
def measured(config: Config, name: str) -> Iterator[Measured]:
    yield Measured(name)


def test_stage_processes_metrics_are_gathered_as_one_process_would_count_them(
    tmp_path: Path,
) -> None:
    from terra_xfer import metrics

    with metrics.shared_dir() as where:
        assert stat.S_IMODE(os.stat(where).st_mode) == 0o700
        registry = metrics.gathered(where)
        runner = ProcessRunner(
            config_in(tmp_path), ["a", "b"], builder=measured, metrics_dir=where
        ).start()
        try:
            assert runner.wait(lambda: all(t.handled == 3 for t in runner.threads), timeout_s=60)
            pids = {str(t.process.pid) for t in runner.threads}
            written = {f.rsplit("_", 1)[1].removesuffix(".db") for f in os.listdir(where)}
            assert pids <= written  # each child wrote its own files

            def value(name: str, **labels: str) -> float | None:
                return registry.get_sample_value(name, labels)

            files = "terra_xfer_files_total"
            assert value(files, stage="arrived", sensor="shared") == 6  # 3 from each process
            assert value(files, stage="arrived", sensor="a") == 3
            assert value(files, stage="arrived", sensor="b") == 3
            assert value("terra_xfer_bytes_total", stage="arrived", sensor="shared") == 600
            assert value("terra_xfer_batch_files_count") == 6
            assert value("terra_xfer_batch_files_sum") == 2 * (1 + 2 + 3)
            assert value("terra_xfer_batch_files_bucket", le="1.0") == 2
            assert value("terra_xfer_tailer_position_bytes", source="a") == 30  # the last set
            assert value("terra_xfer_tailer_position_bytes", source="b") == 30
            assert value("terra_xfer_cache_disk_used_ratio") == 0.75  # b never set it
            assert value("terra_xfer_oldest_untransferred_age_seconds") == 0  # nobody set it
            labels = {
                name for family in registry.collect() for s in family.samples for name in s.labels
            }
            assert "pid" not in labels  # every gauge reads as one series, as in one process
        finally:
            runner.join(timeout_s=30)
        assert MULTIPROC_DIR_ENV not in os.environ  # set in the children only
    assert not os.path.exists(where)
