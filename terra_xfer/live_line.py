"""One status line kept at the bottom of a terminal, with this process's log lines printed above it.

The line is cut to the terminal's width (read at every redraw, so a resized window is followed)
and drawn with an erase to the end of the line: nothing wraps, no stale copy is left behind. While
it is shown, the process's log handlers that write to the terminal write through it: each log line
clears the status line, is printed, and the status line is drawn again below it.
"""

from __future__ import annotations

import logging
import shutil
import threading
from typing import IO

ERASE = "\r\x1b[K"  # to column 0, then erase to the end of the line


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, an ellipsis marking a cut."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


class LiveLine:
    """The status line on ``stream`` (a terminal), and the log lines that pass it."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.text = ""
        self._lock = threading.Lock()
        self._handlers: list[tuple[logging.StreamHandler[IO[str]], IO[str]]] = []

    def show(self, text: str) -> None:
        """Draw ``text`` as the status line, in place of the last one."""
        width = shutil.get_terminal_size((80, 24)).columns - 1  # the last column may wrap
        with self._lock:
            self.text = fit(text, width)
            self.stream.write(ERASE + self.text)
            self.stream.flush()

    def write(self, data: str) -> int:
        """Print ``data`` (log output) above the status line."""
        with self._lock:
            if self.text:
                self.stream.write(ERASE)
            self.stream.write(data)
            if self.text and data.endswith("\n"):
                self.stream.write(self.text)
            self.stream.flush()
        return len(data)

    def flush(self) -> None:
        self.stream.flush()

    def __enter__(self) -> LiveLine:
        """Route the root logger's handlers on this stream through the line."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self.stream:
                self._handlers.append((handler, handler.stream))
                handler.setStream(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Put the handlers back, and leave the last status line on its own line."""
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()
        with self._lock:
            if self.text:
                self.stream.write("\n")
                self.stream.flush()
            self.text = ""
