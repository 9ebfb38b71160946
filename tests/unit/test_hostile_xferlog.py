"""Hostile xferlog lines through the parser and the line handler: no crash, every line accounted for.

Each line read becomes exactly one of: a FileArrived for a regular file in the cache (whose event
encodes and names the file on disk), a dead letter with a one-sentence reason, or a counted skip.
Names carry control characters, ``..``, ``?`` and ``_`` (vsftpd's stand-ins), spaces, very long
components, and newlines; a name with a newline splits its log line in two, and both halves must be
dead letters while the real file stays findable by the sweeper.

The defects these tests found have each a test of their own at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from producers.gantry.lines import Arrival, LineHandler, Rejected, arrival_value
from producers.gantry.tailer import LogIdentity, TailedLine, Tailer
from producers.gantry.xferlog import Malformed, XferRecord, parse_line
from producers.sweeper import walk
from schemas.codec import Codec
from terra_xfer.sites.gantry import CachePath, PathRules, cache_path

ZONE = "America/Phoenix"
IDENT = LogIdentity("xferlog", 1, 2, "0" * 64, 64)
STAMP = b"Tue Apr  5 12:35:58 2016"
CODEC = Codec()
HOSTILE = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FOLDERS = (
    b"MAC/weather/2016-08-24/",
    b"LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916/",
    b"LemnaTec/EnvironmentLogger/2016-04-05/",
    b"LemnaTec/MovingSensor/",
    b"ScriptBackup/2016-08-24/",
    b"",
)
SPECIAL = (
    b"..",
    b".",
    b" ",
    b"\t",
    b"\x1b[31m",
    b"a b",
    b"_",
    b"?",
    b"-rf",
    b"~",
    b"\x7f",
    b"x" * 255,
)


def xfer_line(path: bytes, user: bytes = b"lemnatec", size: bytes = b"1") -> bytes:
    return (
        STAMP
        + b" 1 10.0.0.1 "
        + size
        + b" /gantry_data/"
        + path
        + b" b _ i r "
        + user
        + b" ftp 0 * c"
    )


def component(text_only: bool) -> st.SearchStrategy[bytes]:
    """One path component: any bytes, or UTF-8 text only."""
    raw = (
        st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40).map(
            lambda s: s.encode()
        )
        if text_only
        else st.binary(min_size=1, max_size=60)
    )
    cleaned = raw.map(lambda b: b.replace(b"/", b"-").replace(b"\0", b"0").replace(b"\n", b"N"))
    return st.one_of(st.sampled_from(SPECIAL), cleaned).filter(lambda b: 0 < len(b) <= 255)


@st.composite
def hostile_path(draw: st.DrawFn) -> bytes:
    """A relative path under the log root: a real folder or none, hostile components, a name."""
    folder = draw(st.sampled_from(FOLDERS))
    dirs = draw(st.lists(component(text_only=False), max_size=3))
    name = draw(component(text_only=False))
    return folder + b"".join(d + b"/" for d in dirs) + name


def handler(root: Path) -> LineHandler:
    return LineHandler(PathRules(cache_root=str(root), log_root="/gantry_data"), "xferlog", ZONE)


def plant(root: Path, rel: bytes, data: bytes = b"x") -> bool:
    """Create ``root/rel`` when it is a plain path inside the root; True if the file exists."""
    parts = rel.split(b"/")
    if any(p in (b"", b".", b"..") for p in parts):
        return False
    path = os.path.join(os.fsencode(root), rel)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(data)
    except OSError:
        return False  # too long, or a component is a file (or the name a directory) already
    return True


def accounted(h: LineHandler) -> bool:
    c = h.counts
    return c.lines == c.uploads + sum(c.skipped.values()) + sum(c.dead_letters.values())


def check_result(root: Path, result: Arrival | Rejected | None, line: TailedLine) -> None:
    """An arrival names a regular file in the cache and encodes; a rejection says why."""
    if isinstance(result, Rejected):
        assert result.reason.strip()
        result.reason.encode("utf-8")  # a DeadLetter reason is an Avro string
        return
    if isinstance(result, Arrival):
        value = arrival_value(result, line, "xferlog", 0)
        _name, decoded = CODEC.decode(CODEC.encode("FileArrived", value))
        on_disk = decoded["raw_path"] or decoded["path"].encode()
        assert os.path.isfile(os.path.join(os.fsencode(root), on_disk))
        assert not os.path.islink(os.path.join(os.fsencode(root), on_disk))
        assert decoded["key"] == f"ua-mac/{decoded['path']}"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@HOSTILE
@given(rel=hostile_path(), exists=st.booleans())
def test_hostile_names_are_shipped_dead_lettered_or_skipped_never_a_crash(
    cache: Path, rel: bytes, exists: bool
) -> None:
    if exists:
        plant(cache, rel)
    h = handler(cache)
    data = xfer_line(rel)
    line = TailedLine(data, IDENT, 0, len(data) + 1)
    result = h.handle(line)
    event(type(result).__name__)
    assert accounted(h)
    check_result(cache, result, line)
    if b"/../" in b"/" + rel + b"/":
        assert isinstance(result, Rejected)


@HOSTILE
@given(
    index=st.integers(0, 17).filter(lambda i: i != 8),  # every word but the filename
    token=st.binary(min_size=1, max_size=30),
)
def test_a_hostile_field_is_malformed_with_a_reason_or_still_parses(
    index: int, token: bytes
) -> None:
    words = xfer_line(b"MAC/weather/2016-08-24/a.dat").split()
    token = b"".join(token.split())  # one word
    assume(token)
    words[index] = token
    line = b" ".join(words)
    result = parse_line(line)
    assert isinstance(result, XferRecord | Malformed)
    if isinstance(result, Malformed):
        assert result.reason and result.line == line


@HOSTILE
@given(
    first=component(text_only=True),
    rest=st.lists(component(text_only=True), min_size=1, max_size=3),
)
def test_a_name_with_newlines_splits_into_lines_that_are_all_dead_letters(
    tmp_path_factory: pytest.TempPathFactory, first: bytes, rest: list[bytes]
) -> None:
    root = tmp_path_factory.mktemp("nl")
    cache, log = root / "cache", root / "xferlog"
    name = b"\n".join([first, *rest])  # as the FTP server writes it, newlines and all
    rel = b"MAC/weather/2016-08-24/" + name
    planted = plant(cache, rel)
    log.write_bytes(xfer_line(rel) + b"\n")
    h = handler(cache)
    with Tailer(log) as tailer:
        lines = tailer.read()
    assert len(lines) == name.count(b"\n") + 1
    results = [h.handle(line) for line in lines]
    assert all(isinstance(r, Rejected) and r.reason for r in results), results
    assert accounted(h) and sum(h.counts.dead_letters.values()) == len(lines)
    if planted and not name.startswith(b"."):  # the sweeper finds the file by walking the cache
        found = {os.fsencode(rel_) for rel_, _st in walk(str(cache), ("MAC/",))}
        assert rel in found
        where = cache_path(os.fsdecode(rel), handler(cache).rules)
        assert isinstance(where, CachePath) and os.fsencode(where.rel) == rel


@pytest.mark.parametrize(
    ("target", "shipped"),
    [(b"MAC/weather/2016-08-24/other.dat", True), (b"../../etc/passwd", False)],
)
def test_a_newline_then_a_forged_line_can_name_only_a_cache_file(
    tmp_path: Path, target: bytes, shipped: bool
) -> None:
    """After a newline the rest of a name reads as a line of its own, and the server appends the
    real line's tail to it; the path rules still apply, so a forged line can only name a regular,
    whitelisted file in the cache (which the sweeper would ship anyway), never anything else."""
    assert plant(tmp_path, b"MAC/weather/2016-08-24/other.dat")
    name = b"a\n" + STAMP + b" 1 10.0.0.1 1 /gantry_data/" + target
    log = tmp_path / "xferlog"
    log.write_bytes(xfer_line(b"MAC/weather/2016-08-24/" + name) + b"\n")
    h = handler(tmp_path)
    with Tailer(log) as tailer:
        results = [h.handle(line) for line in tailer.read()]
    assert isinstance(results[0], Rejected) and len(results) == 2
    if shipped:
        assert isinstance(results[1], Arrival)
        assert results[1].where.rel == "MAC/weather/2016-08-24/other.dat"
    else:
        assert isinstance(results[1], Rejected) and "'..'" in results[1].reason


def test_a_huge_byte_count_and_transfer_time_still_parse() -> None:
    digits = b"9" * 400
    line = xfer_line(b"MAC/weather/2016-08-24/a.dat", size=digits).replace(
        b" 1 10.0", b" " + digits + b" 10.0"
    )
    record = parse_line(line)
    assert isinstance(record, XferRecord) and record.size == int(digits)


# --- defects found by the property tests, each pinned -----------------------------------------


def handled(root: Path, rel: bytes, user: bytes = b"lemnatec") -> Arrival | Rejected | None:
    h = handler(root)
    data = xfer_line(rel, user=user)
    line = TailedLine(data, IDENT, 0, len(data) + 1)
    result = h.handle(line)
    check_result(root, result, line)
    return result


def test_a_non_utf8_sensor_directory_does_not_stop_the_producer(tmp_path: Path) -> None:
    rel = b"LemnaTec/MovingSensor/\xffcam/2017-08-24/2017-08-24__12-40-01-916/a_left.bin"
    assert plant(tmp_path, rel)
    handled(tmp_path, rel)


def test_a_non_utf8_username_does_not_stop_the_producer(tmp_path: Path) -> None:
    rel = b"MAC/weather/2016-08-24/a.dat"
    assert plant(tmp_path, rel)
    handled(tmp_path, rel, user=b"\xff\xfeuser")


@pytest.mark.parametrize(
    "rel",
    [
        b"MAC/weather/2016-08-24/" + b"n" * 256,
        b"MAC/weather/2016-08-24/" + b"/".join([b"d" * 200] * 21),
    ],
    ids=["name-over-NAME_MAX", "path-over-PATH_MAX"],
)
def test_an_overlong_name_is_a_dead_letter(tmp_path: Path, rel: bytes) -> None:
    (tmp_path / "MAC/weather/2016-08-24").mkdir(parents=True)
    assert isinstance(handled(tmp_path, rel), Rejected)
