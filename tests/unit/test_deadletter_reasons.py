"""Dead-letter reasons as report and demo count them: like failures together, still readable."""

from __future__ import annotations

import pytest

from terra_xfer.deadletters import reason_pattern


@pytest.mark.parametrize(
    ("reason", "counted_as"),
    [
        ("date 'Apr 31 2016' does not exist", "date '…' does not exist"),
        ("date 'Feb 30 2017' does not exist", "date '…' does not exist"),
        ('sensor "foo bar" is not whitelisted', "sensor '…' is not whitelisted"),
        ("time '12:61:00' is not a time: hour out of range", "time '…' is not a time"),
        (
            "file 'ua-mac/LemnaTec/x.bin' is missing from the cache",
            "file '…' is missing from the cache",
        ),
        ("cannot read /data/cache/a.bin: permission denied", "cannot read …"),
        (
            "line has 3 words; an xferlog line has at least 18",
            "line has 3 words; an xferlog line has at least 18",
        ),
        (
            "byte count is not a non-negative whole number: 'x1'",
            "byte count is not a non-negative whole number",
        ),
    ],
)
def test_a_reason_loses_its_particulars_and_keeps_its_words(reason: str, counted_as: str) -> None:
    assert reason_pattern(reason) == counted_as
