"""The step watchdog: a step running past the limit is reported (the process then exits)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from terra_xfer.stages.stall_guard import STALLED_EXIT_CODE, StallGuard


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_step_past_the_limit_is_reported_and_a_finished_one_is_not() -> None:
    clock, stalls = Clock(), []
    dog = StallGuard(60.0, on_stall=lambda name, s: stalls.append((name, s)), clock=clock)

    def slow() -> int:
        clock.now += 59.0
        dog.check()  # still within the limit
        clock.now += 2.0
        dog.check()
        return 1

    assert dog.watch("ingest", slow)() == 1
    dog.check()  # the step has finished: nothing is running
    assert stalls == [("ingest", 61.0)]


def test_a_limit_of_zero_never_starts_a_thread() -> None:
    dog = StallGuard(0.0).start()
    assert dog._thread is None
    dog.stop()


def test_a_stalled_process_exits_with_the_retry_code() -> None:
    script = textwrap.dedent(
        """
        import threading
        from terra_xfer.stages.stall_guard import StallGuard
        dog = StallGuard(1.0).start()
        dog.watch("stuck", lambda: threading.Event().wait() or 0)()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == STALLED_EXIT_CODE
    assert b"stuck: one step has run for" in done.stderr
