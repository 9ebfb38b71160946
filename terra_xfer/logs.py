"""Logging set-up, done only by the CLI: plain lines on a terminal, JSON lines in production.

A filter scrubs every configured secret value from every record before any handler sees it, so a
secret that reaches a message by accident (an exception text, a URL) is still never written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from terra_xfer.config import Secret

REDACTED = "***"


class Demote(logging.Filter):
    """Log as DEBUG the messages holding one of ``phrases``: a library's warnings about a state it
    recovers from by itself, as every start does (a transaction coordinator still loading after a
    broker start, for librdkafka), which read like trouble to someone watching."""

    def __init__(self, *phrases: str) -> None:
        super().__init__()
        self.phrases = phrases

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and any(p in record.getMessage() for p in self.phrases):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


class QuietRepeats(logging.Filter):
    """Let a message through once per ``window_s``; count the alike ones in between.

    For a library that logs the same failure again every few milliseconds (librdkafka's
    "connection refused" per client while a broker is away). Messages that differ only in their
    numbers are alike. The next one let through says how many were held back.
    """

    _NUMBERS = re.compile(r"\d+")
    _REMEMBERED = 1000

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s, self._clock = window_s, clock
        self._seen: dict[str, tuple[float, int]] = {}  # alike message -> (last let through, held)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        alike, now = self._NUMBERS.sub("#", message), self._clock()
        with self._lock:
            shown, held = self._seen.get(alike, (None, 0))
            if shown is not None and now - shown < self.window_s:
                self._seen[alike] = (shown, held + 1)
                return False
            if len(self._seen) >= self._REMEMBERED:
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
            self._seen[alike] = (now, 0)
        if held:
            record.msg = f"{message} ({held} alike in the last {self.window_s:g} s not shown)"
            record.args = None
        return True


class RedactSecrets(logging.Filter):
    """Replace any secret value found in a record's final message with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        text = message + (_exc_text(record) or "")
        if any(s in text for s in self._secrets):
            for secret in self._secrets:
                message = message.replace(secret, REDACTED)
            record.msg, record.args = message, None
            if record.exc_info:
                record.exc_text = _exc_text(record)
                for secret in self._secrets:
                    record.exc_text = (record.exc_text or "").replace(secret, REDACTED)
                record.exc_info = None
        return True


def _exc_text(record: logging.LogRecord) -> str | None:
    if record.exc_info:
        return logging.Formatter().formatException(record.exc_info)
    return record.exc_text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` fields."""

    _SKIP = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in self._SKIP})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, default=str)


def secrets_of(config: Any) -> list[str]:
    """Every secret value present in ``config``, in any section (a new secret is found too)."""
    found: list[str] = []
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if isinstance(value, Secret):
            found.append(value.reveal())
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            found += secrets_of(value)
    return found


def configure(
    level: str = "INFO", json_lines: bool | None = None, secrets: Iterable[str] = ()
) -> None:
    """Install the root handler; JSON lines unless stderr is a terminal (or as told)."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactSecrets(secrets))
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("terra_xfer.librdkafka").setLevel(logging.WARNING)
