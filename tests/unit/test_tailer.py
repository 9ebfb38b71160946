"""The tailer: whole lines, exact checkpoints, rotation, compression, truncation and re-seating."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.gantry.tailer import (
    Checkpoint,
    CheckpointFormatError,
    CheckpointLostError,
    CorruptLogError,
    LineKind,
    LogReadError,
    TailedLine,
    Tailer,
    checkpoint_at_end,
    checkpoint_at_time,
    rotated_siblings,
)
from producers.gantry.xferlog import time_extractor


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def rotate(log: Path, suffix: str, create: bool = True) -> Path:
    rotated = log.with_name(f"{log.name}-{suffix}")
    os.rename(log, rotated)
    if create:
        log.touch()
    return rotated


def compress(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    with path.open("rb") as src, gzip.open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return target


def copytruncate(log: Path, suffix: str) -> Path:
    copy = log.with_name(f"{log.name}-{suffix}")
    shutil.copyfile(log, copy)
    os.truncate(log, 0)
    return copy


def drain(tailer: Tailer, max_lines: int = 1000) -> list[TailedLine]:
    """Everything available now; read() returns [] only once nothing more is available."""
    out: list[TailedLine] = []
    for _ in range(1000):
        lines = tailer.read(max_lines)
        if not lines:
            return out
        out.extend(lines)
    raise AssertionError("the tailer kept yielding lines")


def datas(lines: list[TailedLine]) -> list[bytes]:
    return [line.data for line in lines]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "xferlog"


def test_only_whole_lines_are_yielded(log: Path) -> None:
    append(log, b"one\ntwo\npar")
    with Tailer(log) as tailer:
        lines = drain(tailer)
        assert datas(lines) == [b"one", b"two"]
        assert [(ln.offset, ln.end) for ln in lines] == [(0, 4), (4, 8)]
        assert tailer.checkpoint.offset == 8
        append(log, b"tial\n")
        [line] = drain(tailer)
        assert (line.data, line.offset, line.end, line.kind) == (b"partial", 8, 16, LineKind.LINE)
        assert line.checkpoint == tailer.checkpoint


def test_max_lines_is_respected_and_order_kept(log: Path) -> None:
    append(log, b"".join(b"%d\n" % i for i in range(10)))
    with Tailer(log) as tailer:
        batches = [datas(tailer.read(3)) for _ in range(4)]
    assert batches == [[b"0", b"1", b"2"], [b"3", b"4", b"5"], [b"6", b"7", b"8"], [b"9"]]


def test_restart_from_a_line_checkpoint_continues_after_it(log: Path) -> None:
    append(log, b"a\nb\nc\n")
    with Tailer(log) as tailer:
        first = tailer.read(1)[0]
    with Tailer(log, first.checkpoint) as tailer:
        assert datas(drain(tailer)) == [b"b", b"c"]


def test_missing_log_is_waited_for_and_read_once_created(log: Path) -> None:
    with Tailer(log) as tailer:
        assert tailer.read() == []
        assert tailer.current is None
        assert tailer.checkpoint == Checkpoint.start("xferlog")
        append(log, b"first\n")
        assert datas(drain(tailer)) == [b"first"]
        cp = tailer.checkpoint
    append(log, b"second\n")
    with Tailer(log, cp) as tailer:
        assert datas(drain(tailer)) == [b"second"]


def test_rotation_finishes_the_rotated_file_before_the_new_one(log: Path) -> None:
    append(log, b"a1\n")
    with Tailer(log) as tailer:
        assert datas(drain(tailer)) == [b"a1"]
        append(log, b"a2\n")
        rotate(log, "20160501")
        append(log, b"b1\n")
        lines = drain(tailer)
    assert datas(lines) == [b"a2", b"b1"]
    assert [ln.source.name for ln in lines] == ["xferlog", "xferlog"]
    assert lines[0].source.ino != lines[1].source.ino


def test_rotated_file_is_kept_while_the_new_log_is_empty(log: Path) -> None:
    append(log, b"a1\n")
    with Tailer(log) as tailer:
        drain(tailer)
        rotated = rotate(log, "20160501")
        append(rotated, b"late\n")  # a session still writing to the old inode
        assert datas(drain(tailer)) == [b"late"]
        append(log, b"b1\n")
        assert datas(drain(tailer)) == [b"b1"]


def test_several_rotations_between_polls_are_read_in_order(log: Path) -> None:
    append(log, b"a1\n")
    with Tailer(log) as tailer:
        drain(tailer)
        append(log, b"a2\n")
        rotate(log, "20160501")
        append(log, b"b1\n")
        compress(rotate(log, "20160502"))
        append(log, b"c1\n")
        assert datas(drain(tailer)) == [b"a2", b"b1", b"c1"]


def test_rotated_file_compressed_while_being_read_is_finished(log: Path) -> None:
    append(log, b"a1\na2\n")
    with Tailer(log) as tailer:
        assert datas(tailer.read(1)) == [b"a1"]
        compress(rotate(log, "20160501"))
        append(log, b"b1\n")
        assert datas(drain(tailer)) == [b"a2", b"b1"]


def test_restart_finds_the_rotated_file_by_inode(log: Path) -> None:
    append(log, b"a1\na2\n")
    with Tailer(log) as tailer:
        cp = tailer.read(1)[0].checkpoint
    rotate(log, "20160501")
    append(log, b"b1\n")
    with Tailer(log, cp) as tailer:
        assert datas(drain(tailer)) == [b"a2", b"b1"]


def test_restart_finds_the_gzipped_file_by_fingerprint(log: Path) -> None:
    append(log, b"a1\na2\n")
    with Tailer(log) as tailer:
        cp = tailer.read(1)[0].checkpoint
    compress(rotate(log, "20160501"))
    append(log, b"b1\n")
    with Tailer(log, cp) as tailer:
        lines = drain(tailer)
    assert datas(lines) == [b"a2", b"b1"]
    assert lines[0].source.name == "xferlog-20160501.gz"


def test_restart_prefers_the_plain_file_while_compression_is_in_progress(log: Path) -> None:
    append(log, b"a1\na2\n")
    with Tailer(log) as tailer:
        cp = tailer.read(1)[0].checkpoint
    rotated = rotate(log, "20160501")
    rotated.with_name(rotated.name + ".gz").write_bytes(gzip.compress(b"a1\na2\n")[:12])
    append(log, b"b1\n")
    with Tailer(log, cp) as tailer:
        lines = drain(tailer)
    assert datas(lines) == [b"a2", b"b1"]
    assert lines[0].source.name == "xferlog-20160501"


def test_copytruncate_with_the_copy_kept_loses_nothing(log: Path) -> None:
    append(log, b"a1\n")
    with Tailer(log) as tailer:
        drain(tailer)
        append(log, b"a2\n")
        copytruncate(log, "20160501")
        append(log, b"b1\nb2\n")
        assert datas(drain(tailer)) == [b"a2", b"b1", b"b2"]


def test_truncation_without_a_copy_restarts_the_same_inode(log: Path) -> None:
    append(log, b"a1\na2\n")
    with Tailer(log) as tailer:
        drain(tailer)
        ino = os.stat(log).st_ino
        os.truncate(log, 0)
        append(log, b"b1\n")
        lines = drain(tailer)
        assert datas(lines) == [b"b1"]
        assert (lines[0].offset, lines[0].source.ino) == (0, ino)


def test_truncation_then_regrowth_past_the_position_is_detected(log: Path) -> None:
    append(log, b"a1\n")
    with Tailer(log) as tailer:
        drain(tailer)
        os.truncate(log, 0)
        append(log, b"b1 longer than before\n")
        assert datas(drain(tailer)) == [b"b1 longer than before"]


def test_truncated_empty_log_gives_a_checkpoint_that_survives_restart(log: Path) -> None:
    append(log, b"a1\n")
    with Tailer(log) as tailer:
        drain(tailer)
        os.truncate(log, 0)
        assert drain(tailer) == []
        cp = tailer.checkpoint
    assert (cp.fingerprint_len, cp.offset) == (0, 0)
    append(log, b"b1\n")
    with Tailer(log, Checkpoint.from_dict(cp.to_dict())) as tailer:
        assert datas(drain(tailer)) == [b"b1"]


def test_restart_after_copytruncate_resumes_in_the_copy(log: Path) -> None:
    append(log, b"a1\na2\n")
    with Tailer(log) as tailer:
        cp = tailer.read(1)[0].checkpoint
    compress(copytruncate(log, "20160501"))
    append(log, b"b1\n")
    with Tailer(log, cp) as tailer:
        assert datas(drain(tailer)) == [b"a2", b"b1"]


def test_checkpoint_of_an_empty_log_survives_its_rotation_and_compression(log: Path) -> None:
    log.touch()
    with Tailer(log) as tailer:
        assert drain(tailer) == []
        cp = tailer.checkpoint
    assert cp.fingerprint_len == 0 and cp.ino != 0
    append(log, b"a1\n")
    compress(rotate(log, "20160501"))
    append(log, b"b1\n")
    with Tailer(log, cp) as tailer:
        assert datas(drain(tailer)) == [b"a1", b"b1"]


def test_unended_tail_of_a_rotated_file_is_a_fragment(log: Path) -> None:
    append(log, b"a1\ncut")
    with Tailer(log) as tailer:
        drain(tailer)
        rotate(log, "20160501")
        append(log, b"b1\n")
        lines = drain(tailer)
    assert [(ln.kind, ln.data, ln.offset, ln.end) for ln in lines] == [
        (LineKind.FRAGMENT, b"cut", 3, 6),
        (LineKind.LINE, b"b1", 0, 3),
    ]


def test_lost_checkpoint_raises_naming_fingerprint_and_files(log: Path) -> None:
    append(log, b"a1\na2\n")
    with Tailer(log) as tailer:
        cp = tailer.read(1)[0].checkpoint
    rotate(log, "20160501").unlink()
    append(log, b"new content\n")
    rotate(log, "20160502")
    append(log, b"newer\n")
    with Tailer(log, cp) as tailer, pytest.raises(CheckpointLostError) as err:
        tailer.read()
    message = str(err.value)
    assert cp.fingerprint[:16] in message
    assert f"looked at xferlog-20160502, xferlog in {log.parent}" in message
    assert "\n" not in message


def test_checkpoint_beyond_the_end_of_every_file_is_lost(log: Path) -> None:
    append(log, b"a1\n")
    with Tailer(log) as tailer:
        cp = drain(tailer)[-1].checkpoint
    far = Checkpoint(cp.name, cp.dev, cp.ino, cp.fingerprint, cp.fingerprint_len, 10_000)
    with Tailer(log, far) as tailer, pytest.raises(CheckpointLostError):
        tailer.read()


def test_oversize_lines_are_cut_and_the_rest_skipped(log: Path) -> None:
    append(log, b"x" * 100 + b"\nok\n")
    with Tailer(log, max_line=16) as tailer:
        lines = drain(tailer)
    assert [(ln.kind, ln.data, ln.offset, ln.end) for ln in lines] == [
        (LineKind.OVERSIZE, b"x" * 16, 0, 101),
        (LineKind.LINE, b"ok", 101, 104),
    ]


def test_oversize_line_arriving_in_pieces_keeps_memory_bounded(log: Path) -> None:
    with Tailer(log, max_line=1024) as tailer:
        append(log, b"ok\n")
        assert datas(drain(tailer)) == [b"ok"]
        for _ in range(3):
            append(log, b"y" * (1 << 20))
            assert drain(tailer) == []
            assert len(tailer._buf) <= 1024 + (1 << 20)  # kept: at most the cut head and a chunk
        append(log, b"\nafter\n")
        lines = drain(tailer)
    assert [(ln.kind, len(ln.data), ln.offset, ln.end) for ln in lines] == [
        (LineKind.OVERSIZE, 1024, 3, 3 + 3 * (1 << 20) + 1),
        (LineKind.LINE, 5, 3 + 3 * (1 << 20) + 1, 3 + 3 * (1 << 20) + 7),
    ]


def test_checkpoint_survives_a_dict_round_trip(log: Path) -> None:
    append(log, b"a\n")
    with Tailer(log) as tailer:
        cp = drain(tailer)[-1].checkpoint
    stored = cp.to_dict()
    assert all(isinstance(v, str | int) for v in stored.values())
    assert Checkpoint.from_dict(stored) == cp


@pytest.mark.parametrize(
    "change",
    [
        {"offset": -1},
        {"offset": "3"},
        {"fingerprint": "abc"},
        {"fingerprint_len": 999},
        {"name": 3},
        {"offset": True},
    ],
)
def test_bad_stored_checkpoints_are_rejected(change: dict[str, object]) -> None:
    stored: dict[str, object] = {**Checkpoint("x", 1, 2, "0" * 64, 5, 7).to_dict(), **change}
    with pytest.raises(CheckpointFormatError):
        Checkpoint.from_dict(stored)  # type: ignore[arg-type]


def test_missing_checkpoint_field_is_rejected() -> None:
    stored = Checkpoint("x", 1, 2, "0" * 64, 5, 7).to_dict()
    del stored["offset"]
    with pytest.raises(CheckpointFormatError, match="offset"):
        Checkpoint.from_dict(stored)


def test_reseat_from_the_end_skips_what_is_there(log: Path) -> None:
    assert checkpoint_at_end(log) == Checkpoint.start("xferlog")
    append(log, b"old1\nold2\npart")
    cp = checkpoint_at_end(log)
    assert cp.offset == 10
    append(log, b"ial\nnew\n")
    with Tailer(log, cp) as tailer:
        assert datas(drain(tailer)) == [b"partial", b"new"]


def xfer(day: int, hour: int, name: str) -> bytes:
    stamp = datetime(2016, 4, day, hour).strftime("%a %b ") + f"{day:2d} {hour:02d}:00:00 2016"
    return f"{stamp} 1 10.0.0.1 5 /gantry_data/MAC/{name} b _ i r u ftp 0 * c\n".encode()


def test_reseat_from_a_time_searches_rotated_files_oldest_first(log: Path) -> None:
    append(log, xfer(3, 10, "a") + xfer(3, 20, "b"))
    compress(rotate(log, "20160404"))
    append(log, xfer(4, 10, "c") + b"junk without a time\n" + xfer(4, 20, "d"))
    rotate(log, "20160405")
    append(log, xfer(5, 10, "e"))
    when = datetime(2016, 4, 4, 18, tzinfo=UTC)  # 11:00 in Phoenix: after c, before d
    cp = checkpoint_at_time(log, when, time_extractor())
    with Tailer(log, cp) as tailer:
        names = [ln.data.split()[8].rsplit(b"/", 1)[1] for ln in drain(tailer)]
    assert names == [b"d", b"e"]
    assert rotated_siblings(str(log))[-1].endswith("xferlog-20160405")


def test_reseat_from_a_time_after_every_line_waits_for_new_lines(log: Path) -> None:
    append(log, xfer(3, 10, "a"))
    cp = checkpoint_at_time(log, datetime(2017, 1, 1, tzinfo=UTC), time_extractor())
    append(log, xfer(3, 11, "b"))
    with Tailer(log, cp) as tailer:
        assert len(drain(tailer)) == 1


def test_reading_a_closed_tailer_is_an_error(log: Path) -> None:
    tailer = Tailer(log)
    tailer.close()
    with pytest.raises(ValueError, match="closed"):
        tailer.read()


def test_copytruncate_copy_is_not_read_after_newer_lines(log: Path) -> None:
    log.touch()
    with Tailer(log) as tailer:
        assert drain(tailer) == []
        append(log, b"old\n")
        copytruncate(log, "20160501")  # unseen: the tailer had read nothing of it
        append(log, b"new\n")
        assert datas(drain(tailer)) == [b"new"]
        rotate(log, "20160502")
        append(log, b"newer\n")
        assert datas(drain(tailer)) == [b"newer"]


class LogWorld:
    """A log directory, a writer of whole lines and a reader that commits and restarts.

    The writer may leave a line half written, but finishes it before rotating or truncating, as a
    server writing whole lines does. Lines are numbered in writing order. The reader commits the
    lines it was given together with ``tailer.checkpoint``, or drops them on a restart.

    The guarantee checked: committed lines are in writing order without repeats, and every line is
    committed except those in ``optional``:

    * lines in the live file not yet committed when it is copytruncated (the tailer reads them
      from the copy when it can, but need not);
    * lines outside the live file when a tailer without a checkpoint first reads: it starts at
      the live log as it is then.
    """

    def __init__(self, folder: Path) -> None:
        self.log = folder / "xferlog"
        self.next_id, self.day = 0, 20160501
        self.partial: tuple[int, bytes] | None = None
        self.written: list[int] = []
        self.live_ids: list[int] = []
        self.optional: set[int] = set()
        self.committed: list[int] = []
        self.pending: list[int] = []
        self.cp: Checkpoint | None = None
        self.fresh = True
        self.tailer = Tailer(self.log)

    def _line(self) -> tuple[int, bytes]:
        i, self.next_id = self.next_id, self.next_id + 1
        return i, b"%06d " % i + b"x" * (i * 7 % 50) + b"\n"

    def _complete(self, i: int) -> None:
        self.written.append(i)
        self.live_ids.append(i)

    def finish_partial(self) -> None:
        if self.partial is not None:
            i, rest = self.partial
            append(self.log, rest)
            self._complete(i)
            self.partial = None

    def append(self, n: int, cut: int | None) -> None:
        self.finish_partial()
        for _ in range(n):
            i, data = self._line()
            append(self.log, data)
            self._complete(i)
        if cut is not None:
            i, data = self._line()
            cut = 1 + cut % (len(data) - 1)
            append(self.log, data[:cut])
            self.partial = (i, data[cut:])

    def _sibling(self) -> Path:
        self.day += 1
        return self.log.with_name(f"xferlog-{self.day}")

    def rotate(self, create: bool) -> None:
        self.finish_partial()
        if self.log.exists():
            os.rename(self.log, self._sibling())
            self.live_ids = []
            if create:
                self.log.touch()

    def compress_oldest(self) -> None:
        plain = [p for p in sorted(self.log.parent.glob("xferlog-*")) if p.suffix != ".gz"]
        if plain:
            compress(plain[0])

    def copytruncate(self) -> None:
        self.finish_partial()
        if self.log.exists():
            self.optional |= set(self.live_ids) - set(self.committed)
            shutil.copyfile(self.log, self._sibling())
            os.truncate(self.log, 0)
            self.live_ids = []

    def read(self, max_lines: int, commit: bool) -> None:
        if self.fresh and (self.cp is None or self.cp.ino == 0):
            # A tailer without a checkpoint starts at the live log as it is when first read.
            self.optional |= set(self.written) - set(self.live_ids) - set(self.committed)
        self.fresh = False
        lines = self.tailer.read(max_lines)
        assert len(lines) <= max_lines
        assert all(line.kind is LineKind.LINE for line in lines)
        self.pending.extend(int(line.data[:6]) for line in lines)
        if commit:
            self.committed += self.pending
            self.pending = []
            self.cp = self.tailer.checkpoint

    def restart(self) -> None:
        self.tailer.close()
        self.pending = []
        self.fresh = True
        stored = None if self.cp is None else Checkpoint.from_dict(self.cp.to_dict())
        self.tailer = Tailer(self.log, stored)

    def apply(self, op: tuple[object, ...]) -> None:
        """Run one drawn operation: its name is a method, the rest are its arguments."""
        name, *args = op
        action: Callable[..., None] = getattr(self, str(name))
        action(*args)

    def finish(self) -> None:
        """Complete the last line, then read and commit until nothing more comes."""
        self.finish_partial()
        for _ in range(100):
            before = len(self.committed) + len(self.pending)
            self.read(1000, commit=True)
            if len(self.committed) == before:
                break
        self.tailer.close()


OPS = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 6), st.none() | st.integers(0, 200)),
    st.tuples(st.just("rotate"), st.booleans()),
    st.tuples(st.just("compress_oldest")),
    st.tuples(st.just("copytruncate")),
    st.tuples(st.just("read"), st.integers(1, 8), st.booleans()),
    st.tuples(st.just("restart")),
)


def run_world(ops: list[tuple[object, ...]]) -> None:
    """Run the operations, then check the guarantee documented on ``LogWorld``."""
    with tempfile.TemporaryDirectory() as folder:
        world = LogWorld(Path(folder))
        try:
            for op in ops:
                world.apply(op)
            world.finish()
        finally:
            world.tailer.close()
    assert world.committed == sorted(set(world.committed)), "out of order or repeated"
    assert set(world.committed) <= set(world.written)
    missing = set(world.written) - world.optional - set(world.committed)
    assert not missing, f"lines never yielded: {sorted(missing)}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=40))
def test_every_complete_line_is_yielded_once_in_order(ops: list[tuple[object, ...]]) -> None:
    run_world(ops)


def test_copy_search_is_not_fooled_by_a_partial_first_line() -> None:
    # The live file holds one byte of a line when the tailer enters it: that byte must not serve as
    # a fingerprint, or the older copy starting with the same byte would be taken for its copy.
    run_world(
        [
            ("append", 1, None),
            ("read", 1, False),
            ("copytruncate",),
            ("append", 0, 0),
            ("read", 1, False),
            ("copytruncate",),
        ]
    )


def test_truncation_under_a_partial_line_is_detected() -> None:
    # Only part of a line had been read; the file was truncated and rewritten past that point.
    run_world([("append", 0, 5), ("read", 1, False), ("copytruncate",), ("append", 1, None)])


def test_empty_log_checkpoint_survives_inode_reuse() -> None:
    # The empty log's inode is freed by compressing its rotated file, then reused by a new log.
    run_world(
        [
            ("append", 1, None),
            ("copytruncate",),
            ("read", 1, True),
            ("compress_oldest",),
            ("append", 1, None),
            ("restart",),
            ("rotate", True),
            ("compress_oldest",),
            ("rotate", True),
        ]
    )


def test_log_renamed_and_not_recreated_is_finished_then_waited_for(log: Path) -> None:
    append(log, b"a1\n")
    with Tailer(log) as tailer:
        drain(tailer)
        rotated = rotate(log, "20160501", create=False)
        append(rotated, b"a2\n")
        assert datas(drain(tailer)) == [b"a2"]
        append(log, b"b1\n")
        assert datas(drain(tailer)) == [b"b1"]


def test_log_rotated_before_the_first_read_of_a_waiting_tailer_is_read(log: Path) -> None:
    with Tailer(log) as tailer:
        assert tailer.read() == []
        append(log, b"a1\n")
        rotate(log, "20160501", create=False)
        assert datas(drain(tailer)) == [b"a1"]


def test_missing_directory_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "not-yet" / "xferlog"
    with Tailer(log) as tailer:
        assert tailer.read() == []
        log.parent.mkdir()
        append(log, b"a1\n")
        assert datas(drain(tailer)) == [b"a1"]


def test_corrupt_compressed_sibling_is_a_permanent_error(log: Path) -> None:
    append(log, b"a1\n")
    with Tailer(log) as tailer:
        drain(tailer)
        rotate(log, "20160501")
        append(log, b"b1\n")
        rotate(log, "20160502").unlink()
        log.with_name("xferlog-20160502.gz").write_bytes(gzip.compress(b"b1\n")[:15])
        append(log, b"c1\n")
        with pytest.raises(CorruptLogError, match=r"xferlog-20160502\.gz"):
            drain(tailer)


def test_checkpoint_in_a_corrupt_compressed_file_is_lost(log: Path) -> None:
    append(log, b"a1\na2\n")
    with Tailer(log) as tailer:
        cp = tailer.read(1)[0].checkpoint
    rotate(log, "20160501").unlink()
    log.with_name("xferlog-20160501.gz").write_bytes(gzip.compress(b"a1\na2\n")[:15])
    with Tailer(log, cp) as tailer, pytest.raises(CheckpointLostError, match=r"20160501\.gz"):
        tailer.read()


def test_unreadable_log_is_a_transient_read_error(log: Path) -> None:
    os.symlink(log.name, log)  # a symlink loop: open fails with ELOOP
    with Tailer(log) as tailer, pytest.raises(LogReadError, match="xferlog"):
        tailer.read()


def test_reseat_from_the_end_of_a_log_without_a_newline(log: Path) -> None:
    append(log, b"partial")
    cp = checkpoint_at_end(log)
    assert (cp.offset, cp.fingerprint_len) == (0, 0)
    append(log, b"\n")
    with Tailer(log, cp) as tailer:
        assert datas(drain(tailer)) == [b"partial"]


@pytest.mark.parametrize(("max_line", "max_lines"), [(0, 1), (1, 0)])
def test_limits_must_be_positive(log: Path, max_line: int, max_lines: int) -> None:
    with pytest.raises(ValueError, match="must be at least 1"), Tailer(log, max_line=max_line) as t:
        t.read(max_lines)


def test_restart_prefers_the_live_file_over_a_copy_being_made(log: Path) -> None:
    append(log, b"a1\na2\n")
    with Tailer(log) as tailer:
        cp = tailer.read(1)[0].checkpoint
    shutil.copyfile(log, log.with_name("xferlog-20160501"))  # copied, not yet truncated
    with Tailer(log, cp) as tailer:
        lines = drain(tailer)
    assert datas(lines) == [b"a2"]
    assert lines[0].source.ino == os.stat(log).st_ino


def test_restart_takes_the_plain_copy_before_its_compressed_twin(log: Path) -> None:
    append(log, b"a1\na2\n")
    with Tailer(log) as tailer:
        cp = tailer.read(1)[0].checkpoint
    copy = copytruncate(log, "20160501")
    copy.with_name(copy.name + ".gz").write_bytes(gzip.compress(copy.read_bytes()))
    with Tailer(log, cp) as tailer:
        lines = drain(tailer)
    assert datas(lines) == [b"a2"]
    assert lines[0].source.name == "xferlog-20160501"


def test_compressed_file_cut_short_cannot_hold_a_later_checkpoint(log: Path) -> None:
    body = b"".join(b"%08d %s\n" % (i, os.urandom(40).hex().encode()) for i in range(2000))
    append(log, body)
    with Tailer(log) as tailer:
        cp = drain(tailer)[-1].checkpoint
    packed = gzip.compress(body)
    rotate(log, "20160501").unlink()
    log.with_name("xferlog-20160501.gz").write_bytes(packed[: len(packed) // 2])
    with Tailer(log, cp) as tailer, pytest.raises(CheckpointLostError):
        tailer.read()


def test_deleted_log_is_finished_and_its_successor_read(log: Path) -> None:
    append(log, b"a1\n")
    with Tailer(log) as tailer:
        drain(tailer)
        append(log, b"a2\n")
        log.unlink()  # removed, not rotated: the open file is still readable
        append(log, b"b1\n")
        assert datas(drain(tailer)) == [b"a2", b"b1"]
