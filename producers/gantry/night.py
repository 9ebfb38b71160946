"""A simulated gantry night: cache files written as the FTP server would, and their xferlog lines.

Used by the demo, the benchmarks and the tests, so they all exercise the real formats: the cache
tree of ARCHITECTURE §3 and vsftpd's ``xferlog_std_format`` lines.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

PHOENIX = ZoneInfo("America/Phoenix")

# (relative directory template, file suffixes, whitelisted)
SENSORS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    (
        "LemnaTec/MovingSensor/stereoTop/{date}/{ts}",
        ("_left.bin", "_right.bin", "_metadata.json"),
        True,
    ),
    ("LemnaTec/MovingSensor/flirIrCamera/{date}/{ts}", ("_ir.bin", "_metadata.json"), True),
    ("LemnaTec/MovingSensor/VNIR/{date}/{ts}", ("_raw", "_metadata.json"), True),
    (
        "LemnaTec/3DScannerRawDataTmp/scanner3DTop/{date}/{ts}",
        ("__Top-heading-east_0.ply", "_metadata.json"),
        True,
    ),
    ("LemnaTec/EnvironmentLogger/{date}", ("_environmentlogger.json",), True),
    ("MAC/weather/{date}", ("_weather.dat",), True),
    ("ScriptBackup/{date}", ("_backup.tar",), False),
)


@dataclass(frozen=True)
class Upload:
    rel: str
    size: int
    when: datetime
    whitelisted: bool


def xferlog_line(
    when: datetime,
    logged_path: str,
    size: int,
    *,
    host: str = "::ffff:150.135.84.81",
    direction: str = "i",
    completion: str = "c",
    user: str = "lemnatec",
    seconds: int = 1,
) -> bytes:
    """One vsftpd ``xferlog_std_format`` line (spaces in names logged as ``_``, as vsftpd does)."""
    local = when.astimezone(PHOENIX)
    stamp = f"{local:%a %b} {local.day:2d} {local:%H:%M:%S %Y}"
    name = logged_path.replace(" ", "_")
    return (
        f"{stamp} {seconds} {host} {size} {name} b _ {direction} r {user} ftp 0 * {completion}\n"
    ).encode()


def uploads(start: datetime, count: int, seed: int = 7, size: int = 4096) -> Iterator[Upload]:
    """``count`` uploads spread over the sensors, in time order, a few seconds apart.

    Every path is uploaded once (names stamped to the second move on a second when taken).
    """
    rng = random.Random(seed)
    when = start
    taken: set[str] = set()
    while count > 0:
        template, suffixes, whitelisted = SENSORS[rng.randrange(len(SENSORS))]
        local = when.astimezone(PHOENIX)
        stem = str(uuid.UUID(int=rng.getrandbits(128)))
        by_second = "EnvironmentLogger" in template or "weather" in template or not whitelisted
        while True:
            folder = template.format(
                date=f"{local:%Y-%m-%d}",
                ts=f"{local:%Y-%m-%d__%H-%M-%S}-{local.microsecond // 1000:03d}",
            )
            if by_second:
                stem = f"{local:%Y-%m-%d_%H-%M-%S}"
            if f"{folder}/{stem}" not in taken:
                break
            local += timedelta(seconds=1)
        taken.add(f"{folder}/{stem}")
        for suffix in suffixes[:count]:
            yield Upload(f"{folder}/{stem}{suffix}", size, when, whitelisted)
            count -= 1
        when += timedelta(milliseconds=rng.randrange(200, 3000))


def metadata_document(upload: Upload) -> bytes:
    """A LemnaTec-style ``*_metadata.json`` (the keys with dots are as the gantry writes them)."""
    local = upload.when.astimezone(PHOENIX)
    doc = {
        "lemnatec_measurement_metadata": {
            "gantry_system_variable_metadata": {
                "time": f"{local:%m/%d/%Y %H:%M:%S}",
                "position x [m]": "207.013",
                "position y [m]": "3.003",
                "position z [m]": "0.63",
                "speed x [m/s]": "0",
                "camera.exposure": "auto",
            },
            "sensor_fixed_metadata": {
                "sensor id": upload.rel.split("/")[-4:-3][0]
                if upload.rel.count("/") >= 4
                else "unknown"
            },
        }
    }
    return json.dumps(doc, indent=2).encode()


def write_upload(cache_root: Path, upload: Upload, rng: random.Random | None = None) -> None:
    """Create the file as the FTP server leaves it: full content, mtime at the upload's time.

    Metadata files get a JSON document (their size is then the document's, not ``upload.size``).
    """
    path = cache_root / upload.rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if upload.rel.endswith("_metadata.json"):
        data = metadata_document(upload)
    else:
        data = (rng or random).randbytes(upload.size) if upload.size else b""
    path.write_bytes(data)
    stamp = upload.when.timestamp()
    os.utime(path, (stamp, stamp))


def log_line(upload: Upload, log_root: str = "/gantry_data", size: int | None = None) -> bytes:
    """The xferlog line of an upload (``size``: the bytes written, when they differ)."""
    return xferlog_line(
        upload.when, f"{log_root}/{upload.rel}", upload.size if size is None else size
    )
