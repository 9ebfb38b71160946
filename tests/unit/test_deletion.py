"""Safe deletion: every unsafe case is refused with its reason; nothing outside the rules goes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from consumers.deletion import Decision, delete

REL = "LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916/f_left.bin"


def file_version(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    (root / REL).parent.mkdir(parents=True)
    (root / REL).write_bytes(b"payload")
    return root


def run(
    cache: Path,
    rel: str = REL,
    confirmed: bool = True,
    version: tuple[int, int] | None = None,
    checksum: str | None = None,
    algorithm: str | None = None,
    dry_run: bool = False,
) -> Decision:
    size, mtime = version or file_version(cache / REL)
    return delete(str(cache), rel, size, mtime, checksum, algorithm, lambda: confirmed, 3, dry_run)


def test_a_verified_file_is_removed_with_its_emptied_directories(cache: Path) -> None:
    digest = hashlib.sha256(b"payload").hexdigest()
    decision = run(cache, checksum=digest, algorithm="sha256")
    assert decision.outcome == "DELETED" and decision.destination_confirmed
    assert decision.checksum == digest
    assert not (cache / REL).exists()
    assert decision.removed_dirs == [
        "LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916",
        "LemnaTec/MovingSensor/stereoTop/2017-08-24",
    ]
    assert (cache / "LemnaTec/MovingSensor/stereoTop").is_dir()  # the sensor level stays


def test_a_sibling_keeps_its_directory(cache: Path) -> None:
    (cache / REL).with_name("other.bin").write_bytes(b"x")
    decision = run(cache)
    assert decision.outcome == "DELETED" and decision.removed_dirs == []


def test_missing_file_counts_as_already_gone(cache: Path) -> None:
    v = file_version(cache / REL)
    (cache / REL).unlink()
    assert run(cache, version=v).outcome == "ALREADY_GONE"


def test_dry_run_removes_nothing(cache: Path) -> None:
    decision = run(cache, dry_run=True)
    assert decision.outcome == "DRY_RUN" and (cache / REL).exists()


@pytest.mark.parametrize("rel", ["../outside.bin", "/etc/passwd", "a/./b", "", "a//b"])
def test_paths_that_are_not_plain_relative_paths_are_refused(cache: Path, rel: str) -> None:
    decision = run(cache, rel=rel)
    assert decision.outcome == "REFUSED" and "plain relative path" in decision.reason


def test_a_symlinked_directory_pointing_outside_is_refused(cache: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside" / "2017-08-24__12-40-01-916"
    outside.mkdir(parents=True)
    (outside / "f_left.bin").write_bytes(b"payload")
    ts_dir = (cache / REL).parent
    for child in ts_dir.iterdir():
        child.unlink()
    ts_dir.rmdir()
    ts_dir.symlink_to(outside)
    decision = run(cache, version=file_version(outside / "f_left.bin"))
    assert decision.outcome == "REFUSED" and "symlink" in decision.reason
    assert (outside / "f_left.bin").exists()


def test_a_symlinked_file_is_refused(cache: Path, tmp_path: Path) -> None:
    target = tmp_path / "target.bin"
    target.write_bytes(b"payload")
    (cache / REL).unlink()
    (cache / REL).symlink_to(target)
    decision = run(cache, version=file_version(target))
    assert decision.outcome == "REFUSED" and "not a regular file" in decision.reason
    assert target.exists() and (cache / REL).is_symlink()


def test_a_file_modified_after_transfer_is_refused(cache: Path) -> None:
    v = file_version(cache / REL)
    (cache / REL).write_bytes(b"new content, new version")
    decision = run(cache, version=v)
    assert decision.outcome == "REFUSED" and "changed after its transfer" in decision.reason
    assert (cache / REL).exists()


def test_same_size_and_mtime_but_other_content_is_refused_by_checksum(cache: Path) -> None:
    v = file_version(cache / REL)
    (cache / REL).write_bytes(b"PAYLOAD")
    os.utime(cache / REL, ns=(v[1], v[1]))
    decision = run(
        cache, version=v, checksum=hashlib.sha256(b"payload").hexdigest(), algorithm="sha256"
    )
    assert decision.outcome == "REFUSED" and "checksum" in decision.reason


def test_a_file_replaced_by_a_directory_is_refused(cache: Path) -> None:
    v = file_version(cache / REL)
    (cache / REL).unlink()
    (cache / REL).mkdir()
    decision = run(cache, version=v)
    assert decision.outcome == "REFUSED" and "not a regular file" in decision.reason


def test_an_unconfirmed_destination_copy_is_refused(cache: Path) -> None:
    decision = run(cache, confirmed=False)
    assert decision.outcome == "REFUSED" and "destination copy" in decision.reason
    assert (cache / REL).exists()
