"""The pipeline's stages as pods: every consuming stage as replicas, each a process of its own.

A pod is one ``terra-xfer <stage>`` process with its own instance id (``TERRA_XFER_INSTANCE_ID``,
e.g. ``state-keeper-3``: the pod name that names its static group membership and transactional id)
and its own local state directory ``pods/<instance id>/`` (its emptyDir: the state keeper's working
copy, the status index and, beside it, the batcher's and sweeper's views). A new pod gets the next
number of its stage and an empty directory; a container restart keeps both. Producers run as one
pod each. What Kubernetes does to pods is done here with signals: SIGTERM (scale down, rolling
update), SIGKILL (node gone, container restart), SIGSTOP/SIGCONT (a pod frozen for a while).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.workspace import wait_ready
from terra_xfer.broker import free_port
from terra_xfer.stages.spec import StageSpec

# How a stage logs a copy seeded from a peer's (consumers.state.seed_copy).
SEEDED = ": seeded from "
READY_S = 120.0  # how long a night's first pods may take to be ready
GRACE_S = 30.0  # a SIGTERMed pod still running this long is killed, as the kubelet does


@dataclass
class Pod:
    """One replica: its stage, instance id and process, and what is due to happen to it."""

    stage: str
    name: str
    proc: subprocess.Popen[bytes]
    port: int  # of its metrics server
    frozen_until: float | None = None  # SIGSTOPped until then
    leave_at: float | None = None  # replaced by a rolling update: SIGTERMed then
    terminated_at: float | None = None  # SIGTERMed then, not yet gone

    @property
    def serving(self) -> bool:
        """Counted among its stage's replicas: not on its way out."""
        return self.leave_at is None and self.terminated_at is None

    @property
    def free(self) -> bool:
        """Running, serving and not frozen: something may be done to it."""
        return self.serving and self.frozen_until is None


class Pods:
    """The pods of ``specs`` (stages with a consumer group are replicated, the others single),
    run with ``config`` and ``env``; everything under ``work`` (``pods/``, ``logs/``)."""

    def __init__(
        self, config: Path, env: dict[str, str], work: Path, specs: Sequence[StageSpec]
    ) -> None:
        self.config, self.env, self.work = config, env, work
        self.specs = {s.name: s for s in specs}
        self.replicated = tuple(s.name for s in specs if s.group is not None)
        self.single = tuple(s.name for s in specs if s.group is None)
        self.pods: list[Pod] = []
        self.numbers: Counter[str] = Counter()
        self.unexpected_exits: Counter[str] = Counter()
        self.slow_stops: list[str] = []  # pods that outlived their grace period after SIGTERM
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def of(self, stage: str) -> list[Pod]:
        """The serving pods of ``stage``."""
        return [p for p in self.pods if p.stage == stage and p.serving]

    def start(self, stage: str, name: str | None = None) -> Pod:
        """Start a pod of ``stage``: a new one (next number, empty directory), or ``name`` again."""
        if name is None:
            self.numbers[stage] += 1
            name = f"{stage}-{self.numbers[stage]}"
        home = self.work / "pods" / name
        home.mkdir(parents=True, exist_ok=True)
        # Each pod serves its metrics (and its copy of files.state) on a port of its own, and a
        # pod whose copy is new seeds it from those of its stage's pods serving now, as a
        # StatefulSet's replica asks the ready pods behind the metrics Service.
        port = free_port()
        peers = [f"http://127.0.0.1:{p.port}" for p in self.of(stage) if p.name != name]
        env = {
            **self.env,
            "TERRA_XFER_INSTANCE_ID": name,
            "TERRA_XFER_STATUS_INDEX_PATH": str(home / "status.sqlite"),
            "TERRA_XFER_STATUS_KEEPER_PATH": str(home / "keeper.sqlite"),
            "TERRA_XFER_METRICS_PORT": str(port),
            "TERRA_XFER_STATUS_SEED_FROM": ",".join(peers),
        }
        argv = [
            sys.executable, "-m", "terra_xfer", "--config", str(self.config), "--log-json",
            "--log-level", "info", *self.specs[stage].argv,
        ]  # fmt: skip
        with (self.work / "logs" / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        pod = Pod(stage, name, proc, port)
        self.pods.append(pod)
        return pod

    def kill(self, pod: Pod) -> None:
        """SIGKILL ``pod``; it is gone."""
        pod.proc.send_signal(signal.SIGKILL)
        pod.proc.wait()
        self.pods.remove(pod)

    def restart(self, pod: Pod) -> Pod:
        """SIGKILL ``pod``'s process and start it again in the same pod (same id, same files)."""
        self.kill(pod)
        return self.start(pod.stage, pod.name)

    def terminate(self, pod: Pod, now: float) -> None:
        """SIGTERM ``pod``; it is gone once its process has ended (see :meth:`tick`)."""
        pod.proc.send_signal(signal.SIGTERM)
        pod.terminated_at, pod.leave_at = now, None

    def freeze(self, pod: Pod, until: float) -> None:
        """SIGSTOP ``pod`` until ``until`` (it is resumed by :meth:`tick`)."""
        pod.proc.send_signal(signal.SIGSTOP)
        pod.frozen_until = until

    def tick(self, now: float) -> None:
        """Resume frozen pods that are due, SIGTERM those a rolling update replaced, forget the
        ones that ended after SIGTERM (killing one past its grace period), and restart in place
        any other that ended on its own (counted: none should)."""
        for pod in list(self.pods):
            if pod.frozen_until is not None and now >= pod.frozen_until:
                pod.proc.send_signal(signal.SIGCONT)
                pod.frozen_until = None
            if pod.leave_at is not None and now >= pod.leave_at and pod.frozen_until is None:
                self.terminate(pod, now)
            if pod.terminated_at is not None:
                if pod.proc.poll() is not None:
                    self.pods.remove(pod)
                elif now - pod.terminated_at > GRACE_S:
                    self.slow_stops.append(pod.name)
                    self.kill(pod)
            elif pod.proc.poll() is not None:
                self.unexpected_exits[f"{pod.name} (exit {pod.proc.returncode})"] += 1
                self.pods.remove(pod)
                self.start(pod.stage, pod.name)

    @property
    def settled(self) -> bool:
        """No pod frozen, replaced or on its way out."""
        return all(p.serving and p.frozen_until is None for p in self.pods)

    def wait_ready(self, pods: Sequence[Pod], timeout_s: float = READY_S) -> None:
        """Until each of ``pods`` answers /readyz with 200 (its first step is done; a copy of
        files.state has caught up and is offered to peers)."""
        deadline = time.monotonic() + timeout_s
        for pod in pods:
            left = max(0.0, deadline - time.monotonic())
            wait_ready(pod.port, left, alive=lambda pod=pod: pod.proc.poll() is None)

    def seeded(self) -> Counter[str]:
        """Copies of files.state the pods seeded from a peer's, by copy, as their logs say."""
        found: Counter[str] = Counter()
        for log in (self.work / "logs").glob("*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if SEEDED in line:
                    message = str(json.loads(line).get("msg", ""))
                    found[message.split(SEEDED, 1)[0]] += 1
        return found

    def stop_all(self, timeout_s: float = 20.0) -> dict[str, int | None]:
        """Resume every frozen pod, SIGTERM all and wait; one still running after ``timeout_s``
        is killed (its code: None)."""
        for pod in self.pods:
            if pod.frozen_until is not None:
                pod.proc.send_signal(signal.SIGCONT)
                pod.frozen_until = None
            if pod.proc.poll() is None:
                pod.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int | None] = {}
        for pod in self.pods:
            try:
                codes[pod.name] = pod.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(pod.proc.pid, signal.SIGKILL)
                pod.proc.wait()
                codes[pod.name] = None
        return codes
