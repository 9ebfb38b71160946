"""The xferlog and nas.log parsers: real and variant lines parse, malformed ones say why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producers.gantry.xferlog import (
    AccessMode,
    AuthMethod,
    Completion,
    Direction,
    Malformed,
    NasEntry,
    Skipped,
    SkipReason,
    TransferType,
    Upload,
    XferlogParser,
    XferRecord,
    classify_line,
    parse_line,
    parse_nas_line,
    time_extractor,
)
from terra_xfer.errors import ConfigError

TERRA_LINE = (
    b"Tue Apr  5 12:35:58 2016 1 ::ffff:150.135.84.81 4061858 "
    b"/gantry_data/LemnaTec/EnvironmentLogger/2016-04-05/2016-04-05_12-34-58_enviromentlogger.json"
    b" b _ i r lemnatec ftp 0 * c\n"
)


def record(line: bytes) -> XferRecord:
    result = parse_line(line)
    assert isinstance(result, XferRecord), result
    return result


def test_real_terra_line_parses_every_field() -> None:
    rec = record(TERRA_LINE)
    assert rec == XferRecord(
        time=datetime(2016, 4, 5, 19, 35, 58, tzinfo=UTC),
        transfer_seconds=1,
        remote_host="::ffff:150.135.84.81",
        size=4061858,
        filename=b"/gantry_data/LemnaTec/EnvironmentLogger/2016-04-05/"
        b"2016-04-05_12-34-58_enviromentlogger.json",
        transfer_type=TransferType.BINARY,
        special_action="",
        direction=Direction.INCOMING,
        access_mode=AccessMode.REAL,
        username="lemnatec",
        service="ftp",
        auth_method=AuthMethod.NONE,
        auth_user_id="*",
        completion=Completion.COMPLETE,
    )
    assert classify_line(TERRA_LINE) == Upload(rec)


@pytest.mark.parametrize(
    "host",
    [
        b"150.135.84.81",
        b"::ffff:150.135.84.81",
        b"2001:db8::1",
        b"fe80::1%eth0",
        b"::1",
        b"gantry-cache.example.org",
        b"localhost",
    ],
)
def test_vsftpd_hosts_of_every_kind_parse(host: bytes) -> None:
    line = b"Mon Aug 28 03:02:01 2017 12 " + host + b" 8147712 /x/a_left.bin b _ i r u ftp 0 * c"
    assert record(line).remote_host == host.decode()


def test_anonymous_upload_with_chroot_path_and_email_id() -> None:
    line = (
        b"Wed Aug 30 10:13:23 2017 3 10.0.0.7 1024 /LemnaTec/MovingSensor/x.bin b _ i a "
        b"anonymous ftp 0 someone@example.org c"
    )
    rec = record(line)
    assert rec.access_mode is AccessMode.ANONYMOUS
    assert rec.username == "anonymous"
    assert rec.auth_user_id == "someone@example.org"
    assert rec.filename == b"/LemnaTec/MovingSensor/x.bin"


def test_vsftpd_underscore_for_space_is_kept_as_logged() -> None:
    line = b"Thu Sep  7 01:00:00 2017 0 10.0.0.7 5 /data/my_file_name.txt a _ i r u ftp 0 * c"
    rec = record(line)
    assert rec.filename == b"/data/my_file_name.txt"
    assert rec.transfer_type is TransferType.ASCII


def test_proftpd_filename_with_spaces_is_taken_from_both_ends() -> None:
    line = (
        b"Fri Sep  8 23:59:59 2017 7 host.example.org 42 /srv/ftp/a  b c.txt b C i g "
        b"guest ftp 1 ident-user i"
    )
    rec = record(line)
    assert rec.filename == b"/srv/ftp/a  b c.txt"
    assert rec.special_action == "C"
    assert rec.access_mode is AccessMode.GUEST
    assert rec.auth_method is AuthMethod.RFC931
    assert rec.auth_user_id == "ident-user"
    assert rec.completion is Completion.INCOMPLETE


def test_wuftpd_combined_special_actions() -> None:
    line = b"Sat Sep  9 00:00:00 2017 2 10.1.1.1 99 /pub/t.tar.Z b CT o r u ftp 0 * c"
    rec = record(line)
    assert rec.special_action == "CT"
    assert rec.direction is Direction.OUTGOING


def test_non_utf8_filename_is_kept_losslessly() -> None:
    name = b"/gantry_data/MAC/weather/2016-04-05/caf\xe9 \xff.dat"
    line = b"Tue Apr  5 12:35:58 2016 1 10.0.0.1 10 " + name + b" b _ i r u ftp 0 * c\n"
    rec = record(line)
    assert rec.filename == name
    assert rec.filename_str.encode("utf-8", "surrogateescape") == name


def test_crlf_terminated_line_parses() -> None:
    assert record(TERRA_LINE.rstrip(b"\n") + b"\r\n").completion is Completion.COMPLETE


def test_times_are_read_in_the_configured_zone() -> None:
    line = b"Sun Jul  2 12:00:00 2017 1 10.0.0.1 1 /f b _ i r u ftp 0 * c"
    phoenix = XferlogParser().parse(line)
    new_york = XferlogParser("America/New_York").parse(line)
    assert isinstance(phoenix, XferRecord) and isinstance(new_york, XferRecord)
    assert phoenix.time == datetime(2017, 7, 2, 19, 0, tzinfo=UTC)
    assert new_york.time == datetime(2017, 7, 2, 16, 0, tzinfo=UTC)


def test_minute_memo_does_not_leak_between_seconds_or_days() -> None:
    parser = XferlogParser()
    times = []
    for stamp in (
        b"Tue Apr  5 12:35:01 2016",
        b"Tue Apr  5 12:35:59 2016",
        b"Wed Apr  6 12:35:01 2016",
    ):
        rec = parser.parse(stamp + b" 1 h 1 /f b _ i r u ftp 0 * c")
        assert isinstance(rec, XferRecord)
        times.append(rec.time)
    assert times == [
        datetime(2016, 4, 5, 19, 35, 1, tzinfo=UTC),
        datetime(2016, 4, 5, 19, 35, 59, tzinfo=UTC),
        datetime(2016, 4, 6, 19, 35, 1, tzinfo=UTC),
    ]


def test_unknown_zone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        XferlogParser("Mars/Olympus")


@pytest.mark.parametrize(
    ("direction", "completion", "expected"),
    [
        (b"o", b"c", SkipReason.OUTGOING),
        (b"i", b"i", SkipReason.INCOMPLETE),
        (b"d", b"c", SkipReason.DELETED),
        (b"o", b"i", SkipReason.OUTGOING),
    ],
)
def test_non_uploads_are_skipped_with_a_reason(
    direction: bytes, completion: bytes, expected: SkipReason
) -> None:
    line = b"Tue Apr  5 12:35:58 2016 1 h 5 /f b _ " + direction + b" r u ftp 0 * " + completion
    result = classify_line(line)
    assert isinstance(result, Skipped)
    assert result.reason is expected


BASE = b"Tue Apr  5 12:35:58 2016 1 10.0.0.1 5 /f b _ i r u ftp 0 * c"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "empty"),
        (b"\n", "empty"),
        (b"Tue Apr  5 12:35:58 2016 1 10.0.0.1", "has 7 words"),
        (b"Tue Apr  5 12:35:58 2016 1 10.0.0.1 5 /f b _ i r u ftp 0 *", "has 17 words"),
        (BASE.replace(b"Apr", b"Foo"), "month 'Foo'"),
        (BASE.replace(b"Tue", b"Tus"), "weekday 'Tus'"),
        (BASE.replace(b"Apr  5", b"Apr 31"), "date 'Apr 31 2016' does not exist"),
        (BASE.replace(b"Apr  5", b"Apr x5"), "day of month 'x5'"),
        (BASE.replace(b"12:35:58", b"25:35:58"), "time of day"),
        (BASE.replace(b"12:35:58", b"12:35:61"), "time of day '12:35:61'"),
        (BASE.replace(b"2016", b"16"), "year '16'"),
        (BASE.replace(b"2016 1", b"2016 x"), "transfer time 'x'"),
        (BASE.replace(b"10.0.0.1", b"bad/host"), "remote host 'bad/host'"),
        (BASE.replace(b" 5 /f", b" -5 /f"), "byte count '-5'"),
        (BASE.replace(b" 5 /f", b" 5_000 /f"), "byte count '5_000'"),
        (BASE.replace(b"/f b", b"/f x"), "transfer type 'x'"),
        (BASE.replace(b"b _ i", b"b Z i"), "special action 'Z'"),
        (BASE.replace(b"_ i r", b"_ x r"), "direction 'x'"),
        (BASE.replace(b"i r u", b"i z u"), "access mode 'z'"),
        (BASE.replace(b"ftp 0", b"ftp 2"), "authentication method '2'"),
        (BASE[:-1] + b"x", "completion status 'x'"),
        (b"garbage that is not a log line at all but it has many many words in it ok", "weekday"),
        (b"\xff\xfe\x00 binary junk", "has 3 words"),
    ],
)
def test_malformed_lines_are_results_with_a_reason(line: bytes, reason: str) -> None:
    result = classify_line(line)
    assert isinstance(result, Malformed)
    assert reason in result.reason
    assert result.line == line


@given(st.binary(max_size=300))
def test_parser_never_raises(line: bytes) -> None:
    assert isinstance(parse_line(line), XferRecord | Malformed)


_FIELD_CHOICES = [
    [b"Tue", b"Mon", b"Xyz"],
    [b"Apr", b"Feb", b"Foo"],
    [b"5", b"30", b"x"],
    [b"12:35:58", b"24:00:00", b"12:35"],
    [b"2016", b"16"],
    [b"1", b"-1"],
    [b"::ffff:150.135.84.81", b"gantry.example.org", b"h\xff"],
    [b"4061858", b"4e3"],
    [b"/gantry_data/MAC/w/2016-04-05/a.dat", b"/x\xffy"],
    [b"b", b"a", b"z"],
    [b"_", b"C", b"Q"],
    [b"i", b"o", b"d", b"x"],
    [b"r", b"a", b"g", b"q"],
    [b"lemnatec", b"\xfe"],
    [b"ftp"],
    [b"0", b"1", b"2"],
    [b"*"],
    [b"c", b"i", b"?"],
]


@given(st.tuples(*(st.sampled_from(choices) for choices in _FIELD_CHOICES)), st.integers(0, 3))
def test_the_one_split_shortcut_classifies_as_the_full_parse(
    fields: tuple[bytes, ...], spaces: int
) -> None:
    line = (b" " * (1 + spaces)).join(fields) + b"\n"
    parsed = parse_line(line)
    result = classify_line(line)
    if isinstance(parsed, Malformed):
        assert result == parsed
    else:
        assert not isinstance(result, Malformed) and result.record == parsed


def test_time_extractor_reads_the_line_start() -> None:
    extract = time_extractor()
    assert extract(TERRA_LINE) == datetime(2016, 4, 5, 19, 35, 58, tzinfo=UTC)
    assert extract(b"not a time at all") is None
    assert extract(b"") is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            b"/gantry_data/MAC/lightning/2016-06-29/LW110_ALARM1min.dat\n",
            NasEntry(b"/gantry_data/MAC/lightning/2016-06-29/LW110_ALARM1min.dat"),
        ),
        (b"/gantry_data/MAC/x \xff.dat\r\n", NasEntry(b"/gantry_data/MAC/x \xff.dat")),
        (b"\n", None),
        (b"   \n", None),
        (b"", None),
    ],
)
def test_nas_lines(line: bytes, expected: NasEntry | None) -> None:
    assert parse_nas_line(line) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [(b"relative/path.dat\n", "not absolute"), (b"/a/\x00b\n", "NUL")],
)
def test_malformed_nas_lines(line: bytes, reason: str) -> None:
    result = parse_nas_line(line)
    assert isinstance(result, Malformed)
    assert reason in result.reason


def test_nas_entry_str_round_trips() -> None:
    entry = parse_nas_line(b"/a/\xe9.dat\n")
    assert isinstance(entry, NasEntry)
    assert entry.path_str.encode("utf-8", "surrogateescape") == b"/a/\xe9.dat"


def test_parser_accepts_a_zoneinfo_and_outlives_its_memo() -> None:
    parser = XferlogParser(ZoneInfo("UTC"))
    start = datetime(2016, 1, 1, tzinfo=UTC)
    for minute in range(5000):  # more distinct minutes than the memo keeps
        when = start + timedelta(minutes=minute)
        stamp = when.strftime("%a %b ") + f"{when.day:2d}" + when.strftime(" %H:%M:%S %Y")
        rec = parser.parse(stamp.encode() + b" 1 h 1 /f b _ i r u ftp 0 * c")
        assert isinstance(rec, XferRecord) and rec.time == when


def test_badly_shaped_time_of_day_is_malformed() -> None:
    result = parse_line(BASE.replace(b"12:35:58", b"1:35:58"))
    assert isinstance(result, Malformed)
    assert "time of day starting '1:35:'" in result.reason
