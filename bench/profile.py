"""Where the time goes: py-spy samples of a benchmark's measured process, summarised as text.

``producer`` profiles ``terra-xfer gantry`` over an xferlog (§1); ``up`` profiles ``terra-xfer up
--threads`` over small files (§3a, or §3b with ``--overhead``): the stages run the same code as in
their own processes, and as threads of one process each one's samples carry its name. Samples are
taken 100 times a second per thread, idle threads left out, so a thread's samples / (100 * seconds)
is the share of one core it used. The summary (per thread, then the functions with the most samples of their own and in
total) is written to ``bench/profiles/<name>.txt``.

``cpu`` runs ``terra-xfer up`` as measured (a process per stage) and writes the CPU time each stage
process, ``up`` itself and the broker used, in all and per file; with ``--stage``, py-spy samples
that one stage's process as well (the other stages run unsampled).

    PYTHONPATH=. python -m bench.profile producer --lines 300000
    PYTHONPATH=. python -m bench.profile up --files 20000 [--overhead]
    PYTHONPATH=. python -m bench.profile cpu --files 20000 [--overhead] [--stage state-keeper]
"""

from __future__ import annotations

import argparse
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.cpu import per_file_ms
from bench.pipeline import _run
from bench.producer import make_log, producer_run
from bench.up_run import Outcome, feed_all
from bench.workload import log_lines, night, write_files
from bench.workspace import broker, workspace

RATE_HZ = 100
_LINE = re.compile(r":\d+\)$")
# Frames every stack passes through (CLI, threads, the run loop): left out of the totals.
_PLUMBING = (
    "<module>",
    "click/",
    "terra_xfer/cli/",
    "threading.py",
    "terra_xfer/stages/host.py",
    "terra_xfer/stages/threads.py",
    "terra_xfer/stages/child.py",
)
_PLUMBING_TOO = (
    "terra_xfer/metrics_http.py",
    "terra_xfer/stages/stall_guard.py",
)


def _frame(text: str) -> str:
    """A frame without its line number, so a function's samples add up."""
    return _LINE.sub(")", text.strip())


def parse(raw: str) -> list[tuple[str, list[str], int]]:
    """(thread name, frames outermost first, samples) of each line of py-spy's raw output."""
    stacks = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, *frames = stack.split(";")
        thread = head.split(": ", 1)[1] if ": " in head else head
        stacks.append((thread.strip(), [_frame(f) for f in frames], int(count)))
    return stacks


def summarise(raw: str, seconds: float | None = None, top: int = 20) -> str:
    """Samples per thread, then the top functions by own and by total samples."""
    stacks = parse(raw)
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for thread, frames, n in stacks:
        threads[thread] += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            if not any(p in frame for p in (*_PLUMBING, *_PLUMBING_TOO)):
                total[frame] += n
    samples = sum(threads.values()) or 1
    out = [f"{samples} samples at {RATE_HZ} Hz (idle threads left out)"]
    if seconds:
        out[0] += f" over {seconds:.1f} s"
    out += ["", "thread: samples (share of all samples; share of one core)"]
    for thread, n in threads.most_common():
        core = f"; {n / (RATE_HZ * seconds):.0%} of a core" if seconds else ""
        out.append(f"  {thread}: {n} ({n / samples:.0%}{core})")
    for title, counter in (("own samples", own), ("total samples (incl. callees)", total)):
        out += ["", f"top {top} functions by {title}:"]
        out += [f"  {n / samples:6.1%}  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(out) + "\n"


def profile_producer(base: Path, bootstrap: str, lines: int) -> tuple[str, float]:
    raw = base / "producer.raw"
    cache, log = make_log(base / "producer", lines, 20_000)
    with workspace(base, "profile-producer", bootstrap) as ws:
        run = producer_run(ws, cache, log, lines, profile=raw)
    return raw.read_text(), run["wall_s"]


def profile_up(base: Path, bootstrap: str, files: int, overhead: bool) -> tuple[str, float]:
    raw = base / "up.raw"
    outcome = _run_up(base, bootstrap, files, overhead, profile=raw)
    return raw.read_text(), outcome.seconds


def cpu_up(base: Path, bootstrap: str, files: int, overhead: bool, stage: str | None = None) -> str:
    """Per-process CPU of one measured ``up`` run (a process per stage), as text; with
    ``stage``, py-spy samples that stage's process too and its summary follows."""
    raw = base / "stage.raw" if stage else None
    outcome = _run_up(base, bootstrap, files, overhead, profile=raw, stage=stage)
    offsets = ", ".join(f"{t} {n / files:.2f}" for t, n in outcome.offsets.items() if n)
    text = cpu_text(outcome.cpu_s, files, outcome.seconds) + f"\noffsets per file: {offsets}\n"
    if raw is not None:
        text += f"\n## py-spy: the {stage} process\n\n" + summarise(
            raw.read_text(), outcome.seconds
        )
    return text


def cpu_text(cpu_s: dict[str, float], files: int, seconds: float) -> str:
    """A table of CPU seconds, share of the run's wall time and ms per file, per process."""
    per_file = per_file_ms(cpu_s, files)
    out = [
        f"{files:,} files in {seconds:.1f} s ({files / seconds:,.0f} files/s)",
        "",
        "process: CPU s (share of one core over the run; ms per file)",
    ]
    rows = [*cpu_s.items(), ("pipeline", sum(s for n, s in cpu_s.items() if n != "broker"))]
    out += [f"  {name}: {s:.1f} s ({s / seconds:.0%}; {per_file[name]:.3f} ms)" for name, s in rows]
    return "\n".join(out) + "\n"


def _run_up(
    base: Path,
    bootstrap: str,
    files: int,
    overhead: bool,
    profile: Path | None = None,
    stage: str | None = None,
) -> Outcome:
    ups = night(files, 4096)
    write_files(base / "cache", ups)
    feed = feed_all(log_lines(base / "cache", ups))
    record = {"backend": "record" if overhead else "local"}
    with workspace(base, "profile-up", bootstrap) as ws:
        outcome, _ = _run(
            ws,
            base / "cache",
            ups,
            feed,
            profile=profile,
            # sampled whole: one process, each stage a named thread, so the samples say whose
            processes=profile is None or stage is not None,
            profile_stage=stage,
            transfer=record,
            deleter={"dry_run": overhead},
        )
    return outcome


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["producer", "up", "cpu"])
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--overhead", action="store_true", help="record backend, deleter dry run")
    ap.add_argument("--stage", help="cpu: also sample this stage's process with py-spy")
    ap.add_argument("--out", type=Path, default=Path("bench/profiles"))
    args = ap.parse_args(argv)
    base = Path("var/bench/profile").resolve()
    base.mkdir(parents=True, exist_ok=True)
    setup = ", record backend, deleter dry run" if args.overhead else ", local backends"
    try:
        with broker() as (config, _):
            bootstrap = config.kafka.bootstrap_servers
            if args.what == "producer":
                raw, seconds = profile_producer(base, bootstrap, args.lines)
                name, what = "producer", f"terra-xfer gantry, {args.lines:,} lines"
            elif args.what == "up":
                raw, seconds = profile_up(base, bootstrap, args.files, args.overhead)
                name = "up-overhead" if args.overhead else "up-local"
                what = f"terra-xfer up --threads, {args.files:,} files of 4 KB{setup}"
            else:
                name = "cpu-overhead" if args.overhead else "cpu-local"
                name += f"-{args.stage}" if args.stage else ""
                what = f"terra-xfer up, {args.files:,} files of 4 KB{setup}"
                report = cpu_up(base, bootstrap, args.files, args.overhead, args.stage)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.what == "cpu":
        text = f"# CPU per process: {what}\n\n{report}"
    else:
        text = f"# py-spy profile: {what}\n\n" + summarise(raw, seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.txt").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
