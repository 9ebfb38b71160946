"""Parse FTP transfer logs: the 14-field xferlog format and the one-path-per-line ``nas.log``.

Both parsers take one raw line as ``bytes`` and return a value, never raise on bad input: a line that
cannot be parsed becomes a ``Malformed`` result with a one-sentence reason, so the caller can
dead-letter it together with its raw bytes and byte offset.

An xferlog line (wu-ftpd, vsftpd with ``xferlog_std_format=YES``, proftpd) reads::

    Tue Apr  5 12:35:58 2016 1 ::ffff:150.135.84.81 4061858 /gantry_data/.../x.json b _ i r lemnatec ftp 0 * c

The filename is everything between the bytes field and the last nine fields, so names with spaces
(proftpd, wu-ftpd) survive; it is kept as ``bytes`` because servers log names byte for byte. Leading
and trailing whitespace of a filename cannot be told from the field separators and is not kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from terra_xfer.errors import ConfigError

DEFAULT_ZONE = "America/Phoenix"

_MONTHS = {
    m.encode(): i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_WEEKDAYS = frozenset(d.encode() for d in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))
# A host is an IPv4/IPv6 address (with an optional %zone) or a DNS name: these bytes cover all.
_HOST_BYTES = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.:%_-"
_SPECIAL_LETTERS = b"CUT"
_CACHE_LIMIT = 4096
_COLON = ord(":")


class TransferType(StrEnum):
    """How the file was transferred: ASCII or binary (image) mode."""

    ASCII = "a"
    BINARY = "b"


class Direction(StrEnum):
    """Which way the file went; ``d`` (deleted) is logged by some servers in this field."""

    INCOMING = "i"
    OUTGOING = "o"
    DELETED = "d"


class AccessMode(StrEnum):
    """How the user logged in: anonymous, guest, or a real (local) user."""

    ANONYMOUS = "a"
    GUEST = "g"
    REAL = "r"


class AuthMethod(IntEnum):
    """How the user was authenticated: none, or RFC 931 (ident)."""

    NONE = 0
    RFC931 = 1


class Completion(StrEnum):
    """Whether the transfer completed or was cut short."""

    COMPLETE = "c"
    INCOMPLETE = "i"


class SkipReason(StrEnum):
    """Why a well-formed line is not an upload to ship; callers count these."""

    OUTGOING = "outgoing"
    DELETED = "deleted"
    INCOMPLETE = "incomplete"


class XferRecord(NamedTuple):
    """One parsed xferlog line; ``time`` is the logged local time converted to aware UTC.

    A named tuple rather than a frozen dataclass: one is built per log line, three times faster.
    """

    time: datetime
    transfer_seconds: int
    remote_host: str
    size: int
    filename: bytes
    transfer_type: TransferType
    special_action: str
    direction: Direction
    access_mode: AccessMode
    username: str
    service: str
    auth_method: AuthMethod
    auth_user_id: str
    completion: Completion

    @property
    def filename_str(self) -> str:
        """The filename as ``str``; undecodable bytes become surrogates, so it round-trips to bytes."""
        return self.filename.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class Upload:
    """A complete incoming transfer: a file to ship."""

    record: XferRecord


@dataclass(frozen=True, slots=True)
class Skipped:
    """A well-formed line that is not an upload (outgoing, deleted or incomplete)."""

    record: XferRecord
    reason: SkipReason


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line that could not be parsed; ``reason`` is one sentence fit for a dead letter."""

    reason: str
    line: bytes


@dataclass(frozen=True, slots=True)
class NasEntry:
    """One ``nas.log`` entry: an absolute path, kept as the bytes that were logged."""

    path: bytes

    @property
    def path_str(self) -> str:
        """The path as ``str``; undecodable bytes become surrogates, so it round-trips to bytes."""
        return self.path.decode("utf-8", "surrogateescape")


ParseResult = XferRecord | Malformed
Classified = Upload | Skipped | Malformed

_TYPES = {m.value.encode(): m for m in TransferType}
_DIRECTIONS = {m.value.encode(): m for m in Direction}
_ACCESS = {m.value.encode(): m for m in AccessMode}
_AUTH = {str(m.value).encode(): m for m in AuthMethod}
_COMPLETION = {m.value.encode(): m for m in Completion}


def _show(token: bytes) -> str:
    """A token as printable text for an error message, with undecodable bytes escaped."""
    return token[:80].decode("ascii", "backslashreplace")


def _zone(name: str | ZoneInfo) -> ZoneInfo:
    if isinstance(name, ZoneInfo):
        return name
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"log time zone {name!r} is not a known IANA time zone") from exc


class XferlogParser:
    """Parses xferlog lines whose times are local to ``zone`` (an IANA name or a ``ZoneInfo``).

    The instance memoises each full time it has seen and the UTC start of each local minute, since
    consecutive lines mostly share their second and minute; that is exact wherever the zone's offset changes on a minute boundary,
    as every zone's has since 1970. Keep one parser per log.
    """

    def __init__(self, zone: str | ZoneInfo = DEFAULT_ZONE) -> None:
        self.zone = _zone(zone)
        self._minutes: dict[tuple[bytes, ...], datetime | str] = {}
        self._seconds: dict[tuple[bytes, ...], datetime | str] = {}

    def _time(self, tokens: list[bytes]) -> datetime | str:
        """The UTC time of the first five tokens, or the reason they are not a valid time."""
        key = (tokens[0], tokens[1], tokens[2], tokens[3], tokens[4])
        when = self._seconds.get(key)
        if when is None:
            when = self._second(tokens)
            if len(self._seconds) >= _CACHE_LIMIT:
                self._seconds.clear()
            self._seconds[key] = when
        return when

    def _second(self, tokens: list[bytes]) -> datetime | str:
        hms = tokens[3]
        key = (tokens[0], tokens[1], tokens[2], hms[:5], tokens[4])
        minute = self._minutes.get(key)
        if minute is None:
            minute = self._minute(*key)
            if len(self._minutes) >= _CACHE_LIMIT:
                self._minutes.clear()
            self._minutes[key] = minute
        if isinstance(minute, str):
            return minute
        seconds = hms[6:]
        if len(hms) != 8 or hms[5] != _COLON or not seconds.isdigit() or seconds > b"59":
            return f"time of day {_show(hms)!r} is not HH:MM:SS"
        return minute.replace(second=int(seconds))

    def _minute(self, wd: bytes, mon: bytes, day: bytes, hm: bytes, year: bytes) -> datetime | str:
        """The UTC start of a local minute, or the reason the tokens do not name one."""
        if wd not in _WEEKDAYS:
            return f"weekday {_show(wd)!r} is not a three-letter English weekday name"
        month = _MONTHS.get(mon)
        if month is None:
            return f"month {_show(mon)!r} is not a three-letter English month name"
        if not (day.isdigit() and len(day) <= 2):
            return f"day of month {_show(day)!r} is not a number"
        if not (year.isdigit() and len(year) == 4):
            return f"year {_show(year)!r} is not a four-digit year"
        digits = hm[:2] + hm[3:]
        if not (len(hm) == 5 and hm[2] == _COLON and digits.isdigit()):
            return f"time of day starting {_show(hm)!r} is not HH:MM:SS"
        if hm[:2] > b"23" or hm[3:] > b"59":
            return f"time of day starting {_show(hm)!r} is not HH:MM:SS"
        try:
            local = datetime(int(year), month, int(day), int(hm[:2]), int(hm[3:]), tzinfo=self.zone)
        except ValueError:
            return f"date {_show(b' '.join((mon, day, year)))!r} does not exist"
        return local.astimezone(UTC)

    def line_time(self, line: bytes) -> datetime | None:
        """The UTC time at the start of an xferlog line, or None if it does not start with one."""
        tokens = line.split(None, 5)
        if len(tokens) < 5:
            return None
        result = self._time(tokens)
        return result if isinstance(result, datetime) else None

    def parse(self, line: bytes) -> ParseResult:
        """Parse one line (a trailing newline is ignored) into an ``XferRecord`` or ``Malformed``."""
        head = line.split(None, 8)
        if not head:
            return Malformed("line is empty", line)
        if len(head) < 9:
            return Malformed(f"line has {len(head)} words; an xferlog line has at least 18", line)
        tail = head[8].rsplit(None, 9)
        if len(tail) < 10:
            return Malformed(
                f"line has {8 + len(tail)} words; an xferlog line has at least 18", line
            )
        when = self._time(head)
        if isinstance(when, str):
            return Malformed(when, line)
        problem = _check_head(head)
        if problem is not None:
            return Malformed(problem, line)
        return _record(when, head, tail, line)

    def classify(self, line: bytes) -> Classified:
        """Parse one line and sort it into an upload to ship, a counted skip, or malformed."""
        tokens = line.split()
        if len(tokens) == 18:
            # The usual line (no blank in the filename): one split gives every field, and the
            # checks are those of ``parse``.
            when = self._time(tokens)
            if isinstance(when, str):
                return Malformed(when, line)
            problem = _check_head(tokens)
            record = (
                Malformed(problem, line) if problem else _record(when, tokens, tokens[8:], line)
            )
        else:
            record = self.parse(line)
        if isinstance(record, Malformed):
            return record
        if record.direction is Direction.INCOMING:
            if record.completion is Completion.COMPLETE:
                return Upload(record)
            return Skipped(record, SkipReason.INCOMPLETE)
        if record.direction is Direction.OUTGOING:
            return Skipped(record, SkipReason.OUTGOING)
        return Skipped(record, SkipReason.DELETED)


def _check_head(head: list[bytes]) -> str | None:
    """The reason the transfer-time, host or bytes field is invalid, or None."""
    if not head[5].isdigit():
        return f"transfer time {_show(head[5])!r} is not a whole number of seconds"
    if head[6].translate(None, _HOST_BYTES):
        return f"remote host {_show(head[6])!r} is not an IP address or host name"
    if not head[7].isdigit():
        return f"byte count {_show(head[7])!r} is not a non-negative whole number"
    return None


def _record(when: datetime, head: list[bytes], tail: list[bytes], line: bytes) -> ParseResult:
    """Build the record from validated head fields and the unvalidated last ten tail parts."""
    filename, ttype, special, direc, access, user, service, auth, auth_id, done = tail
    transfer_type = _TYPES.get(ttype)
    if transfer_type is None:
        return Malformed(f"transfer type {_show(ttype)!r} is not 'a' or 'b'", line)
    if special != b"_" and special.translate(None, _SPECIAL_LETTERS):
        return Malformed(f"special action {_show(special)!r} is not '_' or letters C/U/T", line)
    direction = _DIRECTIONS.get(direc)
    if direction is None:
        return Malformed(f"direction {_show(direc)!r} is not 'i', 'o' or 'd'", line)
    access_mode = _ACCESS.get(access)
    if access_mode is None:
        return Malformed(f"access mode {_show(access)!r} is not 'a', 'g' or 'r'", line)
    auth_method = _AUTH.get(auth)
    if auth_method is None:
        return Malformed(f"authentication method {_show(auth)!r} is not '0' or '1'", line)
    completion = _COMPLETION.get(done)
    if completion is None:
        return Malformed(f"completion status {_show(done)!r} is not 'c' or 'i'", line)
    # Positional arguments: this runs once per log line and keywords cost a third more.
    return XferRecord(
        when,
        int(head[5]),
        head[6].decode("ascii"),
        int(head[7]),
        filename,
        transfer_type,
        "" if special == b"_" else special.decode("ascii"),
        direction,
        access_mode,
        user.decode("utf-8", "surrogateescape"),
        service.decode("utf-8", "surrogateescape"),
        auth_method,
        auth_id.decode("utf-8", "surrogateescape"),
        completion,
    )


@lru_cache(maxsize=8)
def parser_for(zone: str = DEFAULT_ZONE) -> XferlogParser:
    """A shared parser for ``zone``; raises ``ConfigError`` for an unknown zone name."""
    return XferlogParser(zone)


def parse_line(line: bytes, zone: str = DEFAULT_ZONE) -> ParseResult:
    """Parse one xferlog line read in ``zone``; see ``XferlogParser.parse``."""
    return parser_for(zone).parse(line)


def classify_line(line: bytes, zone: str = DEFAULT_ZONE) -> Classified:
    """Classify one xferlog line read in ``zone``; see ``XferlogParser.classify``."""
    return parser_for(zone).classify(line)


def time_extractor(zone: str = DEFAULT_ZONE) -> Callable[[bytes], datetime | None]:
    """A function giving an xferlog line's UTC time (or None), for re-seating a tailer by time."""
    return parser_for(zone).line_time


def parse_nas_line(line: bytes) -> NasEntry | Malformed | None:
    """Parse one ``nas.log`` line: an absolute path, None for a blank line, or ``Malformed``.

    Only the line terminator is removed, so a path keeps any other whitespace it was logged with.
    """
    path = line.rstrip(b"\r\n")
    if not path.strip():
        return None
    if not path.startswith(b"/"):
        return Malformed(f"path {_show(path)!r} is not absolute", line)
    if b"\0" in path:
        return Malformed("path contains a NUL byte", line)
    return NasEntry(path)
