"""Which site a file belongs to, and where that site keeps it: the gantry cache or Danforth's.

A file key is ``<site>/<path relative to the site's cache root>``. The Danforth site (``[danforth]
site``) keeps its snapshots under ``[danforth] cache_root``; every other site is the gantry's,
under ``[gantry] cache_root`` with the gantry's path rules. The stages that touch cache files
(transfer source, deletion) and the metrics ask here instead of assuming the gantry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from terra_xfer.config import Config
from terra_xfer.sites.danforth import SENSOR as DANFORTH_SENSOR
from terra_xfer.sites.danforth import danforth_path
from terra_xfer.sites.gantry import CachePath, PathRejected, PathRules, cache_path


def path_rules(config: Config) -> PathRules:
    g = config.gantry
    return PathRules(
        cache_root=str(g.cache_root), log_root=g.log_root, whitelist=g.whitelist, site=g.site
    )


def site_of(key: str) -> str:
    """The site of a file key (its first component)."""
    return key.split("/", 1)[0]


@dataclass(frozen=True)
class SiteFile:
    """A shipped file in its site's cache: the root, the path under it, how many leading
    directories deletion must keep, and the sensor for metrics."""

    root: Path
    rel: str
    keep_depth: int
    sensor: str


class Sites:
    """The cache roots and path rules of the gantry and Danforth sites."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.gantry_rules = path_rules(config)

    def is_danforth(self, key: str) -> bool:
        return site_of(key) == self.config.danforth.site

    def cache_root(self, key: str) -> Path:
        """The cache root the file of ``key`` lives under."""
        if self.is_danforth(key):
            return self.config.danforth.cache_root
        return self.config.gantry.cache_root

    def site_file(self, key: str, path: str) -> SiteFile | PathRejected:
        """The cache file of an event, or why its path is not one this site ships."""
        if self.is_danforth(key):
            found = danforth_path(path, site_of(key))
            if isinstance(found, PathRejected):
                return found
            return SiteFile(self.config.danforth.cache_root, found.rel, 0, DANFORTH_SENSOR)
        where = cache_path(path, self.gantry_rules)
        if not isinstance(where, CachePath):
            return where
        parts = where.rel.split("/")
        keep = parts.index(where.date) if where.date in parts else len(parts) - 1
        return SiteFile(self.config.gantry.cache_root, where.rel, keep, where.sensor)

    def sensor(self, key: str, path: str) -> str | None:
        """The sensor of a file for metrics (None: unknown)."""
        found = self.site_file(key, path)
        return found.sensor if isinstance(found, SiteFile) else None
