"""With no broker listening, every command that needs one says so in one line and exits 1.

Each command runs as a user runs it (its own process), against a port nothing listens on; they
run side by side, so the file takes about one command's time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from terra_xfer.broker import free_port

COMMANDS = [
    ["status"],
    ["status", "LemnaTec/EnvironmentLogger/2017-08-24/x_environmentlogger.json"],
    ["report"],
    ["lag"],
    ["events", "tail", "files.arrived", "--idle-exit", "1"],
    ["topics", "create"],
    ["kafka-tool", "consumer-groups", "--list"],
]
DEADLINE_S = 60  # a command that waited out its clients' timeouts would still end by then


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[subprocess.CompletedProcess[str]]:
    work: Path = tmp_path_factory.mktemp("no-broker")
    config = work / "site.toml"
    address = f"127.0.0.1:{free_port()}"
    config.write_text(f'[kafka]\nbootstrap_servers = "{address}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRA_XFER_")}
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "terra_xfer", "--config", str(config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in COMMANDS
    ]
    done = []
    for proc in running:
        out, err = proc.communicate(timeout=DEADLINE_S)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=[" ".join(c) for c in COMMANDS])
def test_a_command_needing_the_broker_says_it_cannot_reach_it(
    outcomes: list[subprocess.CompletedProcess[str]], index: int
) -> None:
    result = outcomes[index]
    lines = result.stderr.strip().splitlines()

    assert result.returncode == 1
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: cannot reach the Kafka broker at 127.0.0.1:")
    assert "terra-xfer broker start" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
