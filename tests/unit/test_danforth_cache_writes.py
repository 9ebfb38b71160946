"""Cache writes: exact bytes under the real name only once synced, direct where the file system
takes it, buffered where it does not, and a bounded number of files waiting for a writer."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from producers.danforth import cache_writes
from producers.danforth.cache_writes import CacheWriter, settle, write_file
from producers.danforth.errors import CacheWriteError

SIZES = [0, 1, 4095, 4096, 4097, 3 * 1024 * 1024 + 17]


def _payload(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


class OpenSpy:
    """Records the flags of every ``os.open`` of the module; refuses ``O_DIRECT`` if told to."""

    def __init__(self, refuse_direct: bool = False) -> None:
        self.flags: list[int] = []
        self.refuse_direct = refuse_direct
        self._open = os.open

    def __call__(self, path: Any, flags: int, *args: Any) -> int:
        self.flags.append(flags)
        if self.refuse_direct and flags & cache_writes._DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT refused")
        return self._open(path, flags, *args)


def _write_watched(root: Path, monkeypatch: pytest.MonkeyPatch, spy: OpenSpy, size: int) -> OpenSpy:
    """Write ``a.png`` of ``size`` bytes through a CacheWriter with ``spy`` as ``os.open``."""
    monkeypatch.setattr(os, "open", spy)
    writer = CacheWriter(root)
    try:
        settle(root, writer.start("a.png", _payload(size), None))
    finally:
        writer.close()
    return spy


@pytest.mark.parametrize("size", SIZES)
def test_a_writer_leaves_exactly_the_bytes_under_the_real_name(tmp_path: Path, size: int) -> None:
    writer = CacheWriter(tmp_path)
    try:
        data = _payload(size)
        unsynced = writer.start("snapshot1/a.png", data, {"k": 1})
        made = settle(tmp_path, unsynced)
    finally:
        writer.close()
    assert (tmp_path / "snapshot1/a.png").read_bytes() == data
    assert made.size == size and made.metadata == {"k": 1}
    assert sorted(p.name for p in (tmp_path / "snapshot1").iterdir()) == ["a.png"]


def test_the_writer_writes_directly_where_the_file_system_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not cache_writes._DIRECT:
        pytest.fail("this platform has no O_DIRECT; the test is for Linux")
    probe = tmp_path / "probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | cache_writes._DIRECT, 0o644))
        takes_direct = True
    except OSError:
        takes_direct = False
    spy = _write_watched(tmp_path, monkeypatch, OpenSpy(), 10_000)
    assert spy.flags[0] & cache_writes._DIRECT
    # Where the file system refuses it (tmpfs), the same file is written again, buffered.
    assert len(spy.flags) == (1 if takes_direct else 2)
    assert (tmp_path / "a.png").read_bytes() == _payload(10_000)


def test_a_refused_direct_open_falls_back_to_a_buffered_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _write_watched(tmp_path, monkeypatch, OpenSpy(refuse_direct=True), 5000)
    assert (tmp_path / "a.png").read_bytes() == _payload(5000)
    assert not spy.flags[-1] & cache_writes._DIRECT


def test_a_refused_direct_write_is_written_again_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & cache_writes._DIRECT:
            raise OSError(errno.EINVAL, "alignment refused")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    data = _payload(20_000)
    made = write_file(tmp_path, "a.png", data, None)
    assert (tmp_path / "a.png").read_bytes() == data and made.size == 20_000


def test_a_failed_write_is_raised_by_settle_and_leaves_no_real_name(tmp_path: Path) -> None:
    (tmp_path / "snapshot1").write_text("a file where a directory should be")
    writer = CacheWriter(tmp_path)
    try:
        unsynced = writer.start("snapshot1/a.png", b"x", None)
        with pytest.raises(CacheWriteError, match="cannot write"):
            settle(tmp_path, unsynced)
    finally:
        writer.close()


def test_at_most_threads_plus_queued_files_wait_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = threading.Event()
    real = cache_writes.write_synced

    def slow(path: Path, data: bytes, buffer: Any) -> None:
        assert disk.wait(30)
        real(path, data, buffer)

    monkeypatch.setattr(cache_writes, "write_synced", slow)
    writer = CacheWriter(tmp_path, threads=1, queued=2)
    try:
        started = [writer.start(f"{i}.png", b"x", None) for i in range(3)]
        # One file being written and two queued: a fourth would wait for a slot.
        assert writer._slots.acquire(blocking=False) is False
    finally:
        disk.set()
    for unsynced in started:
        settle(tmp_path, unsynced)
    assert writer._slots.acquire(blocking=False) is True
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i}.png" for i in range(3)]
