"""``up``'s live line: cut to the terminal's width, log lines above it, handlers given back."""

from __future__ import annotations

import io
import logging
import os

import pytest

from terra_xfer import live_line
from terra_xfer.live_line import ERASE, LiveLine, fit


@pytest.fixture
def columns(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    width = [80]
    monkeypatch.setattr(
        live_line.shutil, "get_terminal_size", lambda _default: os.terminal_size((width[0], 24))
    )
    return width


def test_a_line_is_cut_to_the_width_with_an_ellipsis() -> None:
    assert fit("abcdef", 6) == "abcdef"
    assert fit("abcdefg", 6) == "abcde…"
    assert fit("abc", 0) == ""


def test_each_line_replaces_the_last_and_fits_the_terminal_as_it_is_now(
    columns: list[int],
) -> None:
    out = io.StringIO()
    live = LiveLine(out)
    live.show("x" * 200)
    columns[0] = 40  # the window was made narrower
    live.show("y" * 200)

    drawn = out.getvalue().split(ERASE)[1:]
    assert drawn == ["x" * 78 + "…", "y" * 38 + "…"]
    assert "\n" not in out.getvalue()  # nothing wraps onto a second line


def test_log_lines_go_above_the_line_and_the_handlers_are_given_back(columns: list[int]) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with LiveLine(out) as live:
            live.show("[ 1s] DONE=3")
            logging.getLogger("t").warning("a batch failed")
            live.show("[ 2s] DONE=4")
        assert handler.stream is out
    finally:
        root.removeHandler(handler)

    assert out.getvalue() == (
        f"{ERASE}[ 1s] DONE=3{ERASE}a batch failed\n[ 1s] DONE=3{ERASE}[ 2s] DONE=4\n"
    )
