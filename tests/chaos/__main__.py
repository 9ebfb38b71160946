"""Run the chaos suite: ``python -m tests.chaos [--long] [--kill-supervisor | --scale-out]
[--seed N] [--keep DIR]``.

The short form (about two minutes) is what CI runs through pytest; the long form (20,000 files,
30 kills) is for a night. ``--kill-supervisor`` runs the stages under ``terra-xfer up`` and kills
``up`` itself instead of one stage (the short form then ships a smaller night with fewer kills; CI
runs it too). ``--scale-out`` runs every consuming stage as 1 to 3 pod-like replicas and strikes
with scale events: replicas added, SIGTERMed, SIGKILLed, restarted in place, frozen with SIGSTOP,
rolled with overlap (short: 500 uploads and 8 events, in CI too; long: 20,000 and 60). Prints the
figures as JSON and exits 1 when a promise was broken.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from tests.chaos.run import PLANS, as_dict, run


def say(text: str) -> None:
    """One line of progress, stamped in UTC like the records' timestamps it is read beside."""
    print(f"{datetime.now(UTC):%H:%M:%S.%f}"[:-3], text, file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--long", action="store_true", help="the night-long form")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--files", type=int, help="override the number of uploads")
    ap.add_argument("--kills", type=int, help="override the number of kills (or scale events)")
    ap.add_argument("--keep", type=Path, help="run in this directory and keep it")
    how = ap.add_mutually_exclusive_group()
    how.add_argument(
        "--kill-supervisor",
        action="store_true",
        help="run the stages under `terra-xfer up` and SIGKILL up itself at each kill",
    )
    how.add_argument(
        "--scale-out",
        action="store_true",
        help="run every consuming stage as 1-3 replicas and strike with scale events",
    )
    args = ap.parse_args()
    mode = "up" if args.kill_supervisor else "scale-out" if args.scale_out else "stages"
    plan = dataclasses.replace(PLANS[mode][args.long], seed=args.seed)
    if args.files:
        plan = dataclasses.replace(plan, files=args.files)
    if args.kills is not None:
        plan = dataclasses.replace(plan, kills=args.kills)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = run(plan, args.keep, say, mode)
    else:
        with tempfile.TemporaryDirectory(prefix="terra-chaos-") as tmp:
            report = run(plan, Path(tmp), say, mode)
    print(json.dumps(as_dict(report), indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
