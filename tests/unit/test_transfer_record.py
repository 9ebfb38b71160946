"""The record transfer backend: tasks succeed at once, every file is reported, no byte is touched."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from consumers.backends import make_transfer
from consumers.transfer.base import (
    TaskStatus,
    TransferBackend,
    TransferItem,
    TransferPermanentError,
)
from consumers.transfer.record import RecordTransfer
from terra_xfer.config import Config, TransferConfig, load


def items(root: Path, count: int) -> list[TransferItem]:
    """Items whose sources do not exist: the backend must not need them."""
    return [
        TransferItem(f"ua-mac/f{i}", str(root / f"missing{i}"), f"raw/f{i}", 4096, 1_000 + i)
        for i in range(count)
    ]


def test_it_is_a_transfer_backend() -> None:
    backend: TransferBackend = RecordTransfer()
    assert backend.name == "record"


def test_a_submitted_batch_is_a_succeeded_task_with_every_file(tmp_path: Path) -> None:
    backend = RecordTransfer()
    batch = items(tmp_path, 3)
    task_id = backend.submit("b1", backend.new_submission_id("b1"), batch, "label")
    state = backend.task(task_id)
    assert state.status is TaskStatus.SUCCEEDED and state.is_final
    assert (state.files, state.files_transferred, state.faults) == (3, 3, 0)
    outcomes = backend.outcomes(task_id, batch)
    assert [o.key for o in outcomes] == [i.key for i in batch]
    assert all(o.ok and o.checksum is None and not o.skipped_identical for o in outcomes)
    assert not list(tmp_path.iterdir()), "nothing may be written anywhere"


def test_a_repeated_submission_names_the_same_task_and_records_it_once(tmp_path: Path) -> None:
    backend = RecordTransfer()
    submission = backend.new_submission_id("b1")
    assert submission == RecordTransfer().new_submission_id("b1")
    assert submission != backend.new_submission_id("b2")
    first = backend.submit("b1", submission, items(tmp_path, 2), "label")
    again = backend.submit("b1", submission, items(tmp_path, 2), "label")
    assert first == again
    assert backend.files_recorded == 2


def test_a_task_another_instance_submitted_still_answers_succeeded(tmp_path: Path) -> None:
    task_id = RecordTransfer().submit("b1", "s1", items(tmp_path, 1), "label")
    assert RecordTransfer().task(task_id).status is TaskStatus.SUCCEEDED


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(TransferPermanentError):
        RecordTransfer().submit("b1", "s1", [], "label")


def test_confirm_reports_present_without_looking(tmp_path: Path) -> None:
    outcome = RecordTransfer().confirm(items(tmp_path, 1)[0])
    assert outcome.ok and outcome.reason is not None and "record" in outcome.reason


def test_the_config_selects_it(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[transfer]\nbackend = "record"\n[deleter]\ndry_run = true\n')
    assert load(path, env={}).transfer.backend == "record"
    config = dataclasses.replace(Config(), transfer=TransferConfig(backend="record"))
    assert isinstance(make_transfer(config), RecordTransfer)
