"""Run the chaos suite: ``python -m tests.chaos [--long] [--kill-supervisor] [--seed N] [--keep DIR]``.

The short form (about two minutes) is what CI runs through pytest; the long form (20,000 files,
30 kills) is for a night. ``--kill-supervisor`` runs the stages under ``terra-xfer up`` and kills
``up`` itself instead of one stage (the short form then ships a smaller night with fewer kills; CI
runs it too). Prints the figures as JSON and exits 1 when a promise was broken.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from tests.chaos.run import LONG, SHORT, SHORT_SUPERVISED, as_dict, run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--long", action="store_true", help="the night-long form")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--files", type=int, help="override the number of uploads")
    ap.add_argument("--kills", type=int, help="override the number of stage kills")
    ap.add_argument("--keep", type=Path, help="run in this directory and keep it")
    ap.add_argument(
        "--kill-supervisor",
        action="store_true",
        help="run the stages under `terra-xfer up` and SIGKILL up itself at each kill",
    )
    args = ap.parse_args()
    short = SHORT_SUPERVISED if args.kill_supervisor else SHORT
    plan = dataclasses.replace(LONG if args.long else short, seed=args.seed)
    if args.files:
        plan = dataclasses.replace(plan, files=args.files)
    if args.kills is not None:
        plan = dataclasses.replace(plan, kills=args.kills)
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = run(plan, args.keep, say, args.kill_supervisor)
    else:
        with tempfile.TemporaryDirectory(prefix="terra-chaos-") as tmp:
            report = run(plan, Path(tmp), say, args.kill_supervisor)
    print(json.dumps(as_dict(report), indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
