"""The file state fold: every transition, versions, duplicates, out-of-order delivery, bounds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.state.fold import (
    HISTORY_LIMIT,
    MISSING_VERSION,
    PREVIOUS_VERSIONS_LIMIT,
    StateFoldError,
    batched,
    fold,
    is_in_flight,
    is_newer,
    is_transferred,
    needs_requeue,
    parse_version,
)
from schemas.codec import Codec
from tests.samples import sample

SITE = "ua-mac"
PATH = "LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916/ef0b_left.bin"
KEY = f"{SITE}/{PATH}"
V1 = "8147712:1503578401916000000"
V2 = "8147712:1503578402000000000"
T0 = 1_503_578_401_916
NOW = 1_800_000_000_000
CODEC = Codec()
GONE = f"file {PATH!r} is missing from the cache"
RETRYING = "ingest: 403 (attempt 1, retrying)"
WARNED = "metadata ef0b_metadata.json could not be read (not JSON: ...); registered as a file"

Op = tuple[str, dict[str, Any]]


def _size_mtime(version: str) -> dict[str, int]:
    mtime_ns, size = parse_version(version)
    return {"size": size, "mtime_ns": mtime_ns}


def arrived(version: str = V1, at: int = T0, **over: Any) -> Op:
    value = sample("FileArrived") | {"key": KEY, "version": version, "path": PATH}
    value |= _size_mtime(version) | {"logged_ms": at, "emitted_ms": at + 5} | over
    return "FileArrived", value


def batch(attempt: int = 1, task: str | None = "t-1", version: str = V1, at: int = T0 + 10) -> Op:
    file = {"key": KEY, "version": version, "path": PATH, "dest_path": "d/x", "attempt": attempt}
    file |= _size_mtime(version)
    return "Batch", {"file": file, "batch_id": f"b-{attempt}", "task_id": task, "at": at}


def transferred(attempt: int = 1, task: str = "t-1", version: str = V1, at: int = T0 + 20) -> Op:
    value = sample("FileTransferred") | {"key": KEY, "version": version, "path": PATH}
    value |= _size_mtime(version) | {"attempt": attempt, "task_id": task, "emitted_ms": at}
    return "FileTransferred", value | {"checksum": "c0ffee", "batch_id": f"b-{attempt}"}


def transfer_failed(
    attempt: int = 1,
    final: bool = False,
    task: str | None = "t-1",
    version: str = V1,
    at: int = T0 + 20,
) -> Op:
    value = sample("FileTransferFailed") | {"key": KEY, "version": version, "path": PATH}
    value |= _size_mtime(version) | {"attempt": attempt, "final": final, "task_id": task}
    return "FileTransferFailed", value | {"reason": f"denied {attempt}", "emitted_ms": at}


def ingested(version: str = V1, at: int = T0 + 30, warning: str | None = None) -> Op:
    return "FileIngested", sample("FileIngested") | {
        "key": KEY,
        "version": version,
        "emitted_ms": at,
        "warning": warning,
    }


def ingest_failed(
    attempt: int = 1, final: bool = False, at: int = T0 + 30, reason: str = "403"
) -> Op:
    value = sample("FileIngestFailed") | {"key": KEY, "version": V1, "emitted_ms": at}
    return "FileIngestFailed", value | {"attempt": attempt, "final": final, "reason": reason}


def missing(at: int = T0 - 50, line: int = 4096, reason: str = GONE) -> Op:
    value = sample("FileMissing") | {"key": KEY, "path": PATH, "reason": reason}
    value |= {"event_id": f"xferlog:1a2b:{line}", "source_ref": f"/var/log/xferlog@{line}"}
    return "FileMissing", value | {"logged_ms": at, "emitted_ms": at + 5}


def deleted(outcome: str = "DELETED", reason: str | None = None, at: int = T0 + 40) -> Op:
    value = sample("FileDeleted") | {"key": KEY, "version": V1, "path": PATH, "emitted_ms": at}
    return "FileDeleted", value | {"outcome": outcome, "reason": reason}


def step(state: dict[str, Any] | None, op: Op, now: int = NOW) -> dict[str, Any] | None:
    """Fold one op; every record produced must be a valid FileState."""
    name, value = op
    if name == "Batch":
        new = batched(
            state, value["file"], value["batch_id"], value["task_id"], now, emitted_ms=value["at"]
        )
    else:
        new = fold(state, name, value, now)
    if new is not None:
        CODEC.encode("FileState", new)
    return new


def run(ops: Iterable[Op]) -> dict[str, Any]:
    state: dict[str, Any] | None = None
    for op in ops:
        state = step(state, op) or state
    assert state is not None
    return state


def names(state: dict[str, Any]) -> list[str]:
    return [t["state"] for t in state["history"]]


HAPPY = [arrived(), batch(), transferred()]

# (prelude, event, expected (state, ingested, deleted, reason) or None when nothing changes)
TABLE: list[tuple[str, list[Op], Op, tuple[str, bool, bool, str | None] | None]] = [
    ("arrival", [], arrived(), ("ARRIVED", False, False, None)),
    ("replayed arrival", [arrived()], arrived(), None),
    ("sweeper finds it again", [arrived()], arrived(at=T0 + 99, event_id="sweep:1"), None),
    ("batched", [arrived()], batch(), ("BATCHED", False, False, None)),
    ("batch replay", [arrived(), batch()], batch(), None),
    ("transferred", [arrived(), batch()], transferred(), ("TRANSFERRED", False, False, None)),
    ("transfer replay", HAPPY, transferred(), None),
    ("failed", [arrived(), batch()], transfer_failed(), ("FAILED", False, False, "transfer: denied 1")),
    ("failure replay", [arrived(), batch(), transfer_failed()], transfer_failed(), None),
    ("retry batched", [arrived(), batch(), transfer_failed()], batch(2, "t-2"), ("BATCHED", False, False, None)),
    ("stale failure", [arrived(), batch(), transfer_failed(), batch(2)], transfer_failed(1), None),
    ("retry succeeds", [arrived(), batch(), transfer_failed()], transferred(2, "t-2"), ("TRANSFERRED", False, False, None)),
    ("final failure", [arrived(), batch()], transfer_failed(final=True), ("QUARANTINED", False, False, "transfer: denied 1")),
    ("failure after transfer", HAPPY, transfer_failed(), None),
    ("late batch after transfer", HAPPY, batch(2), ("TRANSFERRED", False, False, None)),
    ("ingested", HAPPY, ingested(), ("INGESTED", True, False, None)),
    ("ingest replay", [*HAPPY, ingested()], ingested(), None),
    ("deleted", HAPPY, deleted(), ("DELETED", False, True, None)),
    ("already gone", HAPPY, deleted("ALREADY_GONE"), ("DELETED", False, True, None)),
    ("done by deletion", [*HAPPY, ingested()], deleted(), ("DONE", True, True, None)),
    ("done by ingestion", [*HAPPY, deleted()], ingested(), ("DONE", True, True, None)),
    ("transfer replay when done", [*HAPPY, ingested(), deleted()], transferred(), None),
    ("deletion replay", [*HAPPY, deleted()], deleted(), None),
    ("refused", [*HAPPY, ingested()], deleted("REFUSED", "changed"), ("INGESTED", True, False, "delete refused: changed")),
    ("refusal replay", [*HAPPY, deleted("REFUSED", "changed")], deleted("REFUSED", "changed"), None),
    ("deleted after refusal", [*HAPPY, ingested(), deleted("REFUSED", "x")], deleted(), ("DONE", True, True, None)),
    ("refused after deletion", [*HAPPY, deleted()], deleted("REFUSED", "x"), None),
    ("dry run", [*HAPPY, ingested()], deleted("DRY_RUN"), ("INGESTED", True, False, None)),
    ("dry run replay", [*HAPPY, ingested(), deleted("DRY_RUN")], deleted("DRY_RUN"), None),
    ("ingest retrying", HAPPY, ingest_failed(), ("TRANSFERRED", False, False, RETRYING)),
    ("stale ingest retry", [*HAPPY, ingest_failed(2)], ingest_failed(1), None),
    ("ingest retrying, deleted", [*HAPPY, deleted()], ingest_failed(), ("DELETED", False, True, RETRYING)),
    ("deleted while ingest retries", [*HAPPY, ingest_failed()], deleted(), ("DELETED", False, True, RETRYING)),
    ("ingest retry proves the transfer", [arrived(), batch(), transfer_failed()], ingest_failed(), ("TRANSFERRED", False, False, RETRYING)),
    ("ingest gives up after retrying", [*HAPPY, ingest_failed()], ingest_failed(2, final=True), ("TRANSFERRED", False, False, "ingest: 403")),
    ("late retry after giving up", [*HAPPY, ingest_failed(2, final=True)], ingest_failed(1), ("TRANSFERRED", False, False, "ingest: 403")),
    ("ingested after retrying", [*HAPPY, ingest_failed(), ingest_failed(2)], ingested(), ("INGESTED", True, False, None)),
    ("ingest retry outranks refusal", [*HAPPY, deleted("REFUSED", "x")], ingest_failed(), ("TRANSFERRED", False, False, RETRYING)),
    ("refusal yields to ingest retry", [*HAPPY, ingest_failed()], deleted("REFUSED", "x"), ("TRANSFERRED", False, False, RETRYING)),
    ("ingested shows the hidden refusal", [*HAPPY, deleted("REFUSED", "x"), ingest_failed()], ingested(), ("INGESTED", True, False, "delete refused: x")),
    ("ingested, refusal then deletion", [*HAPPY, deleted("REFUSED", "x"), ingest_failed(), deleted()], ingested(), ("DONE", True, True, None)),
    ("missing", [], missing(), ("MISSING", False, False, GONE)),
    ("missing replay", [missing()], missing(), None),
    ("missing again from another line", [missing()], missing(T0 + 9, 8192, "gone again"), ("MISSING", False, False, "gone again")),
    ("missing when arrived", [arrived()], missing(), ("ARRIVED", False, False, None)),
    ("missing when retrying", [arrived(), batch(), transfer_failed()], missing(), ("FAILED", False, False, "transfer: denied 1")),
    ("missing when done", [*HAPPY, ingested(), deleted()], missing(), ("DONE", True, True, None)),
    ("missing replay when known", [arrived(), missing()], missing(), None),
    ("arrival after missing", [missing()], arrived(), ("ARRIVED", False, False, None)),
    ("transfer after missing", [missing()], transferred(), ("TRANSFERRED", False, False, None)),
    ("ingest retry replay", [*HAPPY, ingest_failed()], ingest_failed(), None),
    ("ingest gave up", HAPPY, ingest_failed(2, final=True), ("TRANSFERRED", False, False, "ingest: 403")),
    ("ingest gave up, deleted", [*HAPPY, deleted()], ingest_failed(final=True), ("DELETED", False, True, "ingest: 403")),
    ("ingested after giving up", [*HAPPY, ingest_failed(final=True)], ingested(), ("INGESTED", True, False, None)),
    ("ingested keeps the refusal", [*HAPPY, deleted("REFUSED", "x")], ingested(), ("INGESTED", True, False, "delete refused: x")),
    ("ingest failure after ingestion", [*HAPPY, ingested()], ingest_failed(final=True), None),
    ("ingest reason outranks refusal", [*HAPPY, ingest_failed(final=True)], deleted("REFUSED", "x"), ("TRANSFERRED", False, False, "ingest: 403")),
    ("refusal yields to ingest reason", [*HAPPY, deleted("REFUSED", "x")], ingest_failed(final=True), ("TRANSFERRED", False, False, "ingest: 403")),
    ("ingested before transferred", [arrived(), batch()], ingested(), ("INGESTED", True, False, None)),
    ("deleted before transferred", [arrived(), batch()], deleted(), ("DELETED", False, True, None)),
    ("late transfer keeps flags", [arrived(), batch(), ingested(), deleted()], transferred(), ("DONE", True, True, None)),
    ("ingested clears transfer failure", [arrived(), batch(), transfer_failed()], ingested(), ("INGESTED", True, False, None)),
    ("ingested with a warning", HAPPY, ingested(warning=WARNED), ("INGESTED", True, False, None)),
    ("done with a warning", [*HAPPY, deleted()], ingested(warning=WARNED), ("DONE", True, True, None)),
    ("warned ingest replay", [*HAPPY, ingested(warning=WARNED)], ingested(warning=WARNED), None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("prelude", "event", "expected"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE]
)
def test_transition_table(
    prelude: list[Op], event: Op, expected: tuple[str, bool, bool, str | None] | None
) -> None:
    before = run(prelude) if prelude else None
    after = step(before, event)
    if expected is None:
        assert after is None
        return
    assert after is not None
    assert (after["state"], after["ingested"], after["deleted"], after["reason"]) == expected
    assert after["updated_ms"] == NOW
    assert len(after["history"]) == (len(before["history"]) if before else 0) + 1


def test_a_batch_folded_after_its_transfer_still_shows_in_the_history() -> None:
    # A keeper taking over a partition with a backlog may read a file's transfer outcome
    # before the batch that carried it: the state is the same, the history still has BATCHED.
    state = run([arrived(), transferred(), batch(), ingested(), deleted()])
    assert state["state"] == "DONE"
    assert names(state) == ["ARRIVED", "TRANSFERRED", "BATCHED", "INGESTED", "DELETED"]
    assert step(state, batch()) is None  # and only once


def test_a_batch_folded_after_its_failure_still_shows_in_the_history() -> None:
    state = run([arrived(), transfer_failed(), batch()])
    assert (state["state"], state["reason"]) == ("FAILED", "transfer: denied 1")
    assert names(state) == ["ARRIVED", "FAILED", "BATCHED"]


def test_happy_path_carries_the_evidence_of_every_stage() -> None:
    state = run([*HAPPY, ingested(), deleted()])
    assert names(state) == ["ARRIVED", "BATCHED", "TRANSFERRED", "INGESTED", "DELETED"]
    assert [t["at_ms"] for t in state["history"]] == [T0 + 5, T0 + 10, T0 + 20, T0 + 30, T0 + 40]
    assert state["history"][0]["evidence"] == {
        "version": V1,
        "event_id": "xferlog:1a2b:4096",
        "source": "XFERLOG",
        "source_ref": "/var/log/xferlog@4096",
    }
    assert state["history"][1]["evidence"]["batch_id"] == "b-1"
    assert state["history"][2]["evidence"]["checksum"] == "c0ffee"
    assert state["history"][3]["evidence"]["collection_ids"] == "c1,c2"
    assert state["history"][4]["evidence"]["removed_dirs"] == "a/b"
    assert (state["task_id"], state["checksum"], state["dataset_id"], state["file_id"]) == (
        "t-1",
        "c0ffee",
        "d1",
        "f1",
    )
    assert (state["sensor"], state["date"], state["site"], state["path"]) == (
        "stereoTop",
        "2017-08-24",
        SITE,
        PATH,
    )
    assert (state["arrived_ms"], state["attempts"], state["state"]) == (T0, 1, "DONE")


def test_each_transition_is_encoded_once_with_every_later_state_of_its_file() -> None:
    """A file's state is written again at every change, with all of its history: the earlier
    transitions are the same objects, and their bytes are remembered from their first write."""
    before = run(HAPPY)  # each state encoded as it was made

    after = fold(before, *ingested(), NOW)

    assert after is not None
    assert all(a is b for a, b in zip(after["history"], before["history"], strict=False))
    assert [t.avro is not None for t in after["history"]] == [True, True, True, False]
    assert CODEC.decode(CODEC.encode("FileState", after))[1] == after
    assert after["history"][-1].avro is not None


def test_failure_records_reason_attempts_and_retry_time() -> None:
    state = run([arrived(), batch(), transfer_failed(), batch(2, "t-2"), transfer_failed(2)])
    assert (state["state"], state["attempts"], state["reason"]) == (
        "FAILED",
        2,
        "transfer: denied 2",
    )
    assert state["history"][-1]["evidence"]["retry_at_ms"] == str(T0 + 30_000)
    assert names(state) == ["ARRIVED", "BATCHED", "FAILED", "BATCHED", "FAILED"]


def test_prepared_batch_gets_its_task_id_when_submitted() -> None:
    prepared = run([arrived(), batch(task=None)])
    assert (prepared["state"], prepared["task_id"]) == ("BATCHED", None)
    submitted = step(prepared, batch(task="t-9"))
    assert submitted is not None and submitted["task_id"] == "t-9"
    assert step(submitted, batch(task=None)) is None


def test_failure_without_task_keeps_the_task_of_its_attempt() -> None:
    state = run([arrived(), batch(task="t-1"), transfer_failed(task=None)])
    assert state["task_id"] == "t-1"


def test_events_before_the_arrival_build_the_record_from_key_and_version() -> None:
    first = step(None, transferred(at=T0 + 20))
    assert first is not None
    assert (first["state"], first["site"], first["path"], first["sensor"]) == (
        "TRANSFERRED",
        SITE,
        PATH,
        None,
    )
    assert (first["size"], first["mtime_ns"], first["arrived_ms"]) == (
        8147712,
        1503578401916000000,
        T0 + 20,
    )
    late = step(first, arrived())
    assert late is not None
    assert (late["state"], late["sensor"], late["date"], late["arrived_ms"]) == (
        "TRANSFERRED",
        "stereoTop",
        "2017-08-24",
        T0,
    )
    assert names(late) == ["TRANSFERRED", "ARRIVED"]
    assert step(late, arrived()) is None


def test_ingested_event_alone_starts_a_record_from_the_key() -> None:
    state = step(None, ingested())
    assert state is not None
    assert (state["state"], state["path"], state["site"]) == ("INGESTED", PATH, SITE)


def test_new_version_resets_to_arrived_and_keeps_the_trail() -> None:
    done = run([*HAPPY, ingested(), deleted()])
    again = step(done, arrived(V2, at=T0 + 1000))
    assert again is not None
    assert (again["version"], again["state"], again["ingested"], again["deleted"]) == (
        V2,
        "ARRIVED",
        False,
        False,
    )
    assert (again["task_id"], again["checksum"], again["attempts"]) == (None, None, 0)
    assert again["previous_versions"] == [V1]
    assert names(again) == [*names(done), "ARRIVED"]
    assert again["history"][-1]["evidence"]["version"] == V2
    assert is_transferred(done, V1) and not is_transferred(again, V1)


def test_events_of_an_older_version_are_ignored() -> None:
    current = run([arrived(V2), batch(version=V2)])
    for op in [arrived(V1), batch(version=V1), transferred(version=V1), ingested(version=V1)]:
        assert step(current, op) is None


def test_newer_version_seen_first_through_a_later_stage() -> None:
    old = run([*HAPPY, ingested()])
    new = step(old, transferred(version=V2, task="t-2"))
    assert new is not None
    assert (new["version"], new["state"], new["ingested"], new["task_id"]) == (
        V2,
        "TRANSFERRED",
        False,
        "t-2",
    )
    assert (new["sensor"], new["previous_versions"]) == ("stereoTop", [V1])


def test_version_order_is_mtime_then_size() -> None:
    assert is_newer("1:200", "999:100")
    assert is_newer("2:100", "1:100")
    assert not is_newer("1:100", "1:100")
    assert parse_version("8147712:1503578401916000000") == (1503578401916000000, 8147712)
    with pytest.raises(StateFoldError, match="malformed version"):
        parse_version("8147712")
    with pytest.raises(StateFoldError, match="malformed version"):
        step(None, arrived(version="big:small"))


def test_previous_versions_are_bounded() -> None:
    state = run([arrived(f"10:{m}") for m in range(1, 15)])
    assert state["version"] == "10:14"
    assert len(state["previous_versions"]) == PREVIOUS_VERSIONS_LIMIT
    assert state["previous_versions"] == [f"10:{m}" for m in range(4, 14)]


def test_history_is_bounded() -> None:
    ops: list[Op] = [arrived()]
    for attempt in range(1, 40):
        ops += [batch(attempt, f"t-{attempt}"), transfer_failed(attempt)]
    state = run(ops)
    assert len(state["history"]) == HISTORY_LIMIT
    assert state["history"][-1]["evidence"]["attempt"] == "39"
    assert state["attempts"] == 39


def test_batch_submitted_is_not_folded_per_file_and_unknown_records_raise() -> None:
    assert fold(None, "BatchSubmitted", sample("BatchSubmitted"), NOW) is None
    with pytest.raises(StateFoldError, match="Checkpoint"):
        fold(None, "Checkpoint", sample("Checkpoint"), NOW)


def test_batched_without_emitted_time_uses_now() -> None:
    _, value = batch()
    state = batched(None, value["file"], "b-1", "t-1", NOW)
    assert state is not None and state["history"][-1]["at_ms"] == NOW


def test_a_missing_file_gets_a_record_with_the_reason_until_a_version_arrives() -> None:
    gone = step(None, missing(at=T0 - 50))
    assert gone is not None
    assert (gone["state"], gone["version"], gone["size"], gone["mtime_ns"]) == (
        "MISSING",
        MISSING_VERSION,
        0,
        0,
    )
    assert (gone["reason"], gone["sensor"], gone["date"], gone["arrived_ms"]) == (
        GONE,
        "stereoTop",
        "2017-08-24",
        T0 - 50,
    )
    assert gone["history"] == [
        {
            "state": "MISSING",
            "at_ms": T0 - 50,
            "evidence": {
                "event_id": "xferlog:1a2b:4096",
                "source": "XFERLOG",
                "source_ref": "/var/log/xferlog@4096",
                "logged_size": "8147712",
                "reason": GONE,
            },
        }
    ]
    found = step(gone, arrived(at=T0, event_id="sweep:1", source="SWEEPER"))
    assert found is not None
    assert (found["state"], found["version"], found["reason"], found["size"]) == (
        "ARRIVED",
        V1,
        None,
        8147712,
    )
    assert (found["previous_versions"], found["arrived_ms"]) == ([], T0)
    assert names(found) == ["MISSING", "ARRIVED"]
    assert needs_requeue(gone, V1) and not needs_requeue(step(found, batch()), V1)


def test_a_missing_line_only_adds_evidence_to_a_known_file() -> None:
    done = run([*HAPPY, ingested(), deleted()])
    noted = step(done, missing(at=T0 + 99, line=8192))
    assert noted is not None
    assert essence(noted) == essence(done)
    assert names(noted) == [*names(done), "MISSING"]
    assert noted["history"][-1]["evidence"]["source_ref"] == "/var/log/xferlog@8192"
    assert step(noted, missing(at=T0 + 99, line=8192)) is None
    again = step(noted, missing(at=T0 + 120, line=9000))
    assert again is not None and names(again) == [*names(noted), "MISSING"]


def test_ingest_retries_show_the_latest_attempt_and_record_each_cause_once() -> None:
    state = run([*HAPPY, deleted(), ingest_failed(1, reason="503")])
    assert (state["state"], state["reason"]) == ("DELETED", "ingest: 503 (attempt 1, retrying)")
    for attempt in range(2, 6):
        new = step(state, ingest_failed(attempt, reason="503"))
        assert new is not None and new["history"] == state["history"]
        state = new
    assert state["reason"] == "ingest: 503 (attempt 5, retrying)"
    other = step(state, ingest_failed(6, reason="connection reset"))
    assert other is not None
    assert other["reason"] == "ingest: connection reset (attempt 6, retrying)"
    failures = [t["evidence"] for t in other["history"] if t["state"] == "INGEST_FAILED"]
    assert [(e["reason"], e["attempt"], e["final"]) for e in failures] == [
        ("503", "1", "false"),
        ("connection reset", "6", "false"),
    ]
    assert step(other, ingest_failed(3, reason="503")) is None  # an earlier attempt, seen
    done = step(other, ingested())
    assert done is not None and (done["state"], done["reason"]) == ("DONE", None)


def test_an_ingest_warning_is_kept_without_holding_the_file_back() -> None:
    state = run([*HAPPY, ingested(warning=WARNED), deleted()])
    assert (state["state"], state["reason"], state["warning"]) == ("DONE", None, WARNED)
    assert state["history"][3]["evidence"]["warning"] == WARNED
    plain = run([*HAPPY, ingested(), deleted()])
    assert plain["warning"] is None and "warning" not in plain["history"][3]["evidence"]
    refused = run([*HAPPY, ingested(warning=WARNED), deleted("REFUSED", "changed")])
    assert (refused["reason"], refused["warning"]) == ("delete refused: changed", WARNED)


def test_a_warned_ingest_ends_an_old_ingest_failure_and_a_new_version_drops_it() -> None:
    # An earlier release refused a broken sidecar for good; ingested again now, it is DONE.
    gave_up = run([*HAPPY, deleted(), ingest_failed(final=True, reason="cannot read metadata")])
    assert (gave_up["state"], gave_up["reason"]) == ("DELETED", "ingest: cannot read metadata")
    done = step(gave_up, ingested(warning=WARNED))
    assert done is not None
    assert (done["state"], done["reason"], done["warning"]) == ("DONE", None, WARNED)
    newer = step(done, arrived(V2))
    assert newer is not None and (newer["state"], newer["warning"]) == ("ARRIVED", None)


def test_a_record_kept_before_warnings_existed_folds_on() -> None:
    kept = {k: v for k, v in run(HAPPY).items() if k != "warning"}  # an earlier release's JSON
    warned = step(kept, ingested(warning=WARNED))
    assert warned is not None and warned["warning"] == WARNED
    deleted_ = step(kept, deleted())
    assert deleted_ is not None and deleted_["state"] == "DELETED"
    assert step(deleted_, deleted()) is None


@pytest.mark.parametrize(
    ("ops", "version", "transferred_", "in_flight", "requeue"),
    [
        ([], V1, False, False, True),
        ([arrived()], V1, False, False, True),
        ([arrived(), batch()], V1, False, True, False),
        ([arrived(), batch(), transfer_failed()], V1, False, True, False),
        ([arrived(), batch(), transfer_failed(final=True)], V1, False, False, False),
        (HAPPY, V1, True, False, False),
        ([*HAPPY, ingested(), deleted()], V1, True, False, False),
        ([arrived(), batch(), ingested()], V1, True, False, False),
        (HAPPY, V2, False, False, True),
        ([arrived(V2)], V1, False, False, False),
        ([missing()], V1, False, False, True),
        ([missing()], MISSING_VERSION, False, False, True),
        ([arrived(), missing()], V1, False, False, True),
        ([*HAPPY, missing()], V1, True, False, False),
    ],
)
def test_batcher_and_sweeper_questions(
    ops: list[Op], version: str, transferred_: bool, in_flight: bool, requeue: bool
) -> None:
    state = run(ops) if ops else None
    assert is_transferred(state, version) is transferred_
    assert is_in_flight(state, version) is in_flight
    assert needs_requeue(state, version) is requeue


@st.composite
def lifecycles(draw: st.DrawFn) -> list[Op]:
    """One version's events in the order the stages emit them, with increasing event times."""
    ops: list[Op] = [missing(), arrived()] if draw(st.booleans()) else [arrived()]
    outcome = draw(st.sampled_from(["success", "quarantined", "pending"]))
    attempts = draw(st.integers(1, 4))
    for n in range(1, attempts + 1):
        if draw(st.booleans()):
            ops.append(batch(n, task=None))
        ops.append(batch(n, f"t-{n}"))
        task = draw(st.sampled_from([f"t-{n}", None]))
        if n < attempts or (outcome == "pending" and draw(st.booleans())):
            ops.append(transfer_failed(n, task=task))
        elif outcome == "quarantined":
            ops.append(transfer_failed(n, final=True, task=task))
        elif outcome == "success":
            ops.append(transferred(n, f"t-{n}"))
    if outcome == "success":
        ops += _interleave(draw, _ingest_chain(draw), _delete_chain(draw))
    return [(name, _timed(value, T0 + 10 * i)) for i, (name, value) in enumerate(ops)]


def _ingest_chain(draw: st.DrawFn) -> list[Op]:
    causes = st.sampled_from(["403", "503"])
    chain = [ingest_failed(n, reason=draw(causes)) for n in range(1, draw(st.integers(0, 2)) + 1)]
    end = draw(st.sampled_from(["ingested", "gave up", "none"]))
    if end == "ingested":
        chain.append(ingested(warning=draw(st.sampled_from([None, WARNED]))))
    elif end == "gave up":
        chain.append(ingest_failed(len(chain) + 1, final=True))
    return chain


def _delete_chain(draw: st.DrawFn) -> list[Op]:
    chain = [deleted("REFUSED", "not confirmed")] * draw(st.integers(0, 2))
    end = draw(st.sampled_from(["DELETED", "ALREADY_GONE", "DRY_RUN", None]))
    return chain + ([deleted(end)] if end else [])


def _interleave(draw: st.DrawFn, first: list[Op], second: list[Op]) -> list[Op]:
    merged: list[Op] = []
    while first or second:
        take_first = bool(first) and (not second or draw(st.booleans()))
        merged.append((first if take_first else second).pop(0))
    return merged


def _timed(value: dict[str, Any], at: int) -> dict[str, Any]:
    if "file" in value:
        return value | {"at": at}
    return value | {"emitted_ms": at}


def essence(state: dict[str, Any]) -> dict[str, Any]:
    """The record without what depends on the order of folding: its history and write time."""
    return {k: v for k, v in state.items() if k not in ("history", "updated_ms")}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), ops=lifecycles())
def test_any_order_and_duplication_ends_in_the_same_state(
    data: st.DataObject, ops: list[Op]
) -> None:
    in_order = run(ops)
    extra = data.draw(st.lists(st.sampled_from(ops), max_size=6))
    shuffled = data.draw(st.permutations([*ops, *extra]))
    state: dict[str, Any] | None = None
    for op in shuffled:
        state = step(state, op) or state
        assert step(state, op) is None, f"folding {op[0]} twice changed the record"
    assert state is not None
    assert essence(state) == essence(in_order)


@pytest.mark.parametrize(
    "late", [[ingested()], [deleted()], [ingested(), deleted()], [deleted(), ingested()]]
)
def test_a_transfer_folded_after_what_follows_it_is_still_in_the_history_once(
    late: list[Op],
) -> None:
    """A keeper reads its five topics at their own pace: after a restart it may fold a file's
    ingestion and deletion before its FileTransferred. The state does not move, but the history
    shows the transfer (once, however often the event is read). Here it changes no field
    either: no checksum (as from a Globus task without one), the task the batch named."""
    name, value = transferred()
    late_transfer = (name, value | {"checksum": None, "checksum_algorithm": None})
    before = run([arrived(), batch(), *late])
    after = step(before, late_transfer)

    assert after is not None
    assert {k: v for k, v in after.items() if k not in ("history", "updated_ms")} == {
        k: v for k, v in before.items() if k not in ("history", "updated_ms")
    }
    assert names(after) == [*names(before), "TRANSFERRED"]
    assert step(after, late_transfer) is None
