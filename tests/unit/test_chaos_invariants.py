"""The chaos suite's invariants: a clean run passes, and each broken promise is named."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.chaos.invariants import (
    Found,
    Stamp,
    StateRecord,
    check,
    follow,
    incomplete_histories,
    recount,
    report_mismatch,
)
from tests.chaos.janitor import Hanging, parse_hanging

SHIPPED = {
    "MAC/weather/2017-08-24/a.dat": Stamp("aa", 10, 1),
    "MAC/weather/2017-08-24/b.dat": Stamp("bb", 20, 2),
}
IGNORED = {"ScriptBackup/x.sh": Stamp("cc", 5, 3)}
KEYS = {f"ua-mac/{rel}": rel for rel in SHIPPED}
VERSIONS = {key: f"{SHIPPED[rel].size}:{SHIPPED[rel].mtime_ns}" for key, rel in KEYS.items()}
DEST = {
    key: f"sites/ua-mac/raw_data/weather/2017-08-24/{rel.rsplit('/', 1)[1]}"
    for key, rel in KEYS.items()
}
BAD = [b"not a line\n"]
A, B = sorted(SHIPPED)
KA, KB = sorted(KEYS)
JOURNEY = (  # (state, ingested, deleted) after each transition of a clean file
    ("ARRIVED", False, False),
    ("BATCHED", False, False),
    ("TRANSFERRED", False, False),
    ("INGESTED", True, False),
    ("DONE", True, True),
)
COUNTED = ("files_arrived", "files_transferred", "files_ingested", "files_deleted")
NAMES = ("ARRIVED", "BATCHED", "TRANSFERRED", "INGESTED", "DELETED")


def deleted(
    rel: str, outcome: str = "DELETED", confirmed: bool = True, **more: Any
) -> dict[str, Any]:
    stamp = SHIPPED[rel]
    return {
        "key": f"ua-mac/{rel}", "version": f"{stamp.size}:{stamp.mtime_ns}", "path": rel,
        "outcome": outcome, "destination_confirmed": confirmed, "size": stamp.size,
        "mtime_ns": stamp.mtime_ns, **more,
    }  # fmt: skip


def state(key: str, step: int, *, version: str = "", **more: Any) -> dict[str, Any]:
    """The FileState of ``key`` after the first ``step + 1`` transitions of a clean journey."""
    version = version or VERSIONS[key]
    name, ingested, deleted_ = JOURNEY[step]
    history = [
        {"state": n, "at_ms": 1000 + i, "evidence": {"version": version}}
        for i, n in enumerate(NAMES[: step + 1])
    ]
    return {
        "key": key, "version": version, "state": name, "ingested": ingested,
        "deleted": deleted_, "sensor": "weather", "date": "2017-08-24", "history": history,
        **more,
    }  # fmt: skip


def journey(key: str, partition: int) -> list[StateRecord]:
    return [(partition, i, state(key, i)) for i in range(len(JOURNEY))]


def arrival(key: str, **more: Any) -> dict[str, Any]:
    return {
        "key": key, "version": VERSIONS[key], "sensor": "weather", "date": "2017-08-24",
        "logged_ms": 1000, "emitted_ms": 1001, **more,
    }  # fmt: skip


def of(key: str) -> dict[str, str]:
    return {"key": key, "version": VERSIONS[key]}


TRAIL = follow([*journey(KA, 0), *journey(KB, 1)])
CLEAN = Found(
    states={key: "DONE" for key in KEYS},
    dest_paths=DEST,
    destination={DEST[key]: SHIPPED[rel].sha256 for key, rel in KEYS.items()},
    cache={"ScriptBackup/x.sh": IGNORED["ScriptBackup/x.sh"]},
    deletions=[deleted(rel) for rel in SHIPPED],
    dead_letters=[b"not a line"],
    catalog=[("weather - 2017-08-24", "a.dat"), ("weather - 2017-08-24", "b.dat")],
    trail=TRAIL,
    arrived=[arrival(KA), arrival(KB), arrival(KB, emitted_ms=5000)],  # B announced twice
    transferred=[of(KA), of(KB)],
    ingested=[of(KA), of(KB)],
    dead_sources=[("gantry:xferlog", "not an xferlog line")],
    status=[{"key": k, "state": "DONE", "version": VERSIONS[k]} for k in KEYS],
    report=[{"sensor": "weather", "date": "2017-08-24", **dict.fromkeys(COUNTED, 2)}],
)


def test_a_clean_run_breaks_no_promise() -> None:
    assert CLEAN.trail.violations == []
    assert check("ua-mac", SHIPPED, IGNORED, BAD, CLEAN) == []


def test_an_already_gone_file_with_a_confirmed_copy_is_safe() -> None:
    found = dataclasses.replace(CLEAN, deletions=[deleted(A, "ALREADY_GONE"), deleted(B)])
    assert check("ua-mac", SHIPPED, IGNORED, BAD, found) == []


def _final(value: dict[str, Any]) -> Any:
    """The trail of a clean run but for the last record of A, which is ``value``."""
    return follow([*journey(KA, 0)[:-1], (0, 4, value), *journey(KB, 1)])


@pytest.mark.parametrize(
    ("change", "violation"),
    [
        (
            {"states": {f"ua-mac/{A}": "DONE", f"ua-mac/{B}": "INGESTED"}},
            "ended INGESTED, not DONE",
        ),
        ({"destination": {DEST[f"ua-mac/{A}"]: "aa", DEST[f"ua-mac/{B}"]: "xx"}}, "differs"),
        (
            {
                "destination": {
                    **{DEST[k]: SHIPPED[r].sha256 for k, r in KEYS.items()},
                    "sites/extra": "e",
                }
            },
            "never shipped",
        ),
        (
            {"deletions": [deleted(A), deleted(B, confirmed=False)]},
            "without a confirmed destination",
        ),
        ({"deletions": [deleted(A), deleted(B, size=21)]}, "not the one written"),
        ({"deletions": [deleted(A)]}, "no deletion recorded"),
        ({"cache": {}}, "non-whitelisted ScriptBackup/x.sh was removed"),
        ({"cache": {"ScriptBackup/x.sh": Stamp("cc", 6, 3)}}, "was changed"),
        ({"catalog": [("weather - 2017-08-24", "a.dat")] * 2}, "2 times"),
        ({"dead_letters": []}, "was not dead-lettered"),
        ({"dead_letters": [b"not a line", b"other"]}, "unexpected dead letter"),
        (
            {"trail": _final({**state(KA, 4), "history": state(KA, 4)["history"][::2]})},
            "lacks BATCHED, INGESTED",
        ),
        ({"trail": _final(state(KA, 4, sensor="stereoTop"))}, "final record has sensor"),
        ({"trail": _final(state(KA, 1))}, "state went back from INGESTED to BATCHED"),
        (
            {"status": [{"key": KA, "state": "DONE", "version": VERSIONS[KA]}]},
            f"status says {KB} is None, files.state ('DONE', '20:2')",
        ),
        (
            {"status": [*CLEAN.status, {"key": KA, "state": "DONE", "version": VERSIONS[KA]}]},
            f"status lists {KA} 2 times",
        ),
        (
            {"status": [{"key": k, "state": "INGESTED", "version": VERSIONS[k]} for k in KEYS]},
            "status says ua-mac/MAC/weather/2017-08-24/a.dat is ('INGESTED', '10:1')",
        ),
        ({"report": [{**CLEAN.report[0], "files_deleted": 1}]}, "(2, 2, 2, 1), the topics (2, 2"),
        ({"report": [{**CLEAN.report[0], "sensor": None}]}, "report gives None on 2017-08-24"),
        ({"ingested": [of(KA)]}, "report gives weather on 2017-08-24"),
        (
            {"dead_sources": [("state-keeper", "FileArrived on partition 1 names 1 file(s)")]},
            "the state keeper dead-lettered: FileArrived on partition 1",
        ),
    ],
)
def test_each_broken_promise_is_named(change: dict[str, Any], violation: str) -> None:
    found = dataclasses.replace(CLEAN, **change)
    violations = check("ua-mac", SHIPPED, IGNORED, BAD, found)
    assert any(violation in v for v in violations), violations


def test_a_trail_that_steps_back_is_named_record_by_record() -> None:
    stub = state(KA, 1, sensor=None, date=None, state="BATCHED")
    stub["history"] = [stub["history"][1], stub["history"][1]]  # "BATCHED > BATCHED", no ARRIVED
    trail = follow([*journey(KA, 0), (0, 5, stub)])
    assert trail.latest[KA] == (0, 5, stub)
    joined = "\n".join(trail.violations)
    assert f"{KA} at files.state 0@5 (after 0@4): state went back from DONE to BATCHED" in joined
    assert "ingested went from true to false" in joined and "deleted went from" in joined
    assert "history BATCHED > BATCHED does not extend the one before" in joined
    assert "has sensor None and date None after a record that had both" in joined
    assert incomplete_histories([KA], trail.latest) == [
        f"{KA}: final history (files.state 0@5) lacks ARRIVED, TRANSFERRED, INGESTED, DELETED: "
        "BATCHED > BATCHED"
    ]


@pytest.mark.parametrize(
    ("later", "violation"),
    [
        (state(KA, 4, version="10:0"), "version 10:0 follows the newer 10:1"),
        ({**state(KA, 4), "history": state(KA, 3)["history"]}, "does not extend"),
        (  # one transition more, but another one's evidence changed: folded onto a stale copy
            {
                **state(KA, 4),
                "history": [
                    {**t, "evidence": {**t["evidence"], "batch_id": "b2"}} if i == 1 else t
                    for i, t in enumerate(state(KA, 4)["history"])
                ],
            },
            "does not extend",
        ),
        ({**state(KA, 4), "state": "DELETED"}, "state went back from DONE to DELETED"),
        ({**state(KA, 2), "history": state(KA, 4)["history"]}, "ingested went from true to false"),
        (state(KA, 3, date=None), "date None after a record that had both"),
    ],
)
def test_each_step_back_is_named(later: dict[str, Any], violation: str) -> None:
    trail = follow([*journey(KA, 0), (0, 9, later)])
    assert any(violation in v for v in trail.violations), trail.violations


def test_a_newer_version_may_start_again_and_a_full_history_may_drop_its_oldest() -> None:
    done = state(KA, 4)
    newer = state(KA, 0, version="10:5")
    newer["history"] = [*done["history"], *newer["history"]]
    full = {**done, "history": [{**done["history"][0], "at_ms": i} for i in range(50)]}
    shifted = {**full, "history": [*full["history"][1:], done["history"][-1]]}
    assert follow([(0, 0, done), (0, 1, newer)]).violations == []
    assert follow([(0, 0, full), (0, 1, shifted)]).violations == []
    assert follow([(0, 0, done), (0, 1, done)]).violations == []  # a record written again


def test_the_recount_counts_each_file_once_as_its_newest_version_on_its_day() -> None:
    old, new = {**arrival(KA), "version": "10:0"}, arrival(KA)
    undated = {**arrival(KB), "date": None, "logged_ms": None, "emitted_ms": 86_400_000}
    counts = recount([old, new, undated], [of(KA)], [{**of(KA), "version": "10:0"}], [])
    assert counts == {
        ("weather", "2017-08-24"): (1, 1, 0, 0),
        ("weather", "1970-01-02"): (1, 0, 0, 0),
    }
    line = {"sensor": "weather", "date": "1970-01-02", **dict.fromkeys(COUNTED, 0)}
    line["files_arrived"] = 1
    assert report_mismatch(counts, [line]) == [
        "report gives weather on 2017-08-24 (arrived, transferred, ingested, deleted) None, "
        "the topics (1, 1, 0, 0)"
    ]


def test_the_janitor_reads_kafkas_table_of_hanging_transactions() -> None:
    table = (
        "Topic             \tPartition\tProducerId\tProducerEpoch\tCoordinatorEpoch\tStartOffset"
        "\tLastTimestamp\tDuration(min)\t\n"
        "terra.files.state \t1        \t1         \t2            \t0               \t977        "
        "\t1796588582510\t23           \t\n"
        "__consumer_offsets\t0        \t1         \t2            \t0               \t119        "
        "\t1796588582520\t23           \t\n"
    )
    assert parse_hanging(table) == [
        Hanging("terra.files.state", 1, 977),
        Hanging("__consumer_offsets", 0, 119),
    ]
    assert parse_hanging(table.splitlines()[0]) == []


def test_a_line_read_after_the_sweeper_shipped_its_file_may_be_dead_lettered() -> None:
    line, reason = (
        b"Thu Aug 24 ... a.dat b _ i r lemnatec ftp 0 * c",
        f"file {A!r} is missing from the cache",
    )
    unswept = dataclasses.replace(
        CLEAN,
        dead_letters=[*CLEAN.dead_letters, line],
        dead_sources=[*CLEAN.dead_sources, ("gantry:xferlog", reason)],
    )
    assert check("ua-mac", SHIPPED, IGNORED, BAD, unswept) == [f"unexpected dead letter {line!r}"]

    swept = [(p, o, s) for p, o, s in TRAIL.latest.values()]
    for i, (p, o, s) in enumerate(swept):
        if s["key"] == KA:
            first = {"state": "ARRIVED", "at_ms": 900, "evidence": {"source": "SWEEPER"}}
            swept[i] = (p, o, {**s, "history": [first, *s["history"]]})
    trail = dataclasses.replace(TRAIL, latest={s["key"]: (p, o, s) for p, o, s in swept})
    assert check("ua-mac", SHIPPED, IGNORED, BAD, dataclasses.replace(unswept, trail=trail)) == []
