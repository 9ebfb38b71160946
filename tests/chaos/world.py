"""The night a chaos run ships: uploads written into the cache and the xferlog while stages run.

It records what the invariants need: every whitelisted file's digest and version, every other
file's version (it must stay untouched), and the malformed lines it slipped into the log.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from producers.gantry.night import Upload, log_line, uploads, write_upload
from tests.chaos.invariants import Stamp

START = datetime(2017, 8, 24, 19, tzinfo=UTC)
BAD_LINES = (
    b"this is not an xferlog line",
    b"Tue Apr  5 12:35:58 2016 1 ::ffff:150.135.84.81 4061858",
    b"Tue Foo  5 12:35:58 2016 1 ::ffff:150.135.84.81 1 /gantry_data/MAC/x b _ i r u ftp 0 * c",
    b"Tue Apr  5 12:35:58 2016 1 ::ffff:150.135.84.81 1 /gantry_data/MAC/x b _ i r u ftp 0 * Z",
    b"Tue Apr  5 12:35:58 2016 1 h\xff\xfe 1 /gantry_data/MAC/x b _ i r u ftp 0 * c",
)


def stamp(path: Path) -> Stamp:
    st = os.lstat(path)
    return Stamp(hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns)


@dataclass
class Night:
    """Writes ``count`` uploads in bursts, with one rotation and the bad lines spread through."""

    cache: Path
    log: Path
    count: int
    seed: int
    size: int = 2048
    shipped: dict[str, Stamp] = field(default_factory=dict)
    ignored: dict[str, Stamp] = field(default_factory=dict)
    bad: list[bytes] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def write(
        self,
        stop: threading.Event,
        burst: int = 50,
        pause_s: float = 0.1,
        after_first: Callable[[], None] = lambda: None,
    ) -> None:
        """Write the night; returns when done or when ``stop`` is set.

        ``after_first`` runs after the first burst: the run waits there until the producer has
        committed a position, since a producer's first start reads only the live log.
        """
        self.cache.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        ups = list(uploads(START, self.count, seed=self.seed, size=self.size))
        bad_at = {self._rng.randrange(len(ups)): line for line in BAD_LINES}
        rotate_at = len(ups) // 2
        for start in range(0, len(ups), burst):
            if stop.is_set():
                return
            if start <= rotate_at < start + burst:
                self.log.rename(self.log.with_name(f"{self.log.name}-20170824"))
            with self.log.open("ab") as out:
                for i in range(start, min(start + burst, len(ups))):
                    out.write(self._upload(ups[i]))
                    if i in bad_at:
                        out.write(bad_at[i] + b"\n")
                        self.bad.append(bad_at[i])
            if start == 0:
                after_first()
            stop.wait(pause_s)  # pacing of the simulated uploads
        self.finished.set()

    def _upload(self, up: Upload) -> bytes:
        write_upload(self.cache, up, self._rng)
        path = self.cache / up.rel
        (self.shipped if up.whitelisted else self.ignored)[up.rel] = stamp(path)
        return log_line(up, size=path.stat().st_size)
