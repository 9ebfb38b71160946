"""§3: the whole pipeline through ``terra-xfer up``, each way against its limit in the same run.

a. small files with the local backends: files/s from the first xferlog line to the last file
   DONE, against a plain loop that copies each file (fsync, rename) and deletes it;
b. the same files with the ``record`` transfer backend (no bytes moved) and the deleter in dry
   run: the pipeline's own overhead (Kafka, Avro, state, batching) with the filesystem taken out;
c. large files: MB/s against ``cp`` (then ``sync``) of the same files;
d. latency at a steady rate below capacity: a line's append to its batch's submission and to
   DONE, p50 and p99 (a backlog appended at once measures queueing, not latency).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cpu import per_file_ms
from bench.figures import Figure, Goal, Section, percentile
from bench.hop import BATCH as hop_batch
from bench.hop import codec_floor_run, floor_ms_per_file, hop_run
from bench.up_run import Outcome, feed_all, feed_paced, run_up
from bench.workload import (
    cp_and_sync,
    log_lines,
    night,
    place_metadata,
    plain_copy_loop,
    verified_copy,
    write_files,
)
from bench.workspace import Workspace, broker_pid, workspace
from producers.gantry.night import Upload
from terra_xfer.broker import free_port

SITE = "ua-mac"
MB = 1_000_000
OVERHEAD_GOAL = 5000  # §3b: files/s on two cores


@dataclass(frozen=True)
class Sizes:
    small_files: int = 100_000
    small_size: int = 4096
    large_files: int = 20
    large_size: int = 64 * 1024 * 1024
    latency_files: int = 3000
    latency_rate: float = 100.0
    hop_records: int = 200_000
    hop_size: int = 533  # our events' mean size (§2)
    floor_files: int = 25_000


def _keys(ups: list[Upload]) -> set[str]:
    return {f"{SITE}/{u.rel}" for u in ups}


def _run(
    ws: Workspace,
    cache: Path,
    ups: list[Upload],
    feed: Any,
    profile: Path | None = None,
    processes: bool = True,
    profile_stage: str | None = None,
    **overrides: dict[str, Any],
) -> tuple[Outcome, dict[str, Any]]:
    settings = ws.settings(cache_root=cache)
    for section, values in overrides.items():
        settings[section] |= values
    port = free_port()
    settings["metrics"]["port"] = port
    config = ws.write(settings)
    if settings["transfer"]["backend"] == "record":
        place_metadata(config, ups)
    dry_run = bool(settings["deleter"]["dry_run"])
    outcome = run_up(
        config,
        ws.config_path,
        port,
        feed,
        _keys(ups),
        dry_run=dry_run,
        processes=processes,
        profile=profile,
        profile_stage=profile_stage,
    )
    details = {
        "files": len(ups),
        "seconds": round(outcome.seconds, 2),
        "to_last_submitted_s": outcome.last_after_start_s(outcome.submitted_ms),
        "to_last_transferred_s": outcome.last_after_start_s(outcome.transferred_ms),
        "up_ready_s": round(outcome.ready_s, 1),
        "up_peak_rss_mb": None if outcome.peak_rss_mb is None else round(outcome.peak_rss_mb),
        "incomplete": len(outcome.incomplete),
        "max_wait_s": settings["batcher"]["max_wait_s"],
        "max_files": settings["batcher"]["max_files"],
        "cpu_s": outcome.cpu_s,
        "cpu_ms_per_file": per_file_ms(outcome.cpu_s, len(ups)),
        "offsets_per_file": {t: round(n / len(ups), 2) for t, n in outcome.offsets.items()},
    }
    return outcome, details


def small_files(base: Path, bootstrap: str, sizes: Sizes) -> list[Section]:
    """§3a and §3b on one set of files (3b first: it leaves the cache as it was)."""
    root = base / "small"
    ups = night(sizes.small_files, sizes.small_size)
    write_files(root / "plain", ups)
    copy_s = plain_copy_loop(root / "plain", [u.rel for u in ups], root / "plain-dest")
    shutil.rmtree(root / "plain-dest", ignore_errors=True)
    write_files(root / "cache", ups)
    lines = log_lines(root / "cache", ups)
    plain_rate = len(ups) / copy_s
    runs: dict[tuple[str, bool], tuple[Outcome, dict[str, Any]]] = {}
    for processes in (False, True):
        with workspace(base, "overhead", bootstrap) as ws:
            runs["3b", processes] = _run(
                ws,
                root / "cache",
                ups,
                feed_all(lines),
                processes=processes,
                transfer={"backend": "record"},
                deleter={"dry_run": True},
            )
    for processes in (False, True):
        if processes:  # the threads' run deleted every file it copied: the same files again
            write_files(root / "cache", ups)
        with workspace(base, "small", bootstrap) as ws:
            runs["3a", processes] = _run(
                ws, root / "cache", ups, feed_all(lines), processes=processes
            )
    left = sum(1 for p in (root / "cache").rglob("*") if p.is_file())
    shutil.rmtree(root, ignore_errors=True)
    runs["3a", True][1].update(plain_copy_s=round(copy_s, 2), files_left_in_cache=left)
    hop = hop_run(bootstrap, sizes.hop_records, sizes.hop_size, 6, broker_pid())
    floor = codec_floor_run(bootstrap, sizes.floor_files, 6)
    n = len(ups)
    return [
        _small_section(n, sizes, runs["3a", False], runs["3a", True], plain_rate),
        _overhead_section(n, runs["3b", False], runs["3b", True], plain_rate, hop, floor),
    ]


def _small_section(
    n: int,
    sizes: Sizes,
    threads: tuple[Outcome, dict[str, Any]],
    processes: tuple[Outcome, dict[str, Any]],
    plain_rate: float,
) -> Section:
    s = Section("3a", f"Pipeline, {n:,} files of {sizes.small_size // 1024} KB, local backends")
    for (outcome, _), how in ((processes, ""), (threads, " --threads")):
        s.figures.append(
            Figure(
                f"`up{how}`, first line → last DONE",
                n / outcome.seconds,
                "files/s",
                "plain loop: copy, fsync, rename, delete",
                plain_rate,
                Goal("ratio_at_least", 0.5),
            )
        )
    s.details = _both(threads[1], processes[1])
    return s


def _overhead_section(
    n: int,
    threads: tuple[Outcome, dict[str, Any]],
    processes: tuple[Outcome, dict[str, Any]],
    plain_rate: float,
    hop: dict[str, Any],
    floor: dict[str, dict[str, float]],
) -> Section:
    s = Section("3b", "Pipeline overhead: record backend (no bytes moved), deleter dry run")
    for (outcome, _), how in ((processes, ""), (threads, " --threads")):
        s.figures.append(
            Figure(
                f"`up{how}`, first line → last INGESTED + dry-run delete",
                n / outcome.seconds,
                "files/s",
                "plain copy loop (§3a)",
                plain_rate,
                Goal("value_at_least", OVERHEAD_GOAL),
            )
        )
    s.figures.append(
        Figure(
            f"bare transactional hop: consume {hop_batch} {hop['records_size']} B records, "
            "produce each unchanged, commit (no decoding)",
            hop["records_per_s"],
            "records/s",
        )
    )
    details = processes[1]
    floor_ms = floor_ms_per_file(floor, details["offsets_per_file"])
    broker_ms = float(details["cpu_ms_per_file"].get("broker", 0.0))
    cores = os.cpu_count() or 1
    s.figures.append(
        Figure(
            f"ceiling: {cores} cores spent on Kafka and Avro alone, no stage logic "
            f"({floor_ms:.3g} ms a file in the stages, {broker_ms:.3g} in the broker)",
            cores * 1000 / (floor_ms + broker_ms),
            "files/s",
            "the goal",
            OVERHEAD_GOAL,
        )
    )
    s.details = _both(threads[1], processes[1]) | {
        "hop": hop,
        "codec_floor_us_per_record": floor,
        "floor_ms_per_file": floor_ms,
        "stage_logic_ms_per_file": round(details["cpu_ms_per_file"]["pipeline"] - floor_ms, 3),
    }
    return s


def _both(threads: dict[str, Any], processes: dict[str, Any]) -> dict[str, Any]:
    """One section's details: the default run (a process per stage), and ``--threads``' run
    under ``threads``."""
    return processes | {"threads": threads}


def large_files(base: Path, bootstrap: str, sizes: Sizes) -> Section:
    """§3c: bandwidth-bound transfers, against cp + sync of the same files."""
    root = base / "large"
    ups = night(sizes.large_files, sizes.large_size, metadata=False)
    write_files(root / "cache", ups)
    cp_s = cp_and_sync(root / "cache", [u.rel for u in ups], root / "cp-dest")
    shutil.rmtree(root / "cp-dest", ignore_errors=True)
    verified_s = verified_copy(root / "cache", [u.rel for u in ups], root / "cp-dest")
    shutil.rmtree(root / "cp-dest", ignore_errors=True)
    lines = log_lines(root / "cache", ups)
    with workspace(base, "large", bootstrap) as ws:
        outcome, details = _run(ws, root / "cache", ups, feed_all(lines))
    shutil.rmtree(root, ignore_errors=True)
    total_mb = sum(u.size for u in ups) / MB
    size_mb = sizes.large_size / (1024 * 1024)
    section = Section("3c", f"Pipeline, {len(ups)} files of {size_mb:.0f} MiB, local backends")
    section.figures.append(
        Figure(
            "`up`, first line → last DONE",
            total_mb / outcome.seconds,
            "MB/s",
            "`cp` then `sync` of the same files",
            total_mb / cp_s,
            Goal("ratio_at_least", 0.9),
        )
    )
    section.figures.append(
        Figure(
            "`up`, first line → last DONE",
            total_mb / outcome.seconds,
            "MB/s",
            "`cp`, `sync`, sha256 of sources and copies (a verified copy by hand)",
            total_mb / verified_s,
        )
    )
    after_window_s = max(1e-3, outcome.seconds - float(details["to_last_submitted_s"]))
    section.figures.append(
        Figure(
            "`up`, batch submitted → last DONE (the batching window left out)",
            total_mb / after_window_s,
            "MB/s",
            "`cp`, `sync`, sha256 of sources and copies (a verified copy by hand)",
            total_mb / verified_s,
        )
    )
    section.details = details | {
        "cp_s": round(cp_s, 2),
        "verified_copy_s": round(verified_s, 2),
        "total_mb": round(total_mb),
    }
    return section


def latency(base: Path, bootstrap: str, sizes: Sizes) -> Section:
    """§3d: a steady stream of lines; append → submitted and append → DONE percentiles."""
    root = base / "latency"
    ups = night(sizes.latency_files, sizes.small_size, seed=21)
    write_files(root / "cache", ups)
    lines = log_lines(root / "cache", ups)
    appended: dict[int, int] = {}
    with workspace(base, "latency", bootstrap) as ws:
        outcome, details = _run(
            ws, root / "cache", ups, feed_paced(lines, sizes.latency_rate, appended)
        )
    shutil.rmtree(root, ignore_errors=True)
    at = {f"{SITE}/{u.rel}": appended[i] for i, u in enumerate(ups)}
    to_submitted = [
        (outcome.submitted_ms[k] - at[k]) / 1000 for k in at if k in outcome.submitted_ms
    ]
    to_done = [(outcome.completed_ms[k] - at[k]) / 1000 for k in at if k in outcome.completed_ms]
    max_wait = float(details["max_wait_s"])
    section = Section(
        "3d", f"Latency at a steady {sizes.latency_rate:.0f} lines/s ({len(ups):,} files, 4 KB)"
    )
    limit = f"`max_wait_s` = {max_wait:g} s"
    section.figures += [
        Figure("append → batch submitted, p50", percentile(to_submitted, 50), "s", limit, max_wait),
        Figure(
            "append → batch submitted, p99",
            percentile(to_submitted, 99),
            "s",
            limit,
            max_wait,
            Goal("value_at_most", max_wait + 1),
        ),
        Figure("append → DONE, p50", percentile(to_done, 50), "s", limit, max_wait),
        Figure("append → DONE, p99", percentile(to_done, 99), "s", limit, max_wait),
    ]
    section.details = details | {"samples": len(to_submitted), "rate_per_s": sizes.latency_rate}
    return section
