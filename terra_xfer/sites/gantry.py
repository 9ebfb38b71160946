"""Path rules for the gantry cache: which logged paths are ours, and where each one goes.

A logged path is the one the FTP server saw: absolute for real users (``/gantry_data/LemnaTec/...``),
relative to the chroot for anonymous ones (``/LemnaTec/...``). ``PathRules`` maps it onto a path
relative to the cache root, checks it is safe and whitelisted, reads sensor, date and timestamp
directory from it, and rewrites it to the destination layout of the original pipeline::

    LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916/<uuid>_left.bin
    -> sites/ua-mac/raw_data/stereoTop/2017-08-24/2017-08-24__12-40-01-916/<uuid>_left.bin

Rejections say why: unsafe and unrecognised paths go to the dead-letter topic for a person to look
at; hidden and non-whitelisted paths are expected noise, counted and skipped.

vsftpd logs a space as ``_`` and an unprintable byte as ``?``, so a logged name may differ from the
name on disk; ``matching_names`` and ``matching_paths`` list the real names it can stand for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any, NamedTuple

from terra_xfer.errors import ConfigError

DEFAULT_CACHE_ROOT = "/gantry_data"
DEFAULT_SITE = "ua-mac"
DEFAULT_WHITELIST = (
    "LemnaTec/MovingSensor/",
    "LemnaTec/EnvironmentLogger/",
    "LemnaTec/3DScannerRawDataTmp/",
    "MAC/",
)
# Directory components the original pipeline removed from destination paths (fnmatch patterns).
DEFAULT_REMOVED_COMPONENTS = (
    "LemnaTec",
    "MovingSensor",
    "MAC",
    "3DScannerRawData*Tmp",
    "MovingSensor.reproc*",
)
DEFAULT_DEST_PREFIX = "sites/{site}/raw_data"
# Early EnvironmentLogger data misspells the sensor; the sensor name is corrected, paths are not.
DEFAULT_SENSOR_ALIASES = (("EnviromentLogger", "EnvironmentLogger"),)
MAX_CANDIDATES = 64

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}__\d{2}-\d{2}-\d{2}(?:-\d{1,6})?")
_UNDERSCORE, _SPACE, _QUESTION = ord("_"), ord(" "), ord("?")


_DOT = ord(".")


class RejectKind(StrEnum):
    """Why a path is not shipped; ``dead_letter`` on ``PathRejected`` says what to do with it."""

    UNSAFE = "unsafe"
    UNRECOGNISED = "unrecognised"
    HIDDEN = "hidden"
    NOT_WHITELISTED = "not_whitelisted"


@dataclass(frozen=True, slots=True)
class PathRejected:
    """A path that will not be shipped, with a one-sentence reason."""

    kind: RejectKind
    reason: str

    @property
    def dead_letter(self) -> bool:
        """True if a person must look at it; hidden and non-whitelisted paths are only counted."""
        return self.kind in (RejectKind.UNSAFE, RejectKind.UNRECOGNISED)


class CachePath(NamedTuple):
    """A whitelisted file in the cache: where it is (``rel``), what it is, and where it goes."""

    rel: str
    site: str
    sensor: str
    date: str
    timestamp: str | None
    dest_rel: str


def _components(path: str) -> list[str] | PathRejected:
    """The components of ``path`` without empty and ``.`` parts, or why it is unsafe."""
    if "\0" in path:
        return PathRejected(RejectKind.UNSAFE, "path contains a NUL byte")
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        return PathRejected(RejectKind.UNSAFE, f"path {path!r} contains a '..' component")
    return parts


def _root(name: str, root: str) -> tuple[str, ...]:
    parts = _components(root)
    if not root.startswith("/") or isinstance(parts, PathRejected):
        raise ConfigError(f"{name} {root!r} must be an absolute path without '..'")
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class PathRules:
    """Where the cache is, how logged paths map onto it, what is shipped and where it goes.

    ``log_root`` is the cache root as the FTP server saw it (default: ``cache_root``);
    ``chroot_root`` is the directory chrooted (anonymous) users see as ``/`` (default: ``log_root``).
    """

    cache_root: str = DEFAULT_CACHE_ROOT
    log_root: str | None = None
    chroot_root: str | None = None
    whitelist: tuple[str, ...] = DEFAULT_WHITELIST
    site: str = DEFAULT_SITE
    dest_prefix: str = DEFAULT_DEST_PREFIX
    removed_components: tuple[str, ...] = DEFAULT_REMOVED_COMPONENTS
    sensor_aliases: tuple[tuple[str, str], ...] = DEFAULT_SENSOR_ALIASES
    _log_parts: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _chroot_parts: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _root("cache_root", self.cache_root)
        log_parts = _root("log_root", self.log_root or self.cache_root)
        chroot_parts = _root("chroot_root", self.chroot_root or self.log_root or self.cache_root)
        if chroot_parts[: len(log_parts)] != log_parts:
            raise ConfigError(f"chroot_root {self.chroot_root!r} must lie under the log root")
        if not self.site or "/" in self.site or self.site.startswith("."):
            raise ConfigError(f"site {self.site!r} must be a non-empty name without '/'")
        try:
            prefix = self.dest_prefix.format(site=self.site)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"dest_prefix {self.dest_prefix!r} may only use {{site}}") from exc
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise ConfigError(f"dest_prefix {self.dest_prefix!r} must be relative without '..'")
        for prefix in self.whitelist:
            if prefix.startswith("/") or not prefix.endswith("/") or ".." in prefix.split("/"):
                raise ConfigError(f"whitelist entry {prefix!r} must be relative and end with '/'")
        object.__setattr__(self, "_log_parts", log_parts)
        object.__setattr__(self, "_chroot_parts", chroot_parts)


def rel_from_logged(
    logged: str | bytes, rules: PathRules, chrooted: bool = False
) -> str | PathRejected:
    """The path relative to the cache root of a logged path, or why it cannot be one.

    ``chrooted`` says the path is relative to ``rules.chroot_root`` (anonymous and guest users).
    Bytes are decoded as UTF-8 with surrogate escapes, so ``os.fsencode`` gives them back.
    """
    text = logged.decode("utf-8", "surrogateescape") if isinstance(logged, bytes) else logged
    if not text.startswith("/"):
        return PathRejected(RejectKind.UNSAFE, f"logged path {text!r} is not absolute")
    if text.endswith("/"):
        return PathRejected(RejectKind.UNSAFE, f"logged path {text!r} names a directory")
    parts = _components(text)
    if isinstance(parts, PathRejected):
        return parts
    full = (*rules._chroot_parts, *parts) if chrooted else tuple(parts)
    root = rules._log_parts
    if full[: len(root)] != root or len(full) == len(root):
        return PathRejected(RejectKind.UNSAFE, f"logged path {text!r} is outside the log root")
    return "/".join(full[len(root) :])


def cache_path(rel: str | bytes, rules: PathRules) -> CachePath | PathRejected:
    """Classify a path relative to the cache root: a ``CachePath`` to ship, or why not."""
    text = rel.decode("utf-8", "surrogateescape") if isinstance(rel, bytes) else rel
    if text.startswith("/") or text.endswith("/") or not text:
        return PathRejected(RejectKind.UNSAFE, f"path {text!r} is not a relative file path")
    parts = _components(text)
    if isinstance(parts, PathRejected):
        return parts
    norm = "/".join(parts)
    if norm.startswith(".") or "/." in norm:  # a component starting with "."
        return PathRejected(RejectKind.HIDDEN, f"path {text!r} has a hidden component")
    if not norm.startswith(rules.whitelist):
        return PathRejected(RejectKind.NOT_WHITELISTED, f"path {norm!r} is not whitelisted")
    return _rewrite(norm, parts, rules)


def classify_logged(
    logged: str | bytes, rules: PathRules, chrooted: bool = False
) -> CachePath | PathRejected:
    """Map a logged path onto the cache and classify it; see ``rel_from_logged``."""
    rel = rel_from_logged(logged, rules, chrooted)
    return rel if isinstance(rel, PathRejected) else cache_path(rel, rules)


class PathClassifier:
    """``classify_logged`` with the per-directory work done once per directory.

    Everything but the final name is decided by the directory: whitelist prefixes end with ``/``,
    and sensor, date, timestamp and destination come from the parents. So a directory is classified
    once (through ``classify_logged`` with a plain probe name) and each file in it only needs its
    name checked. Names the shortcut cannot vouch for (empty, hidden, ``.``/``..``, NUL) and
    directories that are rejected take the full path, so results are those of ``classify_logged``.
    """

    _LIMIT = 65_536
    _PROBE = "f"

    def __init__(self, rules: PathRules) -> None:
        self.rules = rules
        self._dirs: dict[tuple[bytes, bool], CachePath | None] = {}

    def __call__(self, logged: bytes, chrooted: bool = False) -> CachePath | PathRejected:
        head, slash, name = logged.rpartition(b"/")
        if not slash or not name or name[0] == _DOT or b"\0" in name:
            return classify_logged(logged, self.rules, chrooted)
        key = (head, chrooted)
        try:
            probe = self._dirs[key]
        except KeyError:
            probe = self._directory(head, chrooted)
        if probe is None:
            return classify_logged(logged, self.rules, chrooted)
        text = name.decode("utf-8", "surrogateescape")
        return CachePath(
            probe.rel[:-1] + text,
            probe.site,
            probe.sensor,
            probe.date,
            probe.timestamp,
            probe.dest_rel[:-1] + text,
        )

    def _directory(self, head: bytes, chrooted: bool) -> CachePath | None:
        probe = classify_logged(head + b"/" + self._PROBE.encode(), self.rules, chrooted)
        found = probe if isinstance(probe, CachePath) else None
        if len(self._dirs) >= self._LIMIT:
            self._dirs.clear()
        self._dirs[(head, chrooted)] = found
        return found


def _rewrite(rel: str, parts: list[str], rules: PathRules) -> CachePath | PathRejected:
    """Read sensor, date and timestamp from a whitelisted path and build its destination."""
    folder = _folder(tuple(parts[:-1]), rules)
    if folder is None:
        return PathRejected(
            RejectKind.UNRECOGNISED,
            f"path {rel!r} does not follow <sensor>/<YYYY-MM-DD>/ after its removed components",
        )
    sensor, day, timestamp, dest_dir = folder
    return CachePath(rel, rules.site, sensor, day, timestamp, f"{dest_dir}/{parts[-1]}")


@lru_cache(maxsize=4096)
def _folder(parents: tuple[str, ...], rules: PathRules) -> tuple[str, str, str | None, str] | None:
    """Sensor, date, timestamp and destination directory of a cache directory (or None).

    Cached: a timestamp directory holds every file of one capture, so the rules run once for it.
    """
    dirs = [d for d in parents if not any(fnmatchcase(d, p) for p in rules.removed_components)]
    if len(dirs) < 2 or not _is_date(dirs[1]):
        return None
    sensor = dict(rules.sensor_aliases).get(dirs[0], dirs[0])
    timestamp = dirs[2] if len(dirs) > 2 and _TIMESTAMP.fullmatch(dirs[2]) else None
    prefix = rules.dest_prefix.format(site=rules.site)
    return sensor, dirs[1], timestamp, "/".join((prefix, *dirs))


def _is_date(text: str) -> bool:
    if _DATE.fullmatch(text) is None:
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _may_stand_for(logged: bytes, name: bytes) -> bool:
    """True if vsftpd would log ``name`` as ``logged`` (a space as ``_``, unprintables as ``?``)."""
    if len(logged) != len(name):
        return False
    return all(
        a in (b, _QUESTION) or (a == _UNDERSCORE and b == _SPACE)
        for a, b in zip(logged, name, strict=True)
    )


def matching_names(logged: bytes, listing: Iterable[bytes]) -> list[bytes]:
    """The names in ``listing`` that ``logged`` may stand for, the exact name first if present."""
    found = [name for name in listing if _may_stand_for(logged, name)]
    return sorted(found, key=lambda name: name != logged)


def matching_paths(
    logged_rel: bytes,
    listdir: Callable[[bytes], Iterable[bytes]],
    limit: int = MAX_CANDIDATES,
) -> list[bytes]:
    """The relative paths that a logged relative path may stand for, at most ``limit`` of them.

    ``listdir(rel_dir)`` lists a directory given relative to the cache root (``b""`` for the root)
    and raises ``OSError`` if it is missing. Components without ``_`` or ``?`` are taken as
    logged, so a result may not exist; the caller checks the file itself before using it.
    """
    prefixes = [b""]
    for part in logged_rel.split(b"/"):
        if not part:
            continue
        nxt: list[bytes] = []
        for prefix in prefixes:
            names = (
                [part] if b"_" not in part and b"?" not in part else _listed(listdir, prefix, part)
            )
            nxt.extend(prefix + b"/" + n if prefix else n for n in names)
        prefixes = nxt[:limit]
    return [p for p in prefixes if p]


def _listed(listdir: Callable[[bytes], Iterable[bytes]], prefix: bytes, part: bytes) -> list[bytes]:
    try:
        return matching_names(part, listdir(prefix))
    except OSError:
        return []


def text_of(value: str | None) -> str | None:
    """``value`` as valid UTF-8 text: bytes that were not UTF-8 (kept as surrogates) become \\xNN."""
    if value is None or value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def file_fields(where: CachePath) -> dict[str, Any]:
    """The fields naming a cache file in its events, as valid UTF-8 text.

    A name that is not UTF-8 is written with ``\\xNN`` escapes in ``path`` (and so in ``key``)
    and kept exactly, as bytes, in ``raw_path``.
    """
    path, raw_path, dest = where.rel, None, where.dest_rel
    if not path.isascii():
        raw = os.fsencode(path)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            path, raw_path = raw.decode("utf-8", "backslashreplace"), raw
            dest = os.fsencode(dest).decode("utf-8", "backslashreplace")
    return {
        "key": f"{where.site}/{path}",
        "site": where.site,
        "path": path,
        "raw_path": raw_path,
        "sensor": text_of(where.sensor),
        "date": text_of(where.date),
        "timestamp": text_of(where.timestamp),
        "dest_path": dest,
    }
