"""What the benchmarks feed the pipeline, and the plain loops that give the filesystem's own limit.

Uploads are a simulated gantry night (:mod:`producers.gantry.night`: the real cache tree and
vsftpd's xferlog lines), whitelisted files only, every file ``size`` bytes (a ``_metadata.json``
is its JSON document padded with spaces to that size, so it stays valid JSON). File content is
written before anything is timed and synced to disk, so no measurement pays for it.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from producers.gantry.night import Upload, log_line, metadata_document, uploads
from terra_xfer.config import Config
from terra_xfer.sites.cache import path_rules
from terra_xfer.sites.gantry import CachePath, cache_path

METADATA = "_metadata.json"


def night(count: int, size: int, *, seed: int = 9, metadata: bool = True) -> list[Upload]:
    """``count`` whitelisted uploads of ``size`` bytes, in time order, ending about an hour ago.

    ``metadata=False`` leaves out the ``_metadata.json`` files (for the large-file run).
    """
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=8)
    chosen: list[Upload] = []
    for up in uploads(start, count * 3 + 10, seed=seed, size=size):
        if up.whitelisted and (metadata or not up.rel.endswith(METADATA)):
            chosen.append(up)
            if len(chosen) == count:
                return chosen
    raise ValueError(f"the simulated night has fewer than {count} such uploads")


def content(up: Upload, filler: bytes) -> bytes:
    """A file's bytes: a metadata document padded to its size, else ``filler`` cut to it."""
    if up.rel.endswith(METADATA):
        doc = metadata_document(up)
        return doc + b" " * max(0, up.size - len(doc) - 1) + b"\n"
    if len(filler) < up.size:
        filler = (filler * (up.size // max(1, len(filler)) + 1))[: up.size]
    return filler[: up.size]


def write_files(root: Path, ups: Sequence[Upload], seed: int = 3) -> None:
    """Write every upload under ``root`` with its mtime, then sync, so later timings start clean."""
    filler = random.Random(seed).randbytes(max((u.size for u in ups), default=0))
    for up in ups:
        path = root / up.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content(up, filler))
        stamp = up.when.timestamp()
        os.utime(path, (stamp, stamp))
    os.sync()


def log_lines(root: Path, ups: Iterable[Upload]) -> list[bytes]:
    """The xferlog line of each upload, with the size of the file as written."""
    return [log_line(up, size=(root / up.rel).stat().st_size) for up in ups]


def place_metadata(config: Config, ups: Sequence[Upload]) -> int:
    """Copy the ``_metadata.json`` files to their destination path; return how many.

    For the run whose transfer backend moves no bytes: ingest still reads each metadata document
    from the destination, as it does after a real transfer.
    """
    rules = path_rules(config)
    placed = 0
    for up in ups:
        if not up.rel.endswith(METADATA):
            continue
        where = cache_path(up.rel, rules)
        assert isinstance(where, CachePath), where
        target = config.transfer.destination_root / where.dest_rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config.gantry.cache_root / up.rel, target)
        placed += 1
    return placed


def plain_copy_loop(root: Path, rels: Sequence[str], dest: Path) -> float:
    """Seconds to copy each file (write, fsync, rename) and delete it: the filesystem's limit."""
    started = time.perf_counter()
    for rel in rels:
        source = root / rel
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        with source.open("rb") as src, tmp.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, target)
        source.unlink()
    return time.perf_counter() - started


def cp_and_sync(root: Path, rels: Sequence[str], dest: Path) -> float:
    """Seconds for ``cp`` of the files into ``dest``, then ``sync`` of the copies (on disk, as the
    pipeline's copies are when it reports them)."""
    dest.mkdir(parents=True, exist_ok=True)
    sources = [str(root / rel) for rel in rels]
    copies = [str(dest / f"{i}_{Path(rel).name}") for i, rel in enumerate(rels)]
    started = time.perf_counter()
    for source, copy in zip(sources, copies, strict=True):
        subprocess.run(["cp", source, copy], check=True)
    subprocess.run(["sync", *copies], check=True)
    return time.perf_counter() - started


def verified_copy(root: Path, rels: Sequence[str], dest: Path) -> float:
    """Seconds for a verified copy by hand: ``cp_and_sync``, then the sha256 of every source and
    copy (OpenSSL's, through hashlib: several times faster here than coreutils' ``sha256sum``),
    compared: the least work that proves each copy before its cache file may go."""
    copied = cp_and_sync(root, rels, dest)
    started = time.perf_counter()
    for i, rel in enumerate(rels):
        source, copy = str(root / rel), str(dest / f"{i}_{Path(rel).name}")
        if _sha256(source) != _sha256(copy):
            raise RuntimeError(f"{copy} differs from {source}")
    return copied + time.perf_counter() - started


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
