"""The demo's closing hints run as printed: the virtualenv's terra-xfer, and the broker first."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from terra_xfer.config import Config
from terra_xfer.demo import where_next


def commands(text: str) -> list[list[str]]:
    lines = [line.split("  #")[0].strip() for line in text.splitlines() if line.startswith("  ")]
    return [shlex.split(line) for line in lines]


def test_with_the_broker_stopped_the_hints_start_it_first_and_stop_it_last() -> None:
    config_path = Path("examples/demo.toml")
    hints = commands(where_next(Config(), config_path, broker_kept=False))

    program = Path(sys.executable).with_name("terra-xfer")
    runs = [c for c in hints if c[0] != "ls"]
    assert all(Path(c[0]).resolve() == program.resolve() for c in runs)
    assert all(c[1:3] == ["--config", str(config_path)] for c in runs)
    verbs = [c[3:6] for c in runs]
    assert verbs[0][:2] == ["broker", "start"] and verbs[-1][:2] == ["broker", "stop"]
    assert ["status", "--all", "--json"] in verbs


def test_with_the_broker_kept_the_hints_only_look() -> None:
    hints = commands(where_next(Config(), Path("examples/demo.toml"), broker_kept=True))
    assert not any("broker" in c for c in hints)
