"""The status index's write path without Kafka: files.state records of files folded through their
six states (as ``bench.keeper_replay`` makes them), read as the indexer reads them (the fields
before the history, and the record's own bytes) and applied in batches of 5,000.

    PYTHONPATH=. .venv/bin/python -m bench.index_apply [--files 20000]

Prints CPU microseconds per record applied (``time.process_time``, best of three), and the bytes
on disk per file: applied to an index that holds rows (as the indexer follows files.state), and
loaded into a new one (as a lost index is rebuilt: ``StatusIndex.loading``, its secondary
indexes built at the end, within the time).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.keeper_replay import lives
from consumers.state.status_index import Recorded, StateRecord, StatusIndex
from consumers.state.view import HEAD_ENDS_AT
from schemas.codec import Codec

BATCH = 5000


def records(files: int) -> list[StateRecord]:
    """Each file's states in order, the files interleaved as a night's records are."""
    codec = Codec()
    per_file = lives(files)
    out: list[StateRecord] = []
    for step in range(max(len(states) for states in per_file)):
        for states in per_file:
            if step < len(states):
                raw = codec.encode("FileState", states[step])
                head = codec.decode_head(raw, HEAD_ENDS_AT)[1]
                out.append((0, len(out), states[step]["key"], Recorded(head, raw)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20_000)
    args = ap.parse_args()
    batches = records(args.files)
    for label, loaded in (("applied", False), ("loaded into a new index", True)):
        best = float("inf")
        size = 0
        for _ in range(3):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "status.sqlite"
                with StatusIndex(path) as index:
                    if not loaded:  # a row and an offset: the index is not new
                        index.apply(batches[:1])
                    start = time.process_time()
                    with index.loading():
                        for i in range(0, len(batches), BATCH):
                            index.apply(batches[i : i + BATCH])
                    best = min(best, time.process_time() - start)
                size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        print(f"{best / len(batches) * 1e6:.1f} us a record {label} ({len(batches):,} records)")
        print(f"  {size / args.files:,.0f} bytes on disk a file")


if __name__ == "__main__":
    main()
