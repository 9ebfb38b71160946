"""Stand-ins shared by unit tests: a clock that moves only when told, a config reaching no broker."""

from __future__ import annotations

import dataclasses

from terra_xfer.config import Config

UNREACHABLE = "127.0.0.1:9"  # nothing listens there: clients are built, never connected


class Clock:
    """A monotonic clock the test advances by setting ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def offline(config: Config | None = None, **sections: object) -> Config:
    """``config`` (the defaults when None) with Kafka pointed nowhere and ``sections`` replaced."""
    base = config or Config()
    kafka = dataclasses.replace(base.kafka, bootstrap_servers=UNREACHABLE)
    return dataclasses.replace(base, kafka=kafka, **sections)  # type: ignore[arg-type]
