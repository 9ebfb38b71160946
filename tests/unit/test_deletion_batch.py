"""Deletion a batch at a time: one walk and one fsync per parent directory, the same rules per file.

Every file of a directory is checked and unlinked through one directory fd reached without
following symlinks; the directory is fsynced once after its unlinks, before any decision is
returned; decisions come back in the order of the batch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from consumers import deletion
from consumers.deleter import Confirmation
from consumers.deletion import Request, delete_batch

DATE = "LemnaTec/MovingSensor/stereoTop/2017-08-24"
TS1 = f"{DATE}/2017-08-24__12-40-01-916"
TS2 = f"{DATE}/2017-08-24__12-41-07-004"
KEEP = 3  # the sensor level and above stay


def plant(cache: Path, rel: str, data: bytes = b"payload") -> str:
    path = cache / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return rel


def request(
    cache: Path,
    rel: str,
    version: tuple[int, int] | None = None,
    confirm: AbstractContextManager[Callable[[], bool]] | None = None,
) -> Request:
    if version is None:
        st = os.lstat(cache / rel)
        version = st.st_size, st.st_mtime_ns
    confirmed: Callable[[], bool] = lambda: True  # noqa: E731
    return Request(str(cache), rel, *version, None, None, confirm or nullcontext(confirmed), KEEP)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    root.mkdir()
    return root


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The directory opens, unlinks and fsyncs made, in order."""
    seen: list[str] = []
    real_open, real_unlink, real_fsync = os.open, os.unlink, os.fsync

    def opening(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_DIRECTORY:
            seen.append("opendir")
        return real_open(path, flags, *args, **kwargs)

    def unlinking(path: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(f"unlink {path}")
        real_unlink(path, *args, **kwargs)

    def syncing(fd: int) -> None:
        seen.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "open", opening)
    monkeypatch.setattr(os, "unlink", unlinking)
    monkeypatch.setattr(os, "fsync", syncing)
    return seen


def test_a_directory_of_files_is_walked_once_and_fsynced_once_after_its_unlinks(
    cache: Path, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rels = [plant(cache, f"{TS1}/f{n}.bin") for n in range(5)]
    walks = []
    real_open_dir = deletion.open_dir

    def open_dir(root: str, dirs: tuple[str, ...]) -> int | deletion.Unreachable:
        walks.append(dirs)
        return real_open_dir(root, dirs)

    monkeypatch.setattr(deletion, "open_dir", open_dir)
    decisions = delete_batch([request(cache, rel) for rel in rels])
    assert [d.outcome for d in decisions] == ["DELETED"] * 5
    assert walks == [tuple(TS1.split("/"))]
    # the root and each of the five components, once; then the unlinks; then one fsync
    assert calls == ["opendir"] * 6 + [f"unlink f{n}.bin" for n in range(5)] + ["fsync"]
    assert [d.removed_dirs for d in decisions] == [[]] * 4 + [[TS1, DATE]]
    assert not (cache / DATE).exists() and (cache / DATE).parent.is_dir()


def test_mixed_directories_keep_the_batch_order_and_credit_each_emptied_directory(
    cache: Path, calls: list[str]
) -> None:
    rels = [plant(cache, f"{ts}/{name}") for ts, name in ((TS1, "a"), (TS2, "c"))]
    rels[1:1] = [plant(cache, f"{TS2}/b")]
    rels.append(plant(cache, f"{TS1}/d"))  # TS1/a, TS2/b, TS2/c, TS1/d
    decisions = delete_batch([request(cache, rel) for rel in rels])
    assert [d.outcome for d in decisions] == ["DELETED"] * 4
    assert calls.count("fsync") == 2 and calls.count("opendir") == 2 * 6
    # TS1 goes first (its first file comes first): DATE still holds TS2 then; TS2 takes DATE
    assert [d.removed_dirs for d in decisions] == [[], [], [TS2, DATE], [TS1]]


def test_a_file_refused_in_the_middle_of_a_group_leaves_the_others_alone(
    cache: Path, calls: list[str]
) -> None:
    rels = [plant(cache, f"{TS1}/f{n}.bin") for n in range(3)]
    changed = request(cache, rels[1], version=(7, 1))
    decisions = delete_batch([request(cache, rels[0]), changed, request(cache, rels[2])])
    assert [d.outcome for d in decisions] == ["DELETED", "REFUSED", "DELETED"]
    assert decisions[1].reason == f"{rels[1]!r} changed after its transfer (size/mtime differ)"
    assert (cache / rels[1]).exists() and not (cache / rels[0]).exists()
    assert calls.count("fsync") == 1 and all(d.removed_dirs == [] for d in decisions)


def test_a_symlink_swapped_in_before_the_batch_is_refused_for_every_file_under_it(
    cache: Path, tmp_path: Path
) -> None:
    rels = [plant(cache, f"{TS1}/f{n}.bin") for n in range(3)]
    other = plant(cache, f"{TS2}/g.bin")
    requests = [request(cache, rel) for rel in [rels[0], other, *rels[1:]]]
    outside = tmp_path / "outside"
    (cache / TS1).rename(outside)
    (cache / TS1).symlink_to(outside)
    decisions = delete_batch(requests)
    assert [d.outcome for d in decisions] == ["REFUSED", "DELETED", "REFUSED", "REFUSED"]
    for decision, rel in zip([decisions[0], *decisions[2:]], rels, strict=True):
        assert (
            decision.reason
            == f"{TS1.rsplit('/', 1)[1]!r} in {rel!r} is a symlink or not a directory"
        )
    assert sorted(p.name for p in outside.iterdir()) == ["f0.bin", "f1.bin", "f2.bin"]


def test_a_symlink_swapped_in_during_the_group_cannot_redirect_it(
    cache: Path, tmp_path: Path
) -> None:
    rels = [plant(cache, f"{TS1}/f{n}.bin") for n in range(3)]
    outside = tmp_path / "outside"
    outside.mkdir()
    for rel in rels:
        plant(outside, Path(rel).name)
    pinned = cache / f"{TS1}.pinned"

    def swap() -> bool:
        (cache / TS1).rename(pinned)
        (cache / TS1).symlink_to(outside)
        return True

    first = request(cache, rels[0], confirm=nullcontext(swap))
    decisions = delete_batch([first, *(request(cache, rel) for rel in rels[1:])])
    assert [d.outcome for d in decisions] == ["DELETED"] * 3
    assert list(pinned.iterdir()) == []  # the files went from the directory first reached
    assert sorted(p.name for p in outside.iterdir()) == ["f0.bin", "f1.bin", "f2.bin"]
    assert all(d.removed_dirs == [] for d in decisions)  # a symlink is never removed as a dir


def test_bad_paths_missing_parents_and_repeats_are_decided_per_file_in_order(
    cache: Path,
) -> None:
    good = plant(cache, f"{TS1}/f.bin")
    version = os.lstat(cache / good).st_size, os.lstat(cache / good).st_mtime_ns
    requests = [
        request(cache, "../outside.bin", version=version),
        request(cache, good),
        request(cache, f"{TS2}/gone.bin", version=version),
        request(cache, good),
    ]
    decisions = delete_batch(requests)
    assert [d.outcome for d in decisions] == ["REFUSED", "DELETED", "ALREADY_GONE", "ALREADY_GONE"]
    assert decisions[0].reason == (
        "path '../outside.bin' is not a plain relative path under the cache root"
    )
    assert decisions[1].removed_dirs == [TS1, DATE]


def test_a_dry_run_batch_unlinks_and_fsyncs_nothing(cache: Path, calls: list[str]) -> None:
    rels = [plant(cache, f"{TS1}/f{n}.bin") for n in range(2)]
    decisions = delete_batch([request(cache, rel) for rel in rels], dry_run=True)
    assert [d.outcome for d in decisions] == ["DRY_RUN"] * 2
    assert [c for c in calls if c != "opendir"] == []
    assert all((cache / rel).exists() for rel in rels)


def test_no_decision_is_returned_when_the_directory_fsync_fails(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rels = [plant(cache, f"{TS1}/f{n}.bin") for n in range(2)]

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError):
        delete_batch([request(cache, rel) for rel in rels])


def test_each_destination_check_ends_before_the_next_file_starts(cache: Path) -> None:
    rels = [plant(cache, f"{TS1}/f{n}.bin") for n in range(3)]
    seen: list[str] = []

    @contextmanager
    def check(name: str) -> Iterator[Callable[[], bool]]:
        seen.append(f"enter {name}")
        yield lambda: True
        seen.append(f"exit {name}")

    requests = [request(cache, rel, confirm=check(Path(rel).name)) for rel in rels]
    assert [d.outcome for d in delete_batch(requests)] == ["DELETED"] * 3
    assert seen == [f"{step} f{n}.bin" for n in range(3) for step in ("enter", "exit")]


def test_a_large_file_check_runs_on_the_confirmer_once_and_is_waited_for() -> None:
    threads: list[str] = []

    def check() -> bool:
        threads.append(threading.current_thread().name)
        return True

    with ThreadPoolExecutor(1, thread_name_prefix="confirm") as confirmer:
        confirmation = Confirmation(check, confirmer)
        with confirmation as confirmed:
            pass
        assert confirmation._pending is not None and confirmation._pending.done()
        assert confirmed() and confirmed()
    assert len(threads) == 1 and threads[0].startswith("confirm")


def test_a_check_never_entered_runs_once_on_the_callers_thread() -> None:
    answers = iter([False, True])
    confirmation = Confirmation(lambda: next(answers), None)
    assert confirmation() is False and confirmation() is False
