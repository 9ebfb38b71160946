"""A logged upload the cache does not hold: a dead letter with its reason, and a FileMissing that
names the file, so the state keeper can record it MISSING."""

from __future__ import annotations

from pathlib import Path

from producers.gantry.lines import Arrival, LineHandler, Missing, missing_value
from producers.gantry.tailer import LogIdentity, TailedLine
from schemas.codec import Codec
from terra_xfer.sites.gantry import PathRules

FOLDER = "MAC/weather/2016-08-24"
IDENT = LogIdentity("xferlog", 1, 2, "ab" * 32, 64)


def handler(cache: Path) -> LineHandler:
    return LineHandler(PathRules(cache_root=str(cache), log_root="/gantry_data"), "xferlog", "UTC")


def line(rel: str, size: int = 7, offset: int = 4096) -> TailedLine:
    data = b"Wed Aug 24 05:00:00 2016 1 10.0.0.7 %d /gantry_data/%s b _ i r lemnatec ftp 0 * c" % (
        size,
        rel.encode(),
    )
    return TailedLine(data, IDENT, offset, offset + len(data) + 1)


def test_a_missing_file_is_a_dead_letter_that_names_the_file(tmp_path: Path) -> None:
    lines = handler(tmp_path)
    logged = line(f"{FOLDER}/gone.dat", size=1234)
    result = lines.handle(logged)
    assert isinstance(result, Missing)
    assert result.reason == f"file '{FOLDER}/gone.dat' is missing from the cache"
    assert result.where.rel == f"{FOLDER}/gone.dat"
    assert lines.counts.dead_letters == {"missing": 1}
    event = missing_value(result, logged, "xferlog", 99)
    assert event == {
        "key": f"ua-mac/{FOLDER}/gone.dat",
        "site": "ua-mac",
        "path": f"{FOLDER}/gone.dat",
        "raw_path": None,
        "sensor": "weather",
        "date": "2016-08-24",
        "reason": result.reason,
        "event_id": f"{'ab' * 8}:4096",
        "source": "XFERLOG",
        "source_ref": "xferlog@4096",
        "logged_ms": 1472014800000,
        "logged_size": 1234,
        "emitted_ms": 99,
    }
    codec = Codec()
    assert codec.decode(codec.encode("FileMissing", event)) == ("FileMissing", event)


def test_a_name_standing_for_several_files_says_the_sweeper_ships_them(tmp_path: Path) -> None:
    folder = tmp_path / FOLDER
    folder.mkdir(parents=True)
    (folder / "a b_c.dat").write_bytes(b"one")
    (folder / "a_b c.dat").write_bytes(b"two")
    (folder / "x y.dat").write_bytes(b"three")
    lines = handler(tmp_path)
    result = lines.handle(line(f"{FOLDER}/a_b_c.dat"))
    assert isinstance(result, Missing)
    assert result.reason == (
        f"file '{FOLDER}/a_b_c.dat' is missing from the cache; 2 files match its logged name "
        "(vsftpd logs a space as '_'), the sweeper ships them"
    )
    found = lines.handle(line(f"{FOLDER}/x_y.dat"))  # one file it stands for: resolved
    assert isinstance(found, Arrival) and found.where.rel == f"{FOLDER}/x y.dat"
