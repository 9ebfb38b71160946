"""Every benchmark in one run: writes bench/results.json and the table in BENCHMARKS.md.

Uses the demo's embedded broker (examples/demo.toml), starting it when it is not running and
stopping it afterwards only then. A part that cannot be measured is recorded as "not available"
with the reason; the others still run. ``--quick`` uses small counts (a minute or two).

    PYTHONPATH=. .venv/bin/python -m bench.run            # make bench
    PYTHONPATH=. .venv/bin/python -m bench.run --quick    # make bench-quick
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import codec, pipeline, producer, recovery, table
from bench.figures import Figure, Goal, Section, not_available
from bench.machine import describe, load_average
from bench.pipeline import Sizes
from bench.workspace import DEMO_CONFIG, broker

log = logging.getLogger("bench")
ALL_STAGES = list(recovery.OUTPUT)
SEED_SNAPSHOTS_PER_MIN = 3.5
TITLES = {
    "1": "Producer into Kafka, exactly once",
    "2": "Broker ceiling (ProducerPerformance)",
    "3a": "Pipeline, small files, local backends",
    "3b": "Pipeline overhead (record backend, deleter dry run)",
    "3c": "Pipeline, large files, local backends",
    "3d": "Latency at a steady rate",
    "4": "Codec against bare fastavro",
    "5": "Recovery from kill -9",
    "6": "Danforth snapshots/minute at real camera sizes",
}


@dataclass(frozen=True)
class Plan:
    """The counts of one run."""

    mode: str
    lines: int
    distinct: int
    sizes: Sizes
    recovery: list[str] = field(default_factory=lambda: list(ALL_STAGES))
    snapshots: int = 1000  # with 16x12 test frames
    real_snapshots: int = 100  # at the real camera sizes (1.9 GB of PNG per 40)
    codec_seconds: float = 1.5


FULL = Plan("full", 1_000_000, 20_000, Sizes())
QUICK = Plan(
    "quick",
    100_000,
    5_000,
    Sizes(
        small_files=3_000, large_files=4, latency_files=400, hop_records=20_000, floor_files=3_000
    ),
    recovery=["gantry", "state-keeper"],
    snapshots=50,
    real_snapshots=10,
    codec_seconds=0.6,
)


def danforth(real_snapshots: int, small_snapshots: int) -> Section:
    """§6 from bench/danforth.py (written apart): at the real camera sizes, snapshots/minute
    against the floor of the same run (goal 0.8) and the seed's 3.5; 16x12 frames beside it."""
    title = (
        f"Danforth: {real_snapshots:,} LemnaTec snapshots at real camera sizes, database row →"
        " every file DONE"
    )
    real = _danforth_run(real_snapshots, "real")
    if isinstance(real, str):
        return not_available("6", title, real)
    s = Section("6", title)
    floor = real["floor"]
    s.figures.append(
        Figure(
            "snapshots/minute, real camera sizes",
            float(real["snapshots_per_minute"]),
            "snapshots/min",
            "floor: the same frames made into PNG by a bare pool of a thread per core",
            float(floor["snapshots_per_minute"]),
            Goal("ratio_at_least", 0.8),
            note=(
                f"{floor['per_core_snapshots_per_minute']} /min per core: 350/min needs"
                f" {floor['cores_for_goal']} cores"
            ),
        )
    )
    s.figures.append(
        Figure(
            "snapshots/minute, real camera sizes, against the seed",
            float(real["snapshots_per_minute"]),
            "snapshots/min",
            "the seed's sequential uploader (measured in production)",
            SEED_SNAPSHOTS_PER_MIN,
        )
    )
    s.details = {"real": real}
    small = _danforth_run(small_snapshots, "small")
    if isinstance(small, str):
        s.details["small"] = {"not_available": small}
        return s
    s.figures.append(
        Figure(
            "snapshots/minute, 16x12 test frames",
            float(small["snapshots_per_minute"]),
            "snapshots/min",
            "floor: the same frames made into PNG by a bare pool of a thread per core",
            float(small["floor"]["snapshots_per_minute"]),
        )
    )
    s.details["small"] = small
    return s


def _danforth_run(snapshots: int, cameras: str) -> dict[str, Any] | str:
    """bench/danforth.py's figures, or why there are none."""
    script = Path("bench/danforth.py")
    done = subprocess.run(
        [sys.executable, str(script), "--snapshots", str(snapshots), "--cameras", cameras],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    start = done.stdout.find("{")
    if done.returncode != 0 or start == -1:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"bench/danforth.py --cameras {cameras} failed: {tail[0]}"
    found: dict[str, Any] = json.loads(done.stdout[start:])
    return found


def steps(plan: Plan, base: Path, bootstrap: str, kafka: str) -> list[tuple[list[str], Any]]:
    """(section keys, what measures them), in order."""
    sizes = plan.sizes
    return [
        (["1", "2"], lambda: producer.sections(base, bootstrap, kafka, plan.lines, plan.distinct)),
        (["3a", "3b"], lambda: pipeline.small_files(base, bootstrap, sizes)),
        (["3c"], lambda: pipeline.large_files(base, bootstrap, sizes)),
        (["3d"], lambda: pipeline.latency(base, bootstrap, sizes)),
        (["4"], lambda: codec.section(plan.codec_seconds)),
        (["5"], lambda: recovery.section(base, bootstrap, plan.recovery)),
        (["6"], lambda: danforth(plan.real_snapshots, plan.snapshots)),
    ]


def measured(keys: list[str], make: Callable[[], Any]) -> list[Section]:
    """Run one step; a failure becomes "not available" with its reason for each of its keys."""
    began = time.monotonic()
    try:
        result = make()
    except Exception as exc:  # one part failing must not lose the others' figures
        log.exception("benchmark %s failed", "/".join(keys))
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return [not_available(k, TITLES[k], reason) for k in keys]
    sections = result if isinstance(result, list) else [result]
    for s in sections:
        s.seconds = (time.monotonic() - began) / len(sections)
    return sections


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def write(results: dict[str, Any], results_path: Path, doc: Path) -> None:
    results_path.write_text(json.dumps(finite(results), indent=2) + "\n", encoding="utf-8")
    table.write_document(doc, json.loads(results_path.read_text(encoding="utf-8")))


def run(plan: Plan, only: set[str] | None, results_path: Path, doc: Path) -> dict[str, Any]:
    base = Path("var/bench").resolve()
    started = time.monotonic()
    results: dict[str, Any] = {"mode": plan.mode, "load": {"before": load_average()}}
    with broker(DEMO_CONFIG) as (config, started_broker):
        kafka = config.broker.kafka_version
        results |= {"machine": describe(kafka), "broker_started_here": started_broker}
        results["started"] = results["machine"]["date"]
        sections: list[dict[str, Any]] = []
        for keys, make in steps(plan, base, config.kafka.bootstrap_servers, kafka):
            if only is not None and not only & set(keys):
                continue
            log.info("measuring §%s", "/".join(keys))
            sections += [s.to_dict() for s in measured(keys, make)]
            results["sections"] = sections
            results["duration_s"] = round(time.monotonic() - started, 1)
            write(results, results_path, doc)
    shutil.rmtree(base, ignore_errors=True)
    results["load"]["after"] = load_average()
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["duration_s"] = round(time.monotonic() - started, 1)
    write(results, results_path, doc)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small counts: a minute or two")
    ap.add_argument("--only", help="comma-separated sections to run, e.g. 1,3a,4")
    ap.add_argument("--results", type=Path, default=Path("bench/results.json"))
    ap.add_argument("--doc", type=Path, default=Path("BENCHMARKS.md"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    only = set(args.only.split(",")) if args.only else None
    results = run(QUICK if args.quick else FULL, only, args.results, args.doc)
    for s in results["sections"]:
        state = "ok" if s["status"] == "ok" else f"not available: {s['reason']}"
        print(f"§{s['key']:<3} {s['title']}: {state} ({s['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
