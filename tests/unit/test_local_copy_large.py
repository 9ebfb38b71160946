"""The local copier's large-file path (kernel copy, source and copy hashed on two threads) and the
destination check against a recorded checksum: every copy is still proved against its source."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from consumers.transfer import local_copy, local_digest
from consumers.transfer.base import TransferItem
from consumers.transfer.local_confirm import confirm
from consumers.transfer.local_copy import CopyResult, FileCopier

# parallel_bytes=1 sends every non-empty file down the large-file path, so small test data does.
LARGE = 1


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_item(cache: Path, rel: str, data: bytes) -> TransferItem:
    path = cache / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    st = path.stat()
    return TransferItem(f"ua-mac/{rel}", str(path), f"raw/{rel}", st.st_size, st.st_mtime_ns)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "dest"


def published(dest: Path) -> list[Path]:
    return sorted(p for p in dest.rglob("*") if p.is_file())


def copied(copier: FileCopier, item: TransferItem) -> CopyResult:
    result = copier.copy(item)
    assert result is not None
    return result


@pytest.mark.parametrize("parallel_bytes", [1, 1 << 40], ids=["large path", "small path"])
def test_both_paths_copy_and_report_the_source_checksum(
    cache: Path, dest: Path, parallel_bytes: int
) -> None:
    data = os.urandom((3 << 20) + 17)
    item = make_item(cache, "a/big.bin", data)
    result = copied(FileCopier(dest, "t", parallel_bytes=parallel_bytes), item)
    assert result.outcome.ok and not result.outcome.skipped_identical
    assert (result.outcome.checksum, result.outcome.checksum_algorithm) == (sha256(data), "sha256")
    assert (dest / "raw/a/big.bin").read_bytes() == data
    assert published(dest) == [dest / "raw/a/big.bin"]


def test_a_source_appended_to_after_the_copy_is_not_published(
    cache: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = make_item(cache, "growing.log", b"first line\n" * 1000)
    real_copy = local_digest.copy_contents

    def copy_then_append(src: int, dst: int, stop: threading.Event | None = None) -> int:
        n = real_copy(src, dst, stop)
        with open(item.source, "ab") as growing:
            growing.write(b"second line\n")
        return n

    monkeypatch.setattr(local_copy, "copy_contents", copy_then_append)
    result = copied(FileCopier(dest, "t", parallel_bytes=LARGE), item)
    assert not result.outcome.ok and "changed during the copy" in (result.outcome.reason or "")
    assert published(dest) == []


def test_a_source_rewritten_in_place_with_its_mtime_restored_is_not_published(
    cache: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = make_item(cache, "rewritten.bin", b"A" * 4096)
    real_copy = local_digest.copy_contents

    def copy_then_rewrite(src: int, dst: int, stop: threading.Event | None = None) -> int:
        n = real_copy(src, dst, stop)
        Path(item.source).write_bytes(b"B" * 4096)
        os.utime(item.source, ns=(item.mtime_ns, item.mtime_ns))
        return n

    monkeypatch.setattr(local_copy, "copy_contents", copy_then_rewrite)
    result = copied(FileCopier(dest, "t", parallel_bytes=LARGE), item)
    assert not result.outcome.ok and "verification failed" in (result.outcome.reason or "")
    assert published(dest) == []


def test_a_copy_that_differs_from_the_source_is_not_published(
    cache: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = make_item(cache, "flaky.bin", b"0123456789" * 1000)
    real_copy = local_digest.copy_contents

    def corrupting_copy(src: int, dst: int, stop: threading.Event | None = None) -> int:
        n = real_copy(src, dst, stop)
        os.pwrite(dst, b"X", 5)
        return n

    monkeypatch.setattr(local_copy, "copy_contents", corrupting_copy)
    result = copied(FileCopier(dest, "t", parallel_bytes=LARGE), item)
    assert not result.outcome.ok and "verification failed" in (result.outcome.reason or "")
    assert published(dest) == []


def test_without_a_kernel_copy_the_file_is_copied_through_user_space(
    cache: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def cross_device(*args: object) -> int:
        calls.append(1)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", cross_device, raising=False)
    data = os.urandom((2 << 20) + 5)
    item = make_item(cache, "elsewhere.bin", data)
    result = copied(FileCopier(dest, "t", parallel_bytes=LARGE), item)
    assert result.outcome.ok and result.outcome.checksum == sha256(data)
    assert (dest / "raw/elsewhere.bin").read_bytes() == data
    assert calls == [1]


def test_a_copy_that_fails_otherwise_is_a_per_file_failure(
    cache: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", no_space, raising=False)
    item = make_item(cache, "full.bin", b"x" * 100)
    result = copied(FileCopier(dest, "t", parallel_bytes=LARGE), item)
    assert not result.outcome.ok and "No space left" in (result.outcome.reason or "")
    assert published(dest) == []


def test_a_stopped_large_copy_leaves_nothing(cache: Path, dest: Path) -> None:
    item = make_item(cache, "big.bin", os.urandom(1 << 20))
    stop = threading.Event()
    stop.set()
    assert FileCopier(dest, "t", stop, parallel_bytes=LARGE).copy(item) is None
    assert published(dest) == []


def test_a_large_identical_destination_is_skipped(cache: Path, dest: Path) -> None:
    data = os.urandom(1 << 20)
    item = make_item(cache, "same.bin", data)
    existing = dest / "raw/same.bin"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(data)
    inode = existing.stat().st_ino
    result = copied(FileCopier(dest, "t", parallel_bytes=LARGE), item)
    assert result.outcome.ok and result.outcome.skipped_identical
    assert result.outcome.checksum == sha256(data)
    assert existing.stat().st_ino == inode


def test_a_large_destination_of_the_same_size_but_other_content_is_replaced(
    cache: Path, dest: Path
) -> None:
    item = make_item(cache, "f.bin", b"new!" * 1000)
    stale = dest / "raw/f.bin"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old!" * 1000)
    result = copied(FileCopier(dest, "t", parallel_bytes=LARGE), item)
    assert result.outcome.ok and not result.outcome.skipped_identical
    assert stale.read_bytes() == b"new!" * 1000


def test_confirm_with_the_recorded_checksum_does_not_need_the_source(
    cache: Path, dest: Path
) -> None:
    item = make_item(cache, "c.bin", b"content")
    assert copied(FileCopier(dest, "t"), item).outcome.ok
    Path(item.source).unlink()
    confirmed = confirm(dest, item, sha256(b"content"), "sha256")
    assert confirmed.ok and confirmed.checksum == sha256(b"content")
    assert not confirm(dest, item).ok  # without a checksum the source is needed


@pytest.mark.parametrize("parallel_bytes", [1, 1 << 40], ids=["large path", "small path"])
def test_confirm_refuses_a_destination_that_differs_from_the_recorded_checksum(
    cache: Path, dest: Path, parallel_bytes: int
) -> None:
    item = make_item(cache, "c.bin", b"content")
    assert copied(FileCopier(dest, "t"), item).outcome.ok
    refused = confirm(dest, item, sha256(b"CONTENT"), "sha256", parallel_bytes)
    assert not refused.ok and "differs from the checksum" in (refused.reason or "")
    (dest / item.destination).write_bytes(b"CONTENT")
    assert not confirm(dest, item, sha256(b"content"), "sha256", parallel_bytes).ok
    assert not confirm(dest, item, None, None, parallel_bytes).ok  # nor does it match the source


def test_confirm_with_a_checksum_it_cannot_compute_compares_with_the_source(
    cache: Path, dest: Path
) -> None:
    item = make_item(cache, "c.bin", b"content")
    assert copied(FileCopier(dest, "t"), item).outcome.ok
    md5 = hashlib.md5(b"content").hexdigest()
    confirmed = confirm(dest, item, md5, "md5", parallel_bytes=1)
    assert confirmed.ok and "source" in (confirmed.reason or "")
    Path(item.source).write_bytes(b"changed")
    assert not confirm(dest, item, md5, "md5", parallel_bytes=1).ok


def test_confirm_checks_the_size_first(cache: Path, dest: Path) -> None:
    item = make_item(cache, "c.bin", b"content")
    assert copied(FileCopier(dest, "t"), item).outcome.ok
    (dest / item.destination).write_bytes(b"content+")
    refused = confirm(dest, item, sha256(b"content"), "sha256")
    assert not refused.ok and "size 8 != 7" in (refused.reason or "")
