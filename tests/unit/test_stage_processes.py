"""``up``'s supervisor (:mod:`terra_xfer.stages.supervisor`): a process per stage, stopped
together, restarted when one ends, stopped by a configuration error, never outliving it.

The children are real processes running the stage host; their stages are small stand-ins (no
broker) made by the factories below. The registry entry is pickled to the child, so each factory
is a function of this module, which the child imports by name: the child's environment puts the
repository first on its path.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from terra_xfer import metrics
from terra_xfer.config import Config
from terra_xfer.errors import ConfigError, TransientError
from terra_xfer.stages import gc_tuning
from terra_xfer.stages.child import EXIT_ORPHANED, process_name
from terra_xfer.stages.spec import Factory, Stage, StageSpec, Wiring
from terra_xfer.stages.supervisor import MULTIPROC_DIR_ENV, Supervisor
from tests.supervision import Proc, alive, children_of, survivors

REPO = Path(__file__).resolve().parents[2]
FAILED = "failed (exit 1; its log says why)"


class StandIn:
    """Handles one item per step for five items, a transient error at its second step, then
    idles. ``fail``: raises at its third step. On closing, writes what the process's collector
    was set to (:mod:`terra_xfer.stages.gc_tuning`) to ``where``."""

    def __init__(self, where: Path, fail: bool = False) -> None:
        self.where, self.fail, self.steps = where, fail, 0

    def step(self) -> int:
        self.steps += 1
        if self.fail and self.steps == 3:
            raise RuntimeError("the stage breaks")
        if self.steps == 2:
            raise TransientError("the broker is away for a moment")
        return 1 if self.steps <= 6 else 0

    def close(self) -> None:
        self.where.write_text(f"{gc.get_threshold()} {gc.get_freeze_count() > 0}")


def beside_index(w: Wiring, suffix: str) -> Path:
    return w.config.status.index_path.with_name(f"{w.spec.name}.{suffix}")


def stand_in(w: Wiring) -> Stage:
    """A :class:`StandIn`; the one called ``broken`` fails in its first process only."""
    first_run = beside_index(w, "failed")
    fail = w.spec.name == "broken" and not first_run.exists()
    if fail:
        first_run.touch()
    return StandIn(beside_index(w, "closed"), fail)


class Stuck:
    """Handles one item, then never returns from its second step (a call that hangs)."""

    def __init__(self) -> None:
        self.steps = 0

    def step(self) -> int:
        self.steps += 1
        if self.steps > 1:
            threading.Event().wait()
        return 1

    def close(self) -> None:
        pass


def stuck(w: Wiring) -> Stage:
    return Stuck()


SLOW_IMPORT_S = 30.0


def slow_import() -> str:
    """What unpickling a :class:`SlowToLoad` calls: a stage whose modules take long to import
    (a child does this while it reads its orders). Not a synchronisation: it only takes time."""
    time.sleep(SLOW_IMPORT_S)
    return "slow to load"


class SlowToLoad(str):
    def __reduce__(self) -> tuple[Callable[[], str], tuple[()]]:
        return slow_import, ()


def misconfigured(w: Wiring) -> Stage:
    raise ConfigError("[stand-in] wants a setting it was not given")


class Measured:
    """Three steps, each counting one file of sensor ``shared`` and one of its own, observing a
    batch and setting gauges; stage ``a`` alone sets the cache-disk gauge. Then idles."""

    def __init__(self, name: str) -> None:
        self.name, self.steps = name, 0

    def step(self) -> int:
        if self.steps == 3:
            return 0
        self.steps += 1
        metrics.count_file("arrived", "shared", 100)
        metrics.count_file("arrived", self.name, 1)
        metrics.observe_batch([{"mtime_ns": 0}] * self.steps, now_s=5.0)
        metrics.TAILER_POSITION.labels(self.name).set(10 * self.steps)
        if self.name == "a":
            metrics.CACHE_DISK.labels("xferlog").set(0.25 * self.steps)
        return 1

    def close(self) -> None:
        pass


def measured(w: Wiring) -> Stage:
    return Measured(w.spec.name)


def spec(name: str, build: Factory = stand_in) -> StageSpec:
    return StageSpec(name, f"stand-in {name}", build, deployment=None)


def config_in(tmp_path: Path) -> Config:
    base = Config()
    return dataclasses.replace(
        base, status=dataclasses.replace(base.status, index_path=tmp_path / "status.sqlite")
    )


def child_env() -> dict[str, str]:
    """This environment, with the repository first on the path (the children import this
    module, wherever they run)."""
    path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def tick_until(supervisor: Supervisor, done: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Let ``supervisor`` watch its children until ``done()`` holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"not reached in {timeout_s} s: {supervisor.handled}"
        supervisor.tick(0.1)


def restarts_counted(stage: str, cause: str, registry: object = metrics.REGISTRY) -> float:
    value = registry.get_sample_value(  # type: ignore[attr-defined]
        "terra_xfer_stage_restarts_total", {"stage": stage, "cause": cause}
    )
    return value or 0.0


def test_stage_processes_step_until_stopped_and_close_their_stages(tmp_path: Path) -> None:
    stepped: set[str] = set()
    supervisor = Supervisor(
        config_in(tmp_path), [spec("a"), spec("b")], on_step=stepped.add, env=child_env()
    ).start()
    procs = [c.proc for c in supervisor.children]
    try:
        tick_until(supervisor, lambda: supervisor.handled == {"a": 5, "b": 5})
        assert stepped == {"a", "b"}
        names = [Path(f"/proc/{p.pid}/comm").read_text().strip() for p in procs if p]
        assert names == [process_name("a"), process_name("b")]
        assert not (tmp_path / "a.closed").exists()  # still running: stepping with nothing to do
    finally:
        supervisor.stop(30)
    assert [p.returncode for p in procs if p] == [0, 0]  # stopped when told, not killed
    assert supervisor.handled == {"a": 5, "b": 5}
    assert [c.restarts.count for c in supervisor.children] == [0, 0]
    settled = f"{gc_tuning.THRESHOLDS} True"  # each child froze its start-up, collects less often
    assert (tmp_path / "a.closed").read_text() == settled
    assert (tmp_path / "b.closed").read_text() == settled


def test_a_stage_process_that_fails_is_started_again_while_the_others_run_on(
    tmp_path: Path,
) -> None:
    before = restarts_counted("broken", FAILED)
    with metrics.shared_dir() as where:
        supervisor = Supervisor(
            config_in(tmp_path), [spec("broken"), spec("fine")], metrics_dir=where, env=child_env()
        ).start()
        broken, fine = supervisor.children
        first = broken.proc
        try:
            # 1 item by the first process, 5 by the second
            tick_until(supervisor, lambda: supervisor.handled == {"broken": 6, "fine": 5})
            assert first is not None and first.returncode == 1
            assert broken.restarts.count == 1 and len(broken.pids) == 2
            assert broken.proc is not None and broken.proc.poll() is None
            assert fine.restarts.count == 0 and len(fine.pids) == 1
            assert fine.proc is not None and fine.proc.poll() is None  # never stopped
            assert restarts_counted("broken", FAILED) == before + 1
            served = metrics.gathered(where)  # what up serves on its port
            assert restarts_counted("broken", FAILED, served) == before + 1
            assert served.get_sample_value("terra_xfer_stage_retries_total", {"stage": "fine"}) == 1
        finally:
            supervisor.stop(30)
    assert (tmp_path / "broken.closed").exists() and (tmp_path / "fine.closed").exists()


def test_a_configuration_error_in_a_stage_stops_the_supervisor(tmp_path: Path) -> None:
    supervisor = Supervisor(
        config_in(tmp_path), [spec("misconfigured", misconfigured), spec("fine")], env=child_env()
    ).start()
    failing, fine = supervisor.children
    try:
        deadline = time.monotonic() + 60
        with pytest.raises(ConfigError, match="misconfigured"):
            while time.monotonic() < deadline:
                supervisor.tick(0.1)
        assert failing.restarts.count == 0 and failing.start_at is None  # not started again
        assert fine.proc is not None and fine.proc.poll() is None
    finally:
        supervisor.stop(30)
    assert len(failing.pids) == 1


def test_a_stage_process_whose_life_line_closes_exits_at_once(tmp_path: Path) -> None:
    supervisor = Supervisor(config_in(tmp_path), [spec("a")], env=child_env()).start()
    (child,) = supervisor.children
    try:
        tick_until(supervisor, lambda: supervisor.handled == {"a": 5})
        proc = child.proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.close()  # what the kernel does to the pipe when the supervisor is gone
        assert proc.wait(30) == EXIT_ORPHANED
    finally:
        supervisor.stop(30)


def test_stage_processes_metrics_are_gathered_as_one_process_would_count_them(
    tmp_path: Path,
) -> None:
    with metrics.shared_dir() as where:
        assert stat.S_IMODE(os.stat(where).st_mode) == 0o700
        registry = metrics.gathered(where)
        supervisor = Supervisor(
            config_in(tmp_path),
            [spec("a", measured), spec("b", measured)],
            metrics_dir=where,
            env=child_env(),
        ).start()
        try:
            tick_until(supervisor, lambda: supervisor.handled == {"a": 3, "b": 3})
            pids = {str(c.proc.pid) for c in supervisor.children if c.proc}
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
            assert value("terra_xfer_cache_disk_used_ratio", source="xferlog") == 0.75  # a's last
            # b never set it, and nobody set this: absent, not 0 (gauges have labels)
            assert not [
                s
                for family in registry.collect()
                for s in family.samples
                if s.name
                in (
                    "terra_xfer_oldest_untransferred_age_seconds",
                    "terra_xfer_catalog_circuit_state",
                )
            ]
            labels = {
                name for family in registry.collect() for s in family.samples for name in s.labels
            }
            assert "pid" not in labels  # every gauge reads as one series, as in one process
        finally:
            supervisor.stop(30)
        assert MULTIPROC_DIR_ENV not in os.environ  # set in the children only
    assert not os.path.exists(where)


# A supervisor of three stand-ins in a process of its own: it prints its children's pids once
# each has stepped, then supervises them until it is killed. One of them is stuck in a step: it
# reports nothing more, so only its life line and the kernel can tell it the supervisor is gone.
SUPERVISOR = """
import sys
from pathlib import Path
from tests.unit.test_stage_processes import config_in, spec, stuck
from terra_xfer.stages.supervisor import Supervisor

stepped = set()
supervisor = Supervisor(config_in(Path(sys.argv[1])), [spec("a"), spec("b"), spec("c", stuck)],
                        on_step=stepped.add).start()
while stepped != {"a", "b", "c"}:
    supervisor.tick(0.1)
print(" ".join(str(c.proc.pid) for c in supervisor.children), flush=True)
while True:
    supervisor.tick(1.0)
"""


# A supervisor whose three stand-ins take SLOW_IMPORT_S to load, as stages whose modules are slow
# to import: it prints their pids as soon as they are started and is killed while they are still
# reading their orders, before any of them could watch its life line.
STARTING = """
import sys
from pathlib import Path
from tests.unit.test_stage_processes import SlowToLoad, config_in, spec
from terra_xfer.stages.supervisor import Supervisor
import dataclasses

slow = [dataclasses.replace(spec(name), help=SlowToLoad()) for name in "abc"]
supervisor = Supervisor(config_in(Path(sys.argv[1])), slow).start()
print(" ".join(str(c.proc.pid) for c in supervisor.children), flush=True)
while True:
    supervisor.tick(1.0)
"""


@pytest.mark.parametrize("script", [SUPERVISOR, STARTING], ids=["stepping", "still-starting"])
def test_no_stage_process_outlives_its_supervisor_killed_with_sigkill(
    tmp_path: Path, script: str
) -> None:
    supervisor = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    children: list[Proc] = []
    try:
        assert supervisor.stdout is not None
        line = supervisor.stdout.readline()  # once every child has stepped
        pids = {int(p) for p in line.split()}
        children = children_of(supervisor.pid)
        assert len(pids) == 3 and {c.pid for c in children} == pids
        assert all(alive(c) for c in children)
        os.kill(supervisor.pid, signal.SIGKILL)  # the supervisor alone, not its process group
        assert survivors(children, within_s=2.0) == []
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        supervisor.wait(30)
        if supervisor.stdout is not None:
            supervisor.stdout.close()
        for left in survivors(children, 0):
            os.kill(left.pid, signal.SIGKILL)


def test_a_stage_process_log_can_be_relayed_line_by_line_instead_of_written_here(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    relayed: list[bytes] = []
    supervisor = Supervisor(
        config_in(tmp_path), [spec("broken")], env=child_env(), relay=relayed.append
    ).start()
    try:
        tick_until(supervisor, lambda: supervisor.handled == {"broken": 6})
    finally:
        supervisor.stop(30)
    text = b"".join(relayed).decode()
    assert "stage broken failed" in text  # its first process's last words
    assert "the broker is away for a moment" in text  # a retry, from both processes
    assert all(chunk.endswith(b"\n") for chunk in relayed)  # whole lines only
    assert "stage broken failed" not in capfd.readouterr().err  # not written to this stderr
