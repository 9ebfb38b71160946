"""The local transfer backend: atomic verified copies run as resumable background tasks."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.transfer import local_copy
from consumers.transfer.base import (
    TaskState,
    TaskStatus,
    TransferBackend,
    TransferItem,
    TransferNotFoundError,
    TransferPermanentError,
)
from consumers.transfer.local import LocalTransfer
from consumers.transfer.local_copy import FileCopier, destination_path
from consumers.transfer.local_store import HOST, TaskRecord, TaskStore


class Tree:
    """A cache directory, a destination root and a state directory under one tmp_path."""

    def __init__(self, root: Path) -> None:
        self.cache = root / "cache"
        self.dest = root / "dest"
        self.state = root / "state"
        self.cache.mkdir()

    def file(self, rel: str, data: bytes, dest: str | None = None) -> TransferItem:
        path = self.cache / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        st = path.stat()
        return TransferItem(
            f"ua-mac/{rel}", str(path), dest or f"raw/{rel}", st.st_size, st.st_mtime_ns
        )

    def backend(self, **kwargs: float) -> LocalTransfer:
        return LocalTransfer(self.dest, self.state, flush_interval_s=0.05, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


@pytest.fixture
def backend(tree: Tree) -> Iterator[LocalTransfer]:
    transfer = tree.backend()
    yield transfer
    transfer.close()


def wait_final(backend: TransferBackend, task_id: str, timeout_s: float = 20.0) -> TaskState:
    """Poll the task as the monitor does, until it is final or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = backend.task(task_id)
        if state.is_final:
            return state
        assert time.monotonic() < deadline, f"task {task_id} still {state.status}"
        time.sleep(0.01)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def run(backend: TransferBackend, items: list[TransferItem], batch: str = "b1") -> str:
    return backend.submit(batch, backend.new_submission_id(batch), items, f"batch {batch}")


def test_copies_every_file_with_its_checksum(tree: Tree, backend: LocalTransfer) -> None:
    contents = {"a/1.json": b"{}" * 10, "a/b/2.bin": os.urandom(3 << 20), "3.txt": b""}
    items = [tree.file(rel, data) for rel, data in contents.items()]
    task_id = run(backend, items)
    state = wait_final(backend, task_id)
    assert state.status is TaskStatus.SUCCEEDED
    assert (state.files, state.files_transferred, state.files_skipped, state.faults) == (3, 3, 0, 0)
    assert state.completion_time is not None
    outcomes = backend.outcomes(task_id, items)
    assert [o.key for o in outcomes] == [i.key for i in items]
    for outcome, (rel, data) in zip(outcomes, contents.items(), strict=True):
        assert outcome.ok and not outcome.skipped_identical
        assert (outcome.checksum, outcome.checksum_algorithm) == (sha256(data), "sha256")
        assert (tree.dest / "raw" / rel).read_bytes() == data
    leftovers = [p for p in tree.dest.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_copy_is_written_to_a_temporary_file_then_renamed(
    tree: Tree, backend: LocalTransfer, monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[tuple[Path, Path]] = []
    real_rename = os.rename

    def recording_rename(src: Path, dst: Path) -> None:
        renames.append((Path(src), Path(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", recording_rename)
    item = tree.file("x/y.json", b"payload")
    wait_final(backend, run(backend, [item]))
    [(tmp, final)] = renames
    assert final == tree.dest / "raw/x/y.json"
    assert tmp.parent == final.parent and tmp.name.startswith(".y.json.") and tmp.suffix == ".part"


def test_a_stopped_copy_leaves_neither_file_nor_temporary(tree: Tree) -> None:
    item = tree.file("big.bin", os.urandom(3 << 20))
    stop = threading.Event()
    stop.set()
    assert FileCopier(tree.dest, "tag", stop).copy(item) is None
    assert list(tree.dest.rglob("*.*")) == []


def test_a_source_changed_during_the_copy_is_not_published(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = tree.file("growing.log", b"first line\n")
    real_fill = FileCopier._fill

    def fill_then_append(self: FileCopier, src: int, dst: int) -> str:
        digest = real_fill(self, src, dst)
        with open(item.source, "ab") as growing:
            growing.write(b"second line\n")
        return digest

    monkeypatch.setattr(FileCopier, "_fill", fill_then_append)
    result = FileCopier(tree.dest, "tag").copy(item)
    assert result is not None and not result.outcome.ok
    assert "changed during the copy" in (result.outcome.reason or "")
    assert list(tree.dest.rglob("*.*")) == []


def test_a_copy_that_reads_back_differently_is_not_published(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = tree.file("flaky.bin", b"0123456789")
    real_write_all = local_copy._write_all

    def corrupting_write_all(fd: int, data: bytes) -> None:
        real_write_all(fd, data[:-1] + b"X")

    monkeypatch.setattr(local_copy, "_write_all", corrupting_write_all)
    result = FileCopier(tree.dest, "tag").copy(item)
    assert result is not None and not result.outcome.ok
    assert "verification failed" in (result.outcome.reason or "")
    assert list(tree.dest.rglob("*.*")) == []


def test_repeated_submission_runs_the_batch_once(tree: Tree, backend: LocalTransfer) -> None:
    item = tree.file("a.json", b"one")
    submission = backend.new_submission_id("b1")
    task_id = backend.submit("b1", submission, [item], "first")
    wait_final(backend, task_id)
    copied = tree.dest / "raw/a.json"
    copied.unlink()
    assert backend.submit("b1", submission, [item], "again") == task_id
    assert wait_final(backend, task_id).files_transferred == 1
    assert not copied.exists()


def test_submission_id_is_derived_from_the_batch_id(tree: Tree, tmp_path: Path) -> None:
    one = tree.backend()
    other = LocalTransfer(tmp_path / "d2", tmp_path / "s2")
    try:
        assert one.new_submission_id("b1") == other.new_submission_id("b1")
        assert one.new_submission_id("b1") != one.new_submission_id("b2")
    finally:
        one.close()
        other.close()


def test_identical_destination_is_skipped_not_rewritten(tree: Tree, backend: LocalTransfer) -> None:
    item = tree.file("same.json", b"same content")
    existing = tree.dest / "raw/same.json"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"same content")
    inode = existing.stat().st_ino
    task_id = run(backend, [item])
    state = wait_final(backend, task_id)
    assert (state.status, state.files_transferred, state.files_skipped) == (
        TaskStatus.SUCCEEDED,
        0,
        1,
    )
    [outcome] = backend.outcomes(task_id, [item])
    assert outcome.ok and outcome.skipped_identical and outcome.checksum == sha256(b"same content")
    assert existing.stat().st_ino == inode


def test_different_destination_of_the_same_size_is_replaced(
    tree: Tree, backend: LocalTransfer
) -> None:
    item = tree.file("f.bin", b"new!")
    stale = tree.dest / "raw/f.bin"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old!")
    [outcome] = backend.outcomes(wait_final(backend, run(backend, [item])).task_id, [item])
    assert outcome.ok and not outcome.skipped_identical
    assert stale.read_bytes() == b"new!"


def test_missing_and_changed_sources_fail_per_file(tree: Tree, backend: LocalTransfer) -> None:
    good = tree.file("good.json", b"ok")
    gone = tree.file("gone.json", b"bye")
    Path(gone.source).unlink()
    grown = tree.file("grown.json", b"v1")
    Path(grown.source).write_bytes(b"version 2")
    touched = tree.file("touched.json", b"t")
    os.utime(touched.source, ns=(touched.mtime_ns, touched.mtime_ns + 10**9))
    items = [good, gone, grown, touched]
    task_id = run(backend, items)
    state = wait_final(backend, task_id)
    assert (state.status, state.files_transferred, state.faults) == (TaskStatus.SUCCEEDED, 1, 3)
    ok, missing, changed, retimed = backend.outcomes(task_id, items)
    assert ok.ok
    assert not missing.ok and "source missing" in (missing.reason or "")
    assert not changed.ok and "size 9 (expected 2)" in (changed.reason or "")
    assert not retimed.ok and "mtime_ns" in (retimed.reason or "")
    assert not (tree.dest / "raw/gone.json").exists()
    assert not (tree.dest / "raw/grown.json").exists()


def test_a_task_whose_files_all_failed_is_failed(tree: Tree, backend: LocalTransfer) -> None:
    item = tree.file("gone.json", b"x")
    Path(item.source).unlink()
    escaping = tree.file("esc.json", b"x", dest="../outside.json")
    task_id = run(backend, [item, escaping])
    assert wait_final(backend, task_id).status is TaskStatus.FAILED
    _, escaped = backend.outcomes(task_id, [item, escaping])
    assert "escapes the destination root" in (escaped.reason or "")
    assert not (tree.dest.parent / "outside.json").exists()


def test_empty_batch_and_unknown_task_are_refused(backend: LocalTransfer) -> None:
    with pytest.raises(TransferPermanentError):
        backend.submit("b", backend.new_submission_id("b"), [], "empty")
    with pytest.raises(TransferNotFoundError):
        backend.task("6f1d3c1e-0000-4000-8000-000000000000")
    with pytest.raises(TransferNotFoundError):
        backend.task("../../etc/passwd")


def write_record(
    tree: Tree, items: list[TransferItem], *, pid: int | None, heartbeat: float
) -> str:
    """A task record as a runner left it: the first item done, the rest not yet copied."""
    store = TaskStore(tree.state)
    record = TaskRecord("3b0c8a52-1d6e-4c7a-8e24-7b9d4c3e2a61", "sub", "b9", "b9", items, heartbeat)
    record.claim(heartbeat)
    record.owner_pid, record.nice_status = pid, "OK"
    first = FileCopier(tree.dest, "earlier").copy(items[0])
    assert first is not None
    record.outcomes[0] = first.outcome
    assert store.create(record)
    return record.task_id


def test_orphaned_task_of_a_dead_process_is_resumed(tree: Tree, backend: LocalTransfer) -> None:
    items = [tree.file(f"o/{n}.json", n.encode() * 50) for n in "abc"]
    task_id = write_record(tree, items, pid=dead_pid(), heartbeat=time.time())
    state = wait_final(backend, task_id)
    assert (state.status, state.files_transferred) == (TaskStatus.SUCCEEDED, 3)
    assert all(o.ok for o in backend.outcomes(task_id, items))
    for item in items:
        assert (tree.dest / item.destination).read_bytes() == Path(item.source).read_bytes()
    record = TaskStore(tree.state).load(task_id)
    assert record is not None and (record.owner_pid, record.owner_host) == (os.getpid(), HOST)


def test_task_with_a_stale_heartbeat_is_taken_over(tree: Tree, backend: LocalTransfer) -> None:
    items = [tree.file("s/1.json", b"1"), tree.file("s/2.json", b"2")]
    task_id = write_record(tree, items, pid=os.getpid(), heartbeat=time.time() - 3600)
    assert wait_final(backend, task_id).status is TaskStatus.SUCCEEDED


def test_task_with_a_live_runner_is_left_alone(tree: Tree) -> None:
    items = [tree.file("l/1.json", b"1"), tree.file("l/2.json", b"2")]
    task_id = write_record(tree, items, pid=os.getpid(), heartbeat=time.time())
    backend = tree.backend()
    state = backend.task(task_id)
    with pytest.raises(TransferPermanentError, match="not final"):
        backend.outcomes(task_id, items)
    backend.close()
    assert state.status is TaskStatus.ACTIVE
    assert not (tree.dest / "raw/l/2.json").exists()


def test_close_hands_unfinished_tasks_to_the_next_instance(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    copying = threading.Event()
    real_copy_many = FileCopier.copy_many

    def copy_once_stopped(self: FileCopier, items: list[TransferItem]) -> object:
        copying.set()
        assert self._stop is not None
        self._stop.wait()
        return real_copy_many(self, items)

    monkeypatch.setattr(FileCopier, "copy_many", copy_once_stopped)
    first = tree.backend(max_active_tasks=1)
    batches = {
        f"b{n}": [tree.file(f"c{n}/{i}.bin", os.urandom(4096)) for i in range(20)] for n in range(3)
    }
    task_ids = {run(first, items, batch): items for batch, items in batches.items()}
    assert copying.wait(10)
    first.close()
    monkeypatch.undo()
    store = TaskStore(tree.state)
    queued = [store.load(task_id) for task_id in list(task_ids)[1:]]
    assert all(r is not None and not r.status.is_final and r.owner_pid is None for r in queued)
    second = tree.backend()
    try:
        for task_id, items in task_ids.items():
            assert wait_final(second, task_id).status is TaskStatus.SUCCEEDED
            assert all(o.ok for o in second.outcomes(task_id, items))
    finally:
        second.close()


def test_confirm_compares_the_destination_with_the_source(
    tree: Tree, backend: LocalTransfer
) -> None:
    item = tree.file("c.json", b"content")
    assert not backend.confirm(item).ok
    wait_final(backend, run(backend, [item]))
    confirmed = backend.confirm(item)
    assert confirmed.ok and confirmed.checksum == sha256(b"content")
    (tree.dest / item.destination).write_bytes(b"CONTENT")
    assert "differs" in (backend.confirm(item).reason or "")
    (tree.dest / item.destination).write_bytes(b"content")
    assert backend.confirm(item).ok
    Path(item.source).unlink()
    unverifiable = backend.confirm(item)
    assert not unverifiable.ok and "cannot compare" in (unverifiable.reason or "")


def test_outcomes_for_an_item_outside_the_task_check_the_destination(
    tree: Tree, backend: LocalTransfer
) -> None:
    inside = tree.file("in.json", b"in")
    outside = tree.file("out.json", b"out")
    task_id = run(backend, [inside])
    wait_final(backend, task_id)
    assert [o.ok for o in backend.outcomes(task_id, [inside, outside])] == [True, False]


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "", "c.d"]), max_size=6))
def test_destination_paths_never_leave_the_root(parts: list[str]) -> None:
    root = Path("/dest/root")
    path = destination_path(root, "/".join(parts))
    if path is not None:
        assert path.is_relative_to(root) and path != root
        assert ".." not in path.relative_to(root).parts


def test_polls_see_every_rewrite_of_a_task_record(tree: Tree) -> None:
    items = [tree.file("p/1.json", b"1"), tree.file("p/2.json", b"2")]
    task_id = write_record(tree, items, pid=os.getpid(), heartbeat=time.time())
    backend = tree.backend()
    try:
        assert backend.task(task_id).status is TaskStatus.ACTIVE
        assert backend.task(task_id).files_transferred == 1
        store = TaskStore(tree.state)
        record = store.load(task_id)
        assert record is not None
        second = FileCopier(tree.dest, "later").copy(items[1])
        assert second is not None
        record.outcomes[1] = second.outcome
        record.finish(time.time())
        with store.lock(task_id) as locked:
            assert locked
            store.save(record)
        state = backend.task(task_id)
        assert (state.status, state.files_transferred) == (TaskStatus.SUCCEEDED, 2)
    finally:
        backend.close()


def test_confirm_against_the_recorded_checksum(tree: Tree, backend: LocalTransfer) -> None:
    item = tree.file("k.json", b"kept")
    [outcome] = backend.outcomes(wait_final(backend, run(backend, [item])).task_id, [item])
    Path(item.source).unlink()
    assert backend.confirm(item, outcome.checksum, outcome.checksum_algorithm).ok
    assert not backend.confirm(item, sha256(b"other"), "sha256").ok
