"""A hostile writer under the tailer: arbitrary bytes, partial writes, rotation mid-line, truncation
to any size, junk beside the log. No crash, and every byte is accounted for.

``tests/unit/test_tailer.py`` checks the guarantees for a well-behaved writer (whole lines before
a rotation, truncation to zero). Here the writer is not: lines hold NULs, CRs and invalid UTF-8,
run past ``max_line``, arrive a few bytes at a time, and a file is rotated with its last line
unended. The expected output is computed from the bytes written, so it is exact: every complete
line once, in order, cut to ``max_line`` (OVERSIZE) when longer, and a rotated file's unended tail
as a FRAGMENT; the line handler makes each of those a dead letter with its reason.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from producers.gantry.lines import LineHandler, Rejected
from producers.gantry.tailer import (
    Checkpoint,
    LineKind,
    TailedLine,
    Tailer,
)
from terra_xfer.sites.gantry import PathRules

HOSTILE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PIECES = st.one_of(
    st.sampled_from([b"\n", b"\r\n", b"\0", b"\xff\xfe", b" ", b"\t", b"\x1b[2J"]),
    st.binary(min_size=1, max_size=30),
)
CHUNK = st.lists(PIECES, min_size=1, max_size=6).map(b"".join)
Expected = tuple[bytes, LineKind]


def expected_lines(content: bytes, max_line: int, rotated: bool) -> list[Expected]:
    """What the tailer must yield for a file's content: whole lines, then a rotated file's tail."""
    *lines, tail = content.split(b"\n")
    out = [
        (line[:max_line], LineKind.OVERSIZE if len(line) > max_line else LineKind.LINE)
        for line in lines
    ]
    if rotated and tail:
        out.append((tail[:max_line], LineKind.FRAGMENT))
    return out


@dataclass
class HostileLog:
    """A log written by a hostile writer and read by a tailer that commits and restarts."""

    folder: Path
    max_line: int
    segments: list[bytearray] = field(default_factory=lambda: [bytearray()])
    got: list[TailedLine] = field(default_factory=list)
    pinned: int = 0  # restarts skipped at a checkpoint of the pinned defect (see below)

    def __post_init__(self) -> None:
        self.log = self.folder / "xferlog"
        self.log.touch()
        self.tailer = Tailer(self.log, max_line=self.max_line)
        self.rotations = 0

    def write(self, chunk: bytes) -> None:
        with self.log.open("ab") as out:
            out.write(chunk)
        self.segments[-1] += chunk

    def read(self, max_lines: int) -> None:
        lines = self.tailer.read(max_lines)
        assert len(lines) <= max_lines
        self.got += lines

    def restart(self) -> None:
        cp = self.tailer.checkpoint
        if cp.fingerprint_len == 0 and cp.offset > 0:
            self.pinned += 1  # test_oversize_first_line_checkpoint_survives_storage
            return
        self.tailer.close()
        self.tailer = Tailer(self.log, Checkpoint.from_dict(cp.to_dict()), self.max_line)

    def rotate(self) -> None:
        self.rotations += 1
        os.rename(self.log, self.log.with_name(f"xferlog-{self.rotations:04d}"))
        self.log.touch()
        self.segments.append(bytearray())

    def drain(self) -> None:
        for _ in range(10_000):
            lines = self.tailer.read(1000)
            if not lines:
                self.tailer.close()
                return
            self.got += lines
        raise AssertionError("the tailer kept yielding lines")

    def expected(self) -> list[Expected]:
        out: list[Expected] = []
        for i, segment in enumerate(self.segments):
            last = i == len(self.segments) - 1
            # A rotated file is left (its tail becoming a fragment) once a newer one can be read:
            # any rotated sibling, or the live log once it holds data.
            leaves = not last and (i < len(self.segments) - 2 or bool(self.segments[-1]))
            out += expected_lines(bytes(segment), self.max_line, rotated=leaves)
        return out


OPS = st.one_of(
    st.tuples(st.just("write"), CHUNK),
    st.tuples(st.just("read"), st.integers(1, 5)),
    st.tuples(st.just("restart")),
)
ROTATING_OPS = st.one_of(OPS, st.tuples(st.just("rotate")))


def head(segment: bytes) -> bytes:
    """The bytes a file is recognised by (``LogFile.identity``): 256, or up to the last newline."""
    first = segment[:256]
    return first if len(first) == 256 else first[: first.rfind(b"\n") + 1]


def recognisable(world: HostileLog) -> bool:
    """False when a rotated file starts with the bytes an older one is recognised by: the pinned
    defect of test_a_rotated_file_starting_like_an_older_one_is_read."""
    segments = [bytes(s) for s in world.segments]
    return not any(
        head(older) and newer.startswith(head(older))
        for i, older in enumerate(segments)
        for newer in segments[i + 1 :]
    )


def run(ops: list[tuple[object, ...]], max_line: int) -> HostileLog:
    with tempfile.TemporaryDirectory() as folder:
        world = HostileLog(Path(folder), max_line)
        try:
            world.read(1)  # the tailer places itself at the (empty) live log before any write
            for name, *args in ops:
                getattr(world, str(name))(*args)
            world.drain()
        finally:
            world.tailer.close()
    return world


@HOSTILE
@given(st.lists(OPS, max_size=30), st.integers(1, 40))
def test_arbitrary_bytes_in_pieces_yield_exactly_the_lines_written(
    ops: list[tuple[object, ...]], max_line: int
) -> None:
    world = run(ops, max_line)
    assert [(line.data, line.kind) for line in world.got] == world.expected()
    ends = [line.offset for line in world.got[1:]]
    assert ends == [line.end for line in world.got[:-1]]  # contiguous: no byte skipped or reread


@HOSTILE
@given(st.lists(ROTATING_OPS, max_size=30), st.integers(1, 40))
def test_rotation_with_an_unended_line_loses_nothing(
    ops: list[tuple[object, ...]], max_line: int
) -> None:
    world = run(ops, max_line)
    assume(recognisable(world))
    assert [(line.data, line.kind) for line in world.got] == world.expected()


@HOSTILE
@given(st.lists(ROTATING_OPS, max_size=20), st.integers(1, 40))
def test_every_fragment_and_oversize_line_becomes_a_dead_letter_with_its_reason(
    ops: list[tuple[object, ...]], max_line: int
) -> None:
    world = run(ops, max_line)
    assume(recognisable(world))
    handler = LineHandler(PathRules(cache_root="/nonexistent-cache"), "xferlog", "UTC")
    for line in world.got:
        result = handler.handle(line)
        if line.kind is LineKind.FRAGMENT:
            assert isinstance(result, Rejected) and "middle of a line" in result.reason
        elif line.kind is LineKind.OVERSIZE:
            assert isinstance(result, Rejected) and "longer than" in result.reason
        else:
            assert result is None or isinstance(result, Rejected)  # nothing is in this cache
    counts = handler.counts
    assert (
        counts.lines
        == len(world.got)
        == sum(counts.dead_letters.values()) + sum(counts.skipped.values())
    )


@HOSTILE
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("write"), CHUNK),
            st.tuples(st.just("read"), st.integers(1, 5)),
            st.tuples(st.just("truncate"), st.integers(0, 200)),
        ),
        max_size=25,
    ),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=5),
)
def test_truncation_to_any_size_never_crashes_and_later_lines_arrive(
    ops: list[tuple[object, ...]], markers: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "xferlog"
        log.touch()
        got: list[TailedLine] = []
        with Tailer(log, max_line=64) as tailer:
            for name, arg in ops:
                if name == "write":
                    with log.open("ab") as out:
                        out.write(arg)  # type: ignore[arg-type]
                elif name == "truncate":
                    os.truncate(log, min(int(arg), log.stat().st_size))  # type: ignore[call-overload]
                else:
                    got += tailer.read(int(arg))  # type: ignore[call-overload]
            tail = b"\n" + b"".join(b"marker %d\n" % m for m in markers)
            with log.open("ab") as out:
                out.write(tail)
            while lines := tailer.read(1000):
                got += lines
    assert [line.data for line in got[-len(markers) :]] == [b"marker %d" % m for m in markers]


def test_junk_beside_the_log_does_not_disturb_reading_it(tmp_path: Path) -> None:
    log = tmp_path / "xferlog"
    log.write_bytes(b"one\ntwo\n")
    (tmp_path / "xferlog-0001").mkdir()  # a directory named like a rotation
    os.mkfifo(tmp_path / "xferlog-0002")  # a FIFO: opening it must not block
    (tmp_path / "xferlog-0003").symlink_to(tmp_path / "missing")  # dangling
    (tmp_path / "xferlog-0004").symlink_to(tmp_path)  # to a directory
    (tmp_path / "xferlog-0005").touch()  # empty
    (tmp_path / "xferlog.bak").write_bytes(b"not a sibling\n")
    with Tailer(log) as tailer:
        assert [line.data for line in tailer.read()] == [b"one", b"two"]
        with log.open("ab") as out:
            out.write(b"three\n")
        assert [line.data for line in tailer.read()] == [b"three"]


def test_the_log_replaced_by_a_directory_or_fifo_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "xferlog"
    log.mkdir()
    with Tailer(log) as tailer:
        assert tailer.read() == []
        log.rmdir()
        os.mkfifo(log)
        assert tailer.read() == []
        log.unlink()
        log.write_bytes(b"finally\n")
        assert [line.data for line in tailer.read()] == [b"finally"]


def test_oversize_first_line_checkpoint_survives_storage(tmp_path: Path) -> None:
    log = tmp_path / "xferlog"
    log.write_bytes(b"x" * 20)
    with Tailer(log, max_line=8) as tailer:
        assert tailer.read() == []
        with log.open("ab") as out:
            out.write(b"\n")
        (line,) = tailer.read()
        assert line.kind is LineKind.OVERSIZE
        stored = Checkpoint.from_dict(tailer.checkpoint.to_dict())
    with Tailer(log, stored, max_line=8) as again:
        assert again.read() == []


def test_a_rotated_file_starting_like_an_older_one_is_read(tmp_path: Path) -> None:
    log = tmp_path / "xferlog"
    banner = b"# xferlog opened by the FTP server: the same banner at the top of each file\n" * 4
    log.write_bytes(banner + b"one\n")
    with Tailer(log) as tailer:
        got = [line.data for line in tailer.read()]
        os.rename(log, tmp_path / "xferlog-0001")
        log.write_bytes(banner + b"two\n")
        os.rename(log, tmp_path / "xferlog-0002")
        log.write_bytes(b"three\n")
        while lines := tailer.read():
            got += [line.data for line in lines]
    assert [g for g in got if not g.startswith(b"#")] == [b"one", b"two", b"three"]
