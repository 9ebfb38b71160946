"""A stage's process collects garbage less often once built, and never walks its start-up again.

Each check runs in a fresh interpreter: settling pytest's own process would change every test
after it.
"""

from __future__ import annotations

import subprocess
import sys

from terra_xfer.stages import gc_tuning as heap


def python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_settle_freezes_what_exists_and_raises_the_thresholds() -> None:
    out = python(
        "import gc\n"
        "from terra_xfer.stages import gc_tuning as heap\n"
        "print(gc.get_threshold(), gc.get_freeze_count() > 0)\n"
        "heap.settle()\n"
        "print(gc.get_threshold(), gc.get_freeze_count() > 0)\n"
    )
    before, after = out.splitlines()
    assert before == f"{(700, 10, 10)} False"
    assert after == f"{heap.THRESHOLDS} True"


def test_settled_process_still_collects_cycles_by_itself() -> None:
    out = python(
        "import gc, weakref\n"
        "from terra_xfer.stages import gc_tuning as heap\n"
        "heap.settle()\n"
        "class Node: pass\n"
        "def cycle():\n"
        "    a, b = Node(), Node()\n"
        "    a.other, b.other = b, a\n"
        "    return weakref.ref(a)\n"
        "first = cycle()\n"
        "for _ in range(50_000):\n"
        "    cycle()\n"
        "print(first() is None)\n"  # no gc.collect(): the thresholds alone got to it
    )
    assert out == "True"


def test_a_stage_command_runs_its_steps_settled() -> None:
    out = python(
        "import gc\n"
        "from terra_xfer.config import Config\n"
        "from terra_xfer.stages.host import RunOptions, StopSignal, run_stage\n"
        "from terra_xfer.stages.spec import StageSpec\n"
        "seen = []\n"
        "class Stage:\n"
        "    def step(self):\n"
        "        seen.append((gc.get_threshold(), gc.get_freeze_count() > 0))\n"
        "        return 0\n"
        "    def close(self):\n"
        "        pass\n"
        "spec = StageSpec('t', 'A stage.', lambda wiring: Stage())\n"
        "run_stage(spec, Config(), StopSignal(), RunOptions(once=True))\n"
        "print(*seen[0])\n"
    )
    assert out == f"{heap.THRESHOLDS} True"
