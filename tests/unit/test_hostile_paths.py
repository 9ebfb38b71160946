"""Hostile paths and symlinks planted in the cache: nothing outside the cache is shipped or removed.

The path rules must turn any logged bytes into a safe relative path or a reason. Symlinks planted
in the cache, at any depth, pointing outside, inside, or at themselves, must not be followed: the
deleter refuses, the sweeper's walk does not enter them, and the producer must not ship what they
point at (see the pinned defect at the end). Names with newlines, control characters, spaces and
invalid UTF-8 are deleted exactly, and only they.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.deletion import delete
from producers.gantry.lines import Arrival, LineHandler, Rejected
from producers.gantry.tailer import LogIdentity, TailedLine
from producers.sweeper import walk
from terra_xfer.sites.gantry import CachePath, PathRejected, PathRules, classify_logged

HOSTILE = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
RULES = PathRules(cache_root="/gantry_data")
DIRS = ("LemnaTec", "MovingSensor", "stereoTop", "2017-08-24", "2017-08-24__12-40-01-916")
REL = "/".join((*DIRS, "f_left.bin"))
IDENT = LogIdentity("xferlog", 1, 2, "0" * 64, 64)
SEGMENTS = st.one_of(
    st.sampled_from([b"..", b".", b"", b"gantry_data", b"LemnaTec", b"MAC", b"\0", b" ", b"~"]),
    st.binary(max_size=20).map(lambda b: b.replace(b"/", b"")),
)


@HOSTILE
@given(st.lists(SEGMENTS, max_size=8), st.booleans(), st.booleans())
def test_any_logged_path_is_a_safe_cache_path_or_a_reason(
    segments: list[bytes], absolute: bool, chrooted: bool
) -> None:
    logged = (b"/" if absolute else b"") + b"/".join(segments)
    where = classify_logged(logged, RULES, chrooted)
    if isinstance(where, PathRejected):
        assert where.reason
        return
    parts = where.rel.split("/")
    assert not where.rel.startswith("/") and "\0" not in where.rel
    assert not any(p in ("", ".", "..") or p.startswith(".") for p in parts)
    assert where.rel.startswith(RULES.whitelist)
    resolved = os.path.normpath(os.path.join("/gantry_data", where.rel))
    assert resolved.startswith("/gantry_data/")
    assert where.dest_rel.startswith("sites/ua-mac/raw_data/")
    assert ".." not in where.dest_rel.split("/")


# --- the deleter ------------------------------------------------------------------------------


def planted_tree(root: Path) -> Path:
    """The cache with one file at REL; returns the file."""
    path = root / REL
    path.parent.mkdir(parents=True)
    path.write_bytes(b"payload")
    return path


def run_delete(root: Path, rel: str, size: int = 7, mtime_ns: int = 0) -> str:
    decision = delete(str(root), rel, size, mtime_ns, None, None, lambda: True, 3)
    return decision.outcome


def version(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_size, st.st_mtime_ns


@pytest.mark.parametrize("depth", range(len(DIRS) + 1))
@pytest.mark.parametrize("target", ["outside", "inside", "loop"])
def test_a_symlink_at_any_depth_is_refused_and_left_alone(
    tmp_path: Path, depth: int, target: str
) -> None:
    """A directory (or, at the last depth, the file) replaced by a symlink: nothing is removed."""
    cache = tmp_path / "cache"
    real = planted_tree(cache)
    outside = tmp_path / "outside"
    victim = outside / "/".join(REL.split("/")[depth + 1 :]) if depth < len(DIRS) else outside
    victim.parent.mkdir(parents=True, exist_ok=True)
    if depth < len(DIRS):
        victim.write_bytes(b"payload")
    else:
        victim = tmp_path / "victim.bin"
        victim.write_bytes(b"payload")
    link = cache / "/".join(REL.split("/")[: depth + 1])
    aimed = {
        "outside": victim if depth == len(DIRS) else outside,
        "inside": real.parent,
        "loop": link,
    }
    size, mtime = version(victim)
    moved = tmp_path / "moved-aside"
    os.rename(link, moved)  # the real entry is moved aside and a symlink planted in its place
    link.symlink_to(aimed[target])
    assert run_delete(cache, REL, size, mtime) == "REFUSED"
    assert link.is_symlink() and victim.read_bytes() == b"payload"
    assert moved.exists()


NAMES = st.one_of(
    st.sampled_from(["a\nb.bin", "\n", "tab\there", "esc\x1b[31m", "bell\x07", "sp ace", " lead"]),
    st.sampled_from(["trail ", "q'uote\"", "back\\slash", "x" * 255, "caf\udce9.bin", "?_?"]),
    st.text(st.characters(blacklist_characters="/\0", blacklist_categories=["Cs"]), max_size=40),
).filter(lambda n: n not in ("", ".", "..") and len(os.fsencode(n)) <= 255)


@HOSTILE
@given(NAMES)
def test_a_hostile_name_is_deleted_exactly_and_nothing_else(tmp_path: Path, name: str) -> None:
    cache = tmp_path / f"cache-{os.urandom(4).hex()}"
    folder = cache.joinpath(*DIRS)
    folder.mkdir(parents=True)
    target = folder / name
    target.write_bytes(b"payload")
    neighbour = folder / ("n" + name[:200] + ".other")
    neighbour.write_bytes(b"keep")
    size, mtime = version(target)
    assert run_delete(cache, "/".join((*DIRS, name)), size, mtime) == "DELETED"
    assert not os.path.lexists(target)
    assert neighbour.read_bytes() == b"keep"


def test_an_overlong_name_is_refused_not_raised(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    planted_tree(cache)
    assert run_delete(cache, "/".join((*DIRS, "n" * 256))) in ("REFUSED", "ALREADY_GONE")


# --- the sweeper's walk and the producer -------------------------------------------------------


def test_the_sweeper_walk_enters_no_symlink_and_survives_loops(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    real = planted_tree(cache)
    outside = tmp_path / "outside" / "2017-08-25"
    outside.mkdir(parents=True)
    (outside / "secret.bin").write_bytes(b"not ours")
    sensor = cache.joinpath(*DIRS[:3])
    (sensor / "2017-08-25").symlink_to(outside)
    (sensor / "loop").symlink_to(sensor)
    (real.parent / "link_left.bin").symlink_to(tmp_path / "outside" / "2017-08-25" / "secret.bin")
    (real.parent / "dangling.bin").symlink_to(tmp_path / "gone")
    found = {rel for rel, _st in walk(str(cache), ("LemnaTec/MovingSensor/", "MAC/"))}
    assert found == {REL}


def producer(cache: Path) -> LineHandler:
    return LineHandler(
        PathRules(cache_root=str(cache), log_root="/gantry_data"), "xferlog", "America/Phoenix"
    )


def logged(handler: LineHandler, rel: str) -> Arrival | Rejected | None:
    data = (
        b"Tue Apr  5 12:35:58 2016 1 10.0.0.1 7 /gantry_data/"
        + rel.encode()
        + b" b _ i r u ftp 0 * c"
    )
    return handler.handle(TailedLine(data, IDENT, 0, len(data) + 1))


@pytest.mark.parametrize("aim", ["outside", "inside"])
def test_the_producer_does_not_ship_a_symlinked_file(tmp_path: Path, aim: str) -> None:
    cache = tmp_path / "cache"
    real = planted_tree(cache)
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"not ours")
    link = real.with_name("link_left.bin")
    link.symlink_to(outside if aim == "outside" else real)
    result = logged(producer(cache), str(link.relative_to(cache)))
    assert isinstance(result, Rejected) and "not a regular file" in result.reason


def test_the_producer_does_not_ship_through_a_symlinked_directory(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    planted_tree(cache)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "passwd_left.bin").write_bytes(b"not ours")
    date_dir = cache.joinpath(*DIRS[:3], "2017-08-25")
    date_dir.symlink_to(outside)
    result = logged(producer(cache), "/".join((*DIRS[:3], "2017-08-25", "passwd_left.bin")))
    assert not isinstance(result, Arrival), result
    assert isinstance(result, Rejected)


def test_a_symlink_loop_in_the_cache_is_a_dead_letter(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    planted_tree(cache)
    loop = cache.joinpath(*DIRS[:3], "2017-08-26")
    loop.symlink_to(loop)
    result = logged(producer(cache), "/".join((*DIRS[:3], "2017-08-26", "x_left.bin")))
    assert isinstance(result, Rejected)


def test_safe_relative_paths_classify_the_same_in_the_producer_and_the_deleter() -> None:
    where = classify_logged(b"/gantry_data/" + REL.encode(), RULES)
    assert isinstance(where, CachePath) and where.rel == REL


def test_the_local_copier_copies_a_name_of_the_longest_length(tmp_path: Path) -> None:
    from consumers.transfer.base import TransferItem
    from consumers.transfer.local_copy import FileCopier

    source = tmp_path / "cache" / ("z" * 255)
    source.parent.mkdir()
    source.write_bytes(b"payload")
    size, mtime = version(source)
    copier = FileCopier(tmp_path / "dest", "task-12345678")
    result = copier.copy(TransferItem("k", str(source), "a/" + "z" * 255, size, mtime))
    assert result is not None and result.outcome.ok, result
