"""The chaos suite's invariants: a clean run passes, and each broken promise is named."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.chaos.invariants import Found, Stamp, check

SHIPPED = {
    "MAC/weather/2017-08-24/a.dat": Stamp("aa", 10, 1),
    "MAC/weather/2017-08-24/b.dat": Stamp("bb", 20, 2),
}
IGNORED = {"ScriptBackup/x.sh": Stamp("cc", 5, 3)}
KEYS = {f"ua-mac/{rel}": rel for rel in SHIPPED}
DEST = {
    key: f"sites/ua-mac/raw_data/weather/2017-08-24/{rel.rsplit('/', 1)[1]}"
    for key, rel in KEYS.items()
}
BAD = [b"not a line\n"]


def deleted(
    rel: str, outcome: str = "DELETED", confirmed: bool = True, **more: Any
) -> dict[str, Any]:
    stamp = SHIPPED[rel]
    return {
        "path": rel, "outcome": outcome, "destination_confirmed": confirmed,
        "size": stamp.size, "mtime_ns": stamp.mtime_ns, **more,
    }  # fmt: skip


CLEAN = Found(
    states={key: "DONE" for key in KEYS},
    dest_paths=DEST,
    destination={DEST[key]: SHIPPED[rel].sha256 for key, rel in KEYS.items()},
    cache={"ScriptBackup/x.sh": IGNORED["ScriptBackup/x.sh"]},
    deletions=[deleted(rel) for rel in SHIPPED],
    dead_letters=[b"not a line"],
    catalog=[("weather - 2017-08-24", "a.dat"), ("weather - 2017-08-24", "b.dat")],
)
A, B = sorted(SHIPPED)


def test_a_clean_run_breaks_no_promise() -> None:
    assert check("ua-mac", SHIPPED, IGNORED, BAD, CLEAN) == []


def test_an_already_gone_file_with_a_confirmed_copy_is_safe() -> None:
    found = dataclasses.replace(CLEAN, deletions=[deleted(A, "ALREADY_GONE"), deleted(B)])
    assert check("ua-mac", SHIPPED, IGNORED, BAD, found) == []


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
    ],
)
def test_each_broken_promise_is_named(change: dict[str, Any], violation: str) -> None:
    found = dataclasses.replace(CLEAN, **change)
    violations = check("ua-mac", SHIPPED, IGNORED, BAD, found)
    assert any(violation in v for v in violations), violations
