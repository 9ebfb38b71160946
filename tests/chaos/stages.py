"""Every pipeline stage as its own ``terra-xfer`` process, killed and restarted on demand."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

STAGES = ("gantry", "batcher", "monitor", "state-keeper", "ingest", "deleter")


class Stages:
    """Runs each stage with ``config`` and ``env``; logs go to ``logs/<stage>.log``."""

    def __init__(self, config: Path, env: dict[str, str], logs: Path) -> None:
        self.config = config
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: Counter[str] = Counter()
        self.unexpected_exits: Counter[str] = Counter()
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, stage: str) -> None:
        cmd = [sys.executable, "-m", "terra_xfer", "--config", str(self.config), "--log-json"]
        with (self.logs / f"{stage}.log").open("ab") as out:
            self.procs[stage] = subprocess.Popen(
                [*cmd, "--log-level", "info", stage],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def start_all(self) -> None:
        for stage in STAGES:
            self.start(stage)

    def kill(self, stage: str) -> None:
        """SIGKILL ``stage`` and start it again at once."""
        proc = self.procs[stage]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.kills[stage] += 1
        self.start(stage)

    def revive(self) -> list[str]:
        """Restart every stage that exited on its own (counted: a stage should not die)."""
        dead = [s for s, p in self.procs.items() if p.poll() is not None]
        for stage in dead:
            self.unexpected_exits[f"{stage} (exit {self.procs[stage].returncode})"] += 1
            self.start(stage)
        return dead

    def stop_all(self, timeout_s: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every stage and wait; a stage still running after ``timeout_s`` is killed."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int | None] = {}
        for stage, proc in self.procs.items():
            try:
                codes[stage] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[stage] = None
        return codes

    def log_text(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")) if p.is_file()
        )
