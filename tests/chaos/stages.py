"""The pipeline's stages as a chaos run starts, kills and restarts them, two ways.

:class:`Stages`: every stage of the registry that the configuration enables, each as its own
``terra-xfer <stage>`` process (as Kubernetes runs them), one of them SIGKILLed at each kill.
:class:`Supervised`: ``terra-xfer up`` running all of them, SIGKILLed itself (never its stage
processes) at each kill; no stage process of the killed ``up`` may outlive it by more than 2 s.
Either way, what was killed is started again at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from terra_xfer.stages.spec import StageSpec
from tests.supervision import children_of, log_lines_with, survivors

ORPHAN_GRACE_S = 2.0  # how long a stage process may outlive its killed `up`


class Stages:
    """Runs each of ``specs`` with ``config`` and ``env``; logs go to ``logs/<stage>.log``."""

    def __init__(
        self, config: Path, env: dict[str, str], logs: Path, specs: Sequence[StageSpec]
    ) -> None:
        self.config = config
        self.env = env
        self.logs = logs
        self.specs = {s.name: s for s in specs}
        self.victims = tuple(self.specs)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: Counter[str] = Counter()
        self.unexpected_exits: Counter[str] = Counter()
        self.orphans: list[str] = []  # never any here: nothing supervises these processes
        logs.mkdir(parents=True, exist_ok=True)

    def _command(self, *argv: str) -> list[str]:
        return [
            sys.executable, "-m", "terra_xfer", "--config", str(self.config), "--log-json",
            "--log-level", "info", *argv,
        ]  # fmt: skip

    def _popen(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as out:
            return subprocess.Popen(
                self._command(*argv),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def start(self, stage: str) -> None:
        self.procs[stage] = self._popen(stage, self.specs[stage].argv)

    def start_all(self) -> None:
        for stage in self.specs:
            self.start(stage)

    def kill(self, victim: str) -> None:
        """SIGKILL ``victim`` and start it again at once."""
        proc = self.procs[victim]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.kills[victim] += 1
        self.start(victim)

    def revive(self) -> list[str]:
        """Restart every process that exited on its own (counted: none should)."""
        dead = [s for s, p in self.procs.items() if p.poll() is not None]
        for name in dead:
            self.unexpected_exits[f"{name} (exit {self.procs[name].returncode})"] += 1
            self.start(name)
        return dead

    def stop_all(self, timeout_s: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every process and wait; one still running after ``timeout_s`` is killed."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[name] = None
        return codes

    def log_text(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")) if p.is_file()
        )

    @property
    def restarted_by_up(self) -> int:
        """Stages that ended on their own and were started again by ``up`` (none here)."""
        return 0


class Supervised(Stages):
    """``terra-xfer up`` running every stage (its log: ``logs/up.log``); a kill is a SIGKILL of
    ``up`` alone. The stage processes it had then are found by their parent beforehand; any of
    them still running :data:`ORPHAN_GRACE_S` after the kill is recorded in ``orphans`` (and
    killed, so that it does not fence the next ``up``)."""

    UP = "up"

    def __init__(
        self, config: Path, env: dict[str, str], logs: Path, specs: Sequence[StageSpec]
    ) -> None:
        super().__init__(config, env, logs, specs)
        self.victims = (self.UP,)

    def start(self, stage: str = UP) -> None:
        self.procs[self.UP] = self._popen(self.UP, [self.UP, "--quiet"])

    def start_all(self) -> None:
        self.start()

    def kill(self, victim: str = UP) -> None:
        up = self.procs[self.UP]
        children = children_of(up.pid)
        os.kill(up.pid, signal.SIGKILL)  # up itself, not its process group
        left = survivors(children, ORPHAN_GRACE_S)
        up.wait()
        for proc in left:
            self.orphans.append(f"{proc.comm} (pid {proc.pid})")
            os.kill(proc.pid, signal.SIGKILL)
        self.kills[self.UP] += 1
        self.start()

    @property
    def restarted_by_up(self) -> int:
        log = self.logs / f"{self.UP}.log"
        return len(log_lines_with(log.read_bytes(), b"starting it again")) if log.exists() else 0
