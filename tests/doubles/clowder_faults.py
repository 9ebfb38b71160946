"""The faults the Clowder test double shows: queued on the next requests of a route, or drawn at
random for every request from a seeded mix (see :mod:`tests.doubles.clowder_api`)."""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict, deque
from dataclasses import dataclass


@dataclass
class Fault:
    """What happens to the next ``times`` requests of a route."""

    kind: str  # "status" | "reset" | "stall" | "rendezvous"
    times: int
    status: int = 500
    body: str = "Internal Server Error"
    after: bool = False  # act first, then fail (the answer is lost); for a stall: serve late
    barrier: threading.Barrier | None = None


@dataclass(frozen=True)
class Mix:
    """Shares of requests that fail at random: answered 500/502/503/504 undone (``error``),
    reset unanswered and undone (``reset``), carried out and then reset (``lost``)."""

    error: float
    reset: float
    lost: float
    rng: random.Random


class Faults:
    """Faults queued per route (``"POST /api/uploadToDataset/:id"``), taken in order; and,
    while a :meth:`mix` is on, random faults for the requests no queued fault takes."""

    def __init__(self, routes: frozenset[str]) -> None:
        self._routes = routes
        self._lock = threading.Lock()
        self._queued: dict[str, deque[Fault]] = defaultdict(deque)
        self._mix: Mix | None = None
        self.drawn: Counter[str] = Counter()  # random faults fired, by kind
        self.released = threading.Event()

    def mix(self, seed: int, error: float = 0.05, reset: float = 0.02, lost: float = 0.01) -> None:
        """From now on every request draws its fate from an RNG seeded with ``seed``: a share
        ``error`` is answered 500, 502, 503 or 504 without being carried out, ``reset`` is dropped
        by a TCP reset, undone, and ``lost`` is carried out and then reset (the change is made,
        the answer lost). Each request stays atomic, so the store stays consistent."""
        if error < 0 or reset < 0 or lost < 0 or error + reset + lost > 1:
            raise ValueError("the shares must be non-negative and add up to at most 1")
        with self._lock:
            self._mix = Mix(error, reset, lost, random.Random(seed))

    def calm(self) -> None:
        """No more random faults (queued ones still fire)."""
        with self._lock:
            self._mix = None

    def draw(self) -> Fault | None:
        """A random fault for one request, when a mix is on and the draw says so."""
        with self._lock:
            mix = self._mix
            if mix is None:
                return None
            roll = mix.rng.random()
            status = mix.rng.choice((500, 502, 503, 504))
            if roll < mix.error:
                self.drawn[str(status)] += 1
                return Fault("status", 1, status, f"{status} fault drawn")
            if roll < mix.error + mix.reset:
                self.drawn["reset"] += 1
                return Fault("reset", 1)
            if roll < mix.error + mix.reset + mix.lost:
                self.drawn["lost"] += 1
                return Fault("reset", 1, after=True)
            return None

    def fail(
        self, route: str, status: int = 500, times: int = 1, body: str | None = None,
        after: bool = False,
    ) -> None:  # fmt: skip
        """Answer ``status`` (with ``body``) to the next ``times`` requests."""
        text = body if body is not None else f"{status} fault injected"
        self._add(route, Fault("status", times, status, text, after))

    def reset(self, route: str, times: int = 1, after: bool = False) -> None:
        """Drop the connection with a TCP reset instead of answering."""
        self._add(route, Fault("reset", times, after=after))

    def stall(self, route: str, times: int = 1, serve: bool = False) -> None:
        """Hold the next requests unanswered until :meth:`release`; then drop them undone, or
        with ``serve`` carry them out late (a slow server, whose answer the client gave up on)."""
        self.released.clear()
        self._add(route, Fault("stall", times, after=serve))

    def rendezvous(self, route: str, parties: int = 2) -> None:
        """Hold the next ``parties`` requests until all have arrived, then serve them."""
        self._add(route, Fault("rendezvous", parties, barrier=threading.Barrier(parties)))

    def release(self) -> None:
        self.released.set()

    def abort(self) -> None:
        """Let every held request go: stalls are released, unfinished rendezvous broken."""
        self.released.set()
        with self._lock:
            for queue in self._queued.values():
                for fault in queue:
                    if fault.barrier is not None:
                        fault.barrier.abort()
            self._queued.clear()

    def take(self, route: str) -> Fault | None:
        with self._lock:
            queue = self._queued.get(route)
            if not queue:
                return None
            fault = queue[0]
            fault.times -= 1
            if fault.times <= 0:
                queue.popleft()
            return fault

    def _add(self, route: str, fault: Fault) -> None:
        if route not in self._routes:
            raise KeyError(f"the double serves no route {route!r}")
        with self._lock:
            self._queued[route].append(fault)
