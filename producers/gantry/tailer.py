"""Follow a log file across rotation and compression, yielding whole lines with exact positions.

A log file is known by its device and inode plus a fingerprint of its first bytes (as Vector and
Filebeat do), so it is found again after being renamed or gzipped; a position is a byte offset in
the file (decompressed for ``.gz``). ``Tailer.read`` returns what is available now and never blocks;
each line carries the checkpoint *after* it, which the caller commits together with the events it
made of the line, so a restart from that checkpoint continues exactly there.

Guarantees, for a writer that appends whole lines:

* every line is yielded once, in log order, across restarts from any checkpoint the tailer gave;
* rotation by rename (``xferlog`` -> ``xferlog-YYYYMMDD``, later ``xferlog-YYYYMMDD.gz``): the
  rotated file is finished before newer ones, and found again by fingerprint once compressed;
* copytruncate: lines read before the truncation and every line written after it are yielded;
  lines written before it and not yet read are read from the copy if the tailer had read from
  that file before and the copy is still a sibling (plain or gzipped);
* without a checkpoint the tailer starts at the live log as it is when first read, and with the
  files rotated after that;
* a missing log is waited for; a checkpoint that matches no file raises ``CheckpointLostError``.

Rotated siblings are named ``<log>-<suffix>`` or ``<log>-<suffix>.gz`` in the log's directory, with
suffixes that sort in rotation order (logrotate ``dateext``); numbered rotation is not followed.
A rotated file is left once a newer file has data; bytes written to it after that are not read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from producers.gantry.logfiles import (
    CHUNK_BYTES,
    DEFAULT_MAX_LINE,
    FINGERPRINT_BYTES,
    Checkpoint,
    CheckpointFormatError,
    CheckpointLostError,
    CorruptLogError,
    LogFile,
    LogIdentity,
    LogReadError,
    fingerprint,
    floor_sibling,
    locate,
    log_stem,
    lost_error,
    open_log,
    rotated_siblings,
)

__all__ = [
    "DEFAULT_MAX_LINE",
    "Checkpoint",
    "CheckpointFormatError",
    "CheckpointLostError",
    "CorruptLogError",
    "LineKind",
    "LogIdentity",
    "LogReadError",
    "TailedLine",
    "Tailer",
    "checkpoint_at_end",
    "checkpoint_at_time",
    "fingerprint",
    "rotated_siblings",
]


class LineKind(StrEnum):
    """A whole line; an oversize line cut to its first bytes; or a rotated file's unended tail."""

    LINE = "line"
    OVERSIZE = "oversize"
    FRAGMENT = "fragment"


@dataclass(frozen=True, slots=True)
class TailedLine:
    """One line without its newline, where it starts and ends in which file, and what kind it is."""

    data: bytes
    source: LogIdentity
    offset: int
    end: int
    kind: LineKind = LineKind.LINE

    @property
    def checkpoint(self) -> Checkpoint:
        """The position just after this line: commit it with the events made from the line."""
        return Checkpoint.at(self.source, self.end)


class Tailer:
    """Follows the log at ``path`` from ``checkpoint`` (default: the start of the live log).

    Call ``read`` to poll; it opens files lazily, so a lost checkpoint raises there, as
    ``CheckpointLostError``. Commit ``checkpoint`` whenever it differs from the one last committed:
    it follows each yielded line, and also moves on its own when the tailer enters a newer file or
    restarts a truncated one. Close the tailer (or use it as a context manager) when done.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        checkpoint: Checkpoint | None = None,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.path = os.fspath(path)
        self.max_line = max_line
        self._initial = checkpoint or Checkpoint.start(os.path.basename(self.path))
        self._cp = self._initial  # the checkpoint unless a line was yielded since it was set
        self._last: TailedLine | None = None
        self._placed = self._closed = False
        self._file: LogFile | None = None
        self._ident = LogIdentity(self._initial.name, 0, 0, fingerprint(b""), 0)
        self._live = False
        self._after: str | None = None  # siblings whose stem sorts up to this are done
        self._buf = b""  # unconsumed bytes; self._buf[self._pos] is at file offset _line_start
        self._pos = self._line_start = self._read_pos = 0
        self._oversize: bytes | None = None  # kept head of an oversize line being skipped
        self._seen = b""  # the file's first bytes as read, up to FINGERPRINT_BYTES

    @property
    def checkpoint(self) -> Checkpoint:
        """The position after everything yielded so far: where a restart would continue."""
        return self._last.checkpoint if self._last is not None else self._cp

    @property
    def current(self) -> LogIdentity | None:
        """The file being read now, or None while waiting for the log to appear."""
        return self._ident if self._file is not None else None

    def __enter__(self) -> Tailer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the open file; the tailer cannot be read afterwards."""
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, max_lines: int = 10_000) -> list[TailedLine]:
        """Up to ``max_lines`` lines available now, in log order; ``[]`` if there are none yet."""
        if self._closed:
            raise ValueError("the tailer is closed")
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        try:
            return self._read(max_lines)
        except OSError as exc:
            raise LogReadError(f"reading the log {self.path} failed: {exc}") from exc

    def _read(self, max_lines: int) -> list[TailedLine]:
        if not self._placed:
            self._place()
            self._placed = True
        if self._live:
            self._check_truncation()
        out: list[TailedLine] = []
        while len(out) < max_lines:
            self._take_lines(out, max_lines)
            if len(out) >= max_lines:
                break
            chunk = self._file.read(self._read_pos) if self._file is not None else b""
            if chunk:
                self._absorb(chunk, out)
            elif not self._move_on(out):
                break
        return out

    def _set_checkpoint(self, cp: Checkpoint) -> None:
        self._cp, self._last = cp, None

    def _enter(self, f: LogFile, pos: int, after: str | None) -> None:
        """Make ``f`` the current file, to be read from ``pos``."""
        if self._file is not None and self._file is not f:
            self._file.close()
        self._file, self._ident = f, f.identity()
        f.seek(pos)
        self._live = f.path == self.path
        self._after = after
        self._buf, self._pos, self._oversize = b"", 0, None
        self._line_start = self._read_pos = pos
        self._seen = f.head(min(pos, FINGERPRINT_BYTES))

    def _place(self) -> None:
        """Open the file holding the initial checkpoint, or wait for the log to appear."""
        cp = self._initial
        f = locate(self.path, cp) if cp.fingerprint_len > 0 else None
        if f is not None:
            live = f.path == self.path
            after = floor_sibling(rotated_siblings(self.path)) if live else log_stem(f.path)
            self._enter(f, cp.offset, after)
            return
        if cp.fingerprint_len > 0:
            raise lost_error(self.path, cp)
        # An empty file's checkpoint continues with the files rotated since it was live (one of
        # them is that file by now), else the live log; not by inode, which may have been reused.
        # The start of the live log continues with the files rotated from now on.
        self._after = (cp.after or None) if cp.ino else floor_sibling(rotated_siblings(self.path))
        self._open_waiting()

    def _open_waiting(self) -> bool:
        """Open the oldest file newer than ``_after``: one rotated meanwhile, else the live log."""
        siblings = rotated_siblings(self.path)
        newer = self._newer_sibling(siblings)
        if newer is not None:
            self._enter(newer[0], 0, newer[1])
            if self._ident.fingerprint_len > 0:
                self._set_checkpoint(Checkpoint.at(self._ident, 0))
            return True
        f = open_log(self.path)
        if f is None:
            return False
        floor = floor_sibling(siblings)
        self._enter(f, 0, floor)
        self._set_checkpoint(Checkpoint.at(self._ident, 0, floor))
        return True

    def _check_truncation(self) -> None:
        """Detect a truncated live file; finish its copy if one is a sibling, else restart it.

        Truncated means shorter than what was read, or no longer starting with the bytes read (up
        to ``FINGERPRINT_BYTES``): a file truncated and rewritten past the position is caught too.
        """
        f, ident = self._file, self._ident
        assert f is not None
        if f.size() >= self._read_pos and f.head(len(self._seen)) == self._seen:
            return
        copy = locate(self.path, Checkpoint.at(ident, self._line_start), exclude=(f.dev, f.ino))
        if copy is not None:
            self._enter(copy, self._line_start, log_stem(copy.path))
            return
        self._enter(f, 0, self._after)
        self._set_checkpoint(Checkpoint.at(self._ident, 0, self._after))

    def _emit(self, out: list[TailedLine], line: TailedLine) -> None:
        out.append(line)
        self._last = line

    def _take_lines(self, out: list[TailedLine], max_lines: int) -> None:
        """Move whole lines from the buffer to ``out``; start skipping a line that grows too long."""
        buf, start, limit, ident = self._buf, self._pos, self.max_line, self._ident
        base = self._line_start - start  # the file offset of buf[0]
        room = max_lines - len(out)
        emitted = 0
        while emitted < room:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if nl - start > limit:
                data, kind = buf[start : start + limit], LineKind.OVERSIZE
                out.append(TailedLine(data, ident, base + start, base + nl + 1, kind))
            else:
                out.append(TailedLine(buf[start:nl], ident, base + start, base + nl + 1))
            start = nl + 1
            emitted += 1
        self._line_start = base + start
        if emitted < room and len(buf) - start > limit:
            self._oversize, self._buf, self._pos = buf[start : start + limit], b"", 0
        else:
            self._buf, self._pos = buf, start
        if emitted:
            self._last = out[-1]

    def _absorb(self, chunk: bytes, out: list[TailedLine]) -> None:
        """Add newly read bytes; they may end the oversize line being skipped."""
        chunk_at = self._read_pos
        if chunk_at < FINGERPRINT_BYTES:
            self._seen += chunk[: FINGERPRINT_BYTES - chunk_at]
        self._read_pos += len(chunk)
        # Before any line of this chunk is emitted: a checkpoint past the file's first bytes must
        # carry their fingerprint, or it could not be placed again.
        f = self._file
        if self._ident.fingerprint_len < FINGERPRINT_BYTES and f is not None and not f.gz:
            self._ident = f.identity()
        if self._oversize is None:
            self._buf, self._pos = self._buf[self._pos :] + chunk, 0
        else:
            nl = chunk.find(b"\n")
            if nl >= 0:
                end = chunk_at + nl + 1
                kind = LineKind.OVERSIZE
                self._emit(
                    out, TailedLine(self._oversize, self._ident, self._line_start, end, kind)
                )
                self._oversize = None
                self._buf, self._pos, self._line_start = chunk[nl + 1 :], 0, end

    def _move_on(self, out: list[TailedLine]) -> bool:
        """At the end of the current file: follow a rotation, or open the log once it appears.

        Returns True if there may be more to read now. A file that was rotated away is left only
        once it has no more bytes and a newer file has data; an unended last line is then yielded
        as a fragment.
        """
        f = self._file
        if f is None:
            return self._open_waiting()
        if self._live:
            st = _stat(self.path)
            if st is not None and (st.st_dev, st.st_ino) == (f.dev, f.ino):
                return False
            self._live = False
            self._after = self._rotated_stem() or self._after
        found = self._next_file()
        if found is None:
            return False
        nxt, after = found
        if f.size() > self._read_pos:
            nxt.close()
            return True
        if self._oversize is not None or self._pos < len(self._buf):
            data = (self._oversize or self._buf[self._pos :])[: self.max_line]
            end, kind = self._read_pos, LineKind.FRAGMENT
            self._emit(out, TailedLine(data, self._ident, self._line_start, end, kind))
        self._enter(nxt, 0, after)
        if self._ident.fingerprint_len > 0:
            self._set_checkpoint(Checkpoint.at(self._ident, 0))
        return True

    def _rotated_stem(self) -> str | None:
        """The stem of the sibling the live file was rotated to, if it can be recognised.

        Siblings up to it are older; a copytruncate copy can sort after the floor taken when the
        file was opened yet hold older lines, so the floor is only the fallback.
        """
        siblings = list(reversed(rotated_siblings(self.path)))
        for p in siblings:
            # A renamed file keeps its inode: that match is exact, where equal first bytes (a
            # banner at the top of every file) are not. Content decides only for compressed copies.
            st = _stat(p)
            if st is not None and (st.st_dev, st.st_ino) == (self._ident.dev, self._ident.ino):
                return log_stem(p)
        for p in siblings:
            f = open_log(p, tolerate_corrupt=True)
            if f is not None:
                try:
                    if f.same_content(self._ident):
                        return log_stem(p)
                finally:
                    f.close()
        return None

    def _newer_sibling(self, siblings: list[str]) -> tuple[LogFile, str] | None:
        """The oldest sibling sorting after ``_after``, opened, with its stem."""
        for p in siblings:
            if (self._after is None or log_stem(p) > self._after) and (
                f := open_log(p)
            ) is not None:
                return f, log_stem(p)
        return None

    def _next_file(self) -> tuple[LogFile, str | None] | None:
        """The file after the current one, opened, with the stem that newer siblings sort after."""
        assert self._file is not None
        siblings = rotated_siblings(self.path)
        newer = self._newer_sibling(siblings)
        if newer is not None:
            return newer
        f = open_log(self.path)
        if f is None:
            return None
        if (f.dev, f.ino) == (self._file.dev, self._file.ino) or f.size() == 0:
            f.close()
            return None
        return f, floor_sibling(siblings)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def checkpoint_at_end(path: str | os.PathLike[str]) -> Checkpoint:
    """A checkpoint after the last whole line of the live log: only lines to come will be read."""
    path = os.fspath(path)
    floor = floor_sibling(rotated_siblings(path))
    f = open_log(path)
    if f is None:
        return Checkpoint.start(os.path.basename(path))
    try:
        pos = f.size()
        while pos > 0:
            n = min(CHUNK_BYTES, pos)
            pos -= n
            nl = f.read(pos, n).rfind(b"\n")
            if nl >= 0:
                return Checkpoint.at(f.identity(), pos + nl + 1, floor)
        return Checkpoint.at(f.identity(), 0, floor)
    finally:
        f.close()


def checkpoint_at_time(
    path: str | os.PathLike[str],
    when: datetime,
    line_time: Callable[[bytes], datetime | None],
    max_line: int = DEFAULT_MAX_LINE,
) -> Checkpoint:
    """A checkpoint at the first line whose time is at or after ``when``, oldest file first.

    ``line_time`` gives a line's time, or None for a line without one (skipped). With no such line
    yet, the checkpoint is after the last line there is, so only lines to come will be read.
    """
    path = os.fspath(path)
    with Tailer(path, _oldest(path), max_line) as tailer:
        while lines := tailer.read():
            for line in lines:
                if line.kind is LineKind.LINE and (t := line_time(line.data)) and t >= when:
                    return Checkpoint.at(line.source, line.offset)
        return tailer.checkpoint


def _oldest(path: str) -> Checkpoint | None:
    """The start of the oldest non-empty rotated sibling, or None (the live log) if none."""
    for p in rotated_siblings(path):
        f = open_log(p, tolerate_corrupt=True)
        if f is not None:
            try:
                ident = f.identity()
            finally:
                f.close()
            if ident.fingerprint_len > 0:
                return Checkpoint.at(ident, 0)
    return None
