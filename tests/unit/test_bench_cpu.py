"""Per-process CPU of a measured run: /proc/<pid>/stat parsing, per-file figures, the table lines,
and the stage processes' names that tell them apart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.cpu import CpuMeter, parse_stat, per_file_ms, processes
from bench.figures import Section
from bench.profile import cpu_text
from bench.table import cpu_lines, render
from terra_xfer.stages.child import name_process, process_name
from tests.kafka_read import wait_for
from tests.unit.test_bench_table import results

# A real line's layout; the comm holds a space and a parenthesis, as comms may.
STAT = (
    "4242 (tx-a) b) S 4200 4242 4200 0 -1 4194560 900 0 0 0 "
    "1234 567 0 0 20 0 9 0 5000 1000000 2000 18446744073709551615"
)


def test_a_stat_line_gives_its_comm_parent_and_user_plus_system_ticks() -> None:
    assert parse_stat(STAT) == ("tx-a) b", 4200, 1234 + 567)


def test_stage_children_are_found_by_name_and_their_cpu_measured() -> None:
    code = "from terra_xfer.stages.child import name_process; name_process('keeper'); input()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        wait_for(lambda: "keeper" in processes(os.getpid()), timeout_s=30, what="tx-keeper")
        pids = processes(os.getpid(), broker_pid=1)
        assert pids == {"up": os.getpid(), "keeper": child.pid, "broker": 1}
        meter = CpuMeter({"me": os.getpid(), "gone": 2**22 + 1}).start()
        deadline = time.process_time() + 0.05
        while time.process_time() < deadline:  # 50 ms of CPU of our own to count
            pass
        used = meter.read()
        assert set(used) == {"me"} and used["me"] > 0
    finally:
        child.kill()
        child.wait()
        assert child.stdin is not None
        child.stdin.close()


def test_cpu_per_file_adds_up_the_pipeline_without_the_broker() -> None:
    per_file = per_file_ms({"state-keeper": 7.4, "batcher": 1.6, "broker": 20.0}, 10_000)
    assert per_file == {
        "state-keeper": 0.74,
        "batcher": 0.16,
        "broker": 2.0,
        "pipeline": 0.9,
    }
    assert per_file_ms({"up": 1.0}, 0) == {}


def test_the_table_lists_each_runs_cpu_per_file() -> None:
    s = Section("3b", "Overhead")
    s.details = {
        "cpu_ms_per_file": {"state-keeper": 0.74, "broker": 2.0, "pipeline": 0.9},
        "threads": {"cpu_ms_per_file": {"up": 1.5, "pipeline": 1.5}},
    }
    doc = results(s)
    assert cpu_lines(doc) == [
        "- §3b `up`: pipeline 0.900 (state-keeper 0.740, broker 2.00)",
        "- §3b `up --threads`: pipeline 1.50 (up 1.50)",
    ]
    assert "CPU per file" in render(doc)
    assert "CPU per file" not in render(results(Section("3b", "Overhead")))


def test_a_stage_process_is_named_after_its_stage(tmp_path: Path) -> None:
    comm = tmp_path / "comm"
    name_process("state-keeper", str(comm))
    assert comm.read_text() == "tx-state-keeper" == process_name("state-keeper")
    assert process_name("a-very-long-stage-name") == "tx-a-very-long-"  # the kernel's 15 bytes
    name_process("batcher", str(tmp_path / "no" / "comm"))  # no such file: left as it is


def test_the_cpu_report_gives_each_process_its_share_and_cost_per_file() -> None:
    text = cpu_text({"state-keeper": 74.0, "broker": 30.0, "batcher": 6.0}, 100_000, 100.0)
    assert text.splitlines() == [
        "100,000 files in 100.0 s (1,000 files/s)",
        "",
        "process: CPU s (share of one core over the run; ms per file)",
        "  state-keeper: 74.0 s (74%; 0.740 ms)",
        "  broker: 30.0 s (30%; 0.300 ms)",
        "  batcher: 6.0 s (6%; 0.060 ms)",
        "  pipeline: 80.0 s (80%; 0.800 ms)",
    ]
