"""The topic catalogue's invariants, checked without a broker."""

from __future__ import annotations

from schemas.codec import current_schemas
from terra_xfer.topics import CATALOGUE, FILES_STATE, spec


def test_file_keyed_topics_are_co_partitioned() -> None:
    keyed = [s for s in CATALOGUE if s.file_keyed]
    assert {s.name for s in keyed} >= {"files.arrived", "files.transferred", "files.state"}
    assert {s.partitions(7) for s in keyed} == {7}
    assert all(s.fixed_partitions is None for s in keyed)


def test_compacted_topics_set_their_lag_and_tombstone_retention() -> None:
    compacted = [s for s in CATALOGUE if s.compacted]
    assert {s.name for s in compacted} == {FILES_STATE, "producer.checkpoints"}
    for s in compacted:
        assert s.configs["cleanup.policy"] == "compact"
        assert int(s.configs["min.compaction.lag.ms"]) > 0
        assert int(s.configs["delete.retention.ms"]) >= 3_600_000
    for s in CATALOGUE:
        if not s.compacted:
            assert s.configs["cleanup.policy"] == "delete"


def test_every_value_record_is_in_the_contract() -> None:
    records = set(current_schemas())
    for s in CATALOGUE:
        for value in s.value.split(" | "):
            assert value in records, f"{s.name} carries {value}, which has no schema"
    assert spec("files.state").value == "FileState"
