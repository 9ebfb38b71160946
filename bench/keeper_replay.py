"""The state keeper's per-file work without Kafka: a file folded through its six states (arrival,
batch prepared and submitted, transfer, ingestion, deletion), each state encoded as files.state
holds it, and, for comparison, packed as the keeper's copy stored it before it kept the record's
own bytes (compact JSON, then zlib, as the status index also stored it until it kept them too).

    PYTHONPATH=. .venv/bin/python -m bench.keeper_replay [--files 20000]

Prints CPU microseconds per file (``time.process_time``) for fold + encode, and for the pack.
Then the path of a state the keeper no longer holds in memory: each file's transfer, ingestion and
deletion folded onto its state read back from a working copy (in chunks of 500 keys, as the
keeper looks them up) and encoded, with the history kept as the record's bytes (as the keeper
reads it back) and, for comparison, decoded whole.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from consumers.state.fold import batched, fold
from consumers.state.keeper_store import Encoded, KeeperStore
from schemas.codec import Codec
from tests.samples import sample

NOW_MS = 1_700_000_000_000


def lives(files: int) -> list[list[dict[str, Any]]]:
    """The successive states of each of ``files`` files, folded as the keeper folds them."""
    arrival = sample("FileArrived")
    later = {name: sample(name) for name in ("FileTransferred", "FileIngested", "FileDeleted")}
    later["FileDeleted"]["outcome"] = "DELETED"
    out = []
    for i in range(files):
        key = f"{arrival['key']}-{i}"
        event = {**arrival, "key": key}
        one = {"key": key, "version": event["version"], "path": event["path"], "attempt": 1}
        one["dest_path"] = f"/destination/{event['path']}"
        state = fold(None, "FileArrived", event, NOW_MS)
        assert state is not None
        states = [state]
        for task in (None, "task-1"):
            state = batched(state, one, f"batch-{i // 500}", task, NOW_MS) or state
            states.append(state)
        for name, value in later.items():
            state = fold(state, name, {**value, "key": key, "version": event["version"]}, NOW_MS)
            assert state is not None
            states.append(state)
        out.append(states)
    return out


def read_back(files: int, keeping: bool) -> float:
    """CPU microseconds per file for its last three states folded onto states read back."""
    codec = Codec()
    per_file = lives(files)
    events = {name: sample(name) for name in ("FileTransferred", "FileIngested", "FileDeleted")}
    events["FileDeleted"]["outcome"] = "DELETED"
    spent = 0.0
    with tempfile.TemporaryDirectory() as tmp, KeeperStore(Path(tmp) / "copy.sqlite") as store:
        if not keeping:
            store.codec.decode_keeping = lambda data, field: codec.decode(data)  # type: ignore[method-assign]
        for step, name in enumerate(events, start=3):
            before = [states[step - 1] for states in per_file]
            store.apply(
                (0, step * files + i, s["key"], Encoded.of(s, codec.encode("FileState", s)))
                for i, s in enumerate(before)
            )
            keys = [s["key"] for s in before]
            start = time.process_time()
            for i in range(0, files, 500):
                found = store.get_many(keys[i : i + 500])
                for key in keys[i : i + 500]:
                    event = {**events[name], "key": key, "version": found[key]["version"]}
                    new = fold(found[key], name, event, NOW_MS)
                    assert new is not None
                    codec.encode("FileState", new)
            spent += time.process_time() - start
    return spent / files * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20_000)
    args = ap.parse_args()
    codec = Codec()
    start = time.process_time()
    for states in lives(args.files):
        for state in states:
            codec.encode("FileState", state)
    fold_encode = time.process_time() - start
    every = [state for states in lives(args.files) for state in states]
    start = time.process_time()
    compact = json.JSONEncoder(separators=(",", ":"))
    for state in every:
        zlib.compress(compact.encode(state).encode(), 1)
    pack = time.process_time() - start
    per_file = 1e6 / args.files
    print(f"fold + encode: {fold_encode * per_file:.0f} us a file (six states)")
    print(f"pack (JSON + zlib), as the copy stored states before: {pack * per_file:.0f} us a file")
    kept, whole = read_back(args.files, keeping=True), read_back(args.files, keeping=False)
    print(f"three states folded onto states read back: {kept:.0f} us a file (history kept as")
    print(f"  bytes), {whole:.0f} (history decoded whole)")


if __name__ == "__main__":
    main()
