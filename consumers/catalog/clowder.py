"""The Clowder catalog: files registered in Clowder's v1 API under the TERRA-REF hierarchy.

Every step is check-then-act, so an ingest can be repeated whole and converge: collections and
datasets are found by exact title before they are created; a file already in its dataset (by name)
is not added again; a metadata document already on the dataset is not posted again. A transient
failure anywhere is raised at once (the ingest stage tries the item again later); the checks find
what the lost answers made.

What one call found or made is remembered (bounded, newest kept) and used by every later call,
retries of the same item included: a collection or dataset is looked up once, and put under its
parent and into the space once. Linking is idempotent (linking what is already linked succeeds),
so a link whose answer was lost is simply made again; a link refused outright (403 for a dataset
another user owns) is logged and not tried again, the object being usable where it is. Only when
the catalog refuses an item while remembered ids were used is it resolved afresh, once: a
remembered id may name something deleted since; and, since Clowder answers a request about a
deleted dataset with a 500 as often as with a refusal, also when an item failed transiently
``FRESH_AFTER`` times in a row while using remembered ids.

Racing workers may both create the same title. After creating, a worker searches again; when
several exist it keeps the one with the lowest id (Clowder ids are MongoDB ObjectIds, which grow in
creation order) and deletes its own loser, so every worker lands on the first one made.

Files on a filesystem Clowder mounts are added by path (``mounted_prefix`` + the path under
``destination_root``), otherwise their bytes are uploaded; see :mod:`consumers.catalog.clowder_files`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from consumers.catalog.base import (
    CatalogError,
    CatalogPermanentError,
    CatalogTransientError,
    CatalogUnavailable,
    IngestItem,
    IngestResult,
    Outcome,
    ingest_each,
)
from consumers.catalog.clowder_files import FileAdder, Mount
from consumers.catalog.clowder_http import ClowderHttp, objects_with_ids, segment
from consumers.catalog.naming import (
    UAMAC_VOCAB,
    Placement,
    content_hash,
    jsonld_document,
    placement_of,
)
from terra_xfer.circuit_breaker import CircuitBreaker
from terra_xfer.config import Secret
from terra_xfer.errors import ConfigError

log = logging.getLogger(__name__)

SEARCH_LIMIT = 1000  # Clowder's default is 12; duplicates beyond it would hide the oldest
CACHE_SIZE = 10_000
FRESH_AFTER = 3  # transient failures in a row with remembered ids before looking up afresh
COLLECTION = "collections"
DATASET = "datasets"


class ClowderCatalog:
    """A :class:`~consumers.catalog.base.Catalog` on a Clowder server."""

    name = "clowder"

    def __init__(
        self,
        url: str,
        key: str | Secret,
        *,
        space_id: str | None = None,
        destination_root: str | None = None,
        mounted_prefix: str | None = None,
        timeout_s: float = 120.0,
        agent_user_url: str | None = None,
        vocab: str = UAMAC_VOCAB,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if not url:
            raise ConfigError("catalog.clowder.url is empty; name the Clowder server")
        if mounted_prefix is not None and destination_root is None:
            raise ConfigError("catalog.clowder.mounted_prefix needs the transfer destination root")
        secret = key.reveal() if isinstance(key, Secret) else key
        if not secret:
            raise ConfigError("the Clowder API key is missing; set TERRA_XFER_CLOWDER_KEY")
        self._http = ClowderHttp(url, secret, timeout_s=timeout_s, breaker=breaker)
        self.url = self._http.url
        self.space_id = space_id
        self.destination_root = destination_root
        self.mounted_prefix = mounted_prefix
        self._agent_user_url = agent_user_url
        self._vocab = vocab
        mount = None
        if mounted_prefix is not None and destination_root is not None:
            mount = Mount(destination_root, mounted_prefix)
        self._files = FileAdder(self._http, mount, vocab)
        self._ids: OrderedDict[tuple[str, str, str | None], str] = OrderedDict()
        self._attached: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._linked: OrderedDict[str, bool] = OrderedDict()  # link paths answered
        self._streaks: OrderedDict[str, int] = OrderedDict()  # item key -> transient failures
        self._used_memory = False

    def __repr__(self) -> str:
        return (
            f"ClowderCatalog({self.url!r}, space_id={self.space_id!r},"
            f" mounted_prefix={self.mounted_prefix!r})"
        )

    def __enter__(self) -> ClowderCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ingest(self, item: IngestItem) -> IngestResult:
        """Register ``item``; a transient failure is raised at once, and a retry picks up from
        what this call found or made (remembered)."""
        placement = placement_of(item)
        streak = self._streaks.pop(item.key, 0)
        fresh = streak >= FRESH_AFTER
        self._used_memory = False
        try:
            return self._ingest_once(item, placement, fresh)
        except CatalogTransientError as exc:
            if not isinstance(exc, CatalogUnavailable):  # a request held back tells nothing
                streak = 0 if fresh else streak + self._used_memory
            if streak:
                _remember(self._streaks, item.key, streak)
            raise
        except CatalogPermanentError:
            # A remembered id may name something deleted since; look everything up once more.
            if fresh or not self._used_memory:
                raise
            log.info("clowder refused %s with remembered ids; resolving afresh", item.key)
        return self._ingest_once(item, placement, fresh=True)

    def ingest_many(self, items: Sequence[IngestItem]) -> list[Outcome]:
        """Each item in turn (Clowder has no batch call); see :meth:`Catalog.ingest_many`."""
        return ingest_each(self, items)

    def close(self) -> None:
        self._http.close()

    def _ingest_once(self, item: IngestItem, placement: Placement, fresh: bool) -> IngestResult:
        created = False
        collection_ids: list[str] = []
        parent: str | None = None
        for title in item.collections:
            parent, new = self._resolve(COLLECTION, title, parent, fresh)
            collection_ids.append(parent)
            created |= new
        dataset_id, new = self._resolve(DATASET, item.dataset_name, parent, fresh)
        created |= new
        if placement.metadata is not None:
            created |= self._attach_dataset_metadata(dataset_id, placement.metadata)
        file_id = None
        if placement.as_file:
            file_id, new = self._files.add(dataset_id, item)
            created |= new
        log.debug("ingested %s into dataset %s (created=%s)", item.key, dataset_id, created)
        return IngestResult(dataset_id, file_id, tuple(collection_ids), created, placement.warning)

    def _resolve(self, kind: str, title: str, parent: str | None, fresh: bool) -> tuple[str, bool]:
        """The id of ``title`` (created when missing), remembered for later items and retries,
        under ``parent`` and in the space."""
        key = (kind, title, parent)
        if not fresh and key in self._ids:
            self._ids.move_to_end(key)
            self._used_memory = True
            found, created = self._ids[key], False
        else:
            found, created = self._get_or_create(kind, title, parent)
            _remember(self._ids, key, found)
        self._link(kind, found, parent)
        return found, created

    def _get_or_create(self, kind: str, title: str, parent: str | None) -> tuple[str, bool]:
        """Find ``title`` by exact name or create it; racing creators converge on the lowest id."""
        found = self._search(kind, title)
        if found:
            return min(found), False
        made = self._create(kind, title, parent)
        winner = min([made, *self._search(kind, title)])
        if winner == made:
            log.info("created %s %r as %s", kind[:-1], title, made)
            for path in self._link_paths(kind, made, parent):
                _remember(self._linked, path, True)  # the create request put it there
            return made, True
        log.info("%s %r was also created as %s; keeping it, dropping %s", kind, title, winner, made)
        try:
            self._http.delete(f"{kind}/{segment(made)}")
        except CatalogError as exc:
            log.warning("could not drop duplicate %s %s (%s); it stays unused", kind, made, exc)
        return winner, False

    def _search(self, kind: str, title: str) -> list[str]:
        params = {"title": title, "exact": "true", "limit": str(SEARCH_LIMIT)}
        entries = objects_with_ids(self._http.get(kind, params), f"search of {kind}")
        return [str(entry["id"]) for entry in entries if entry.get("name") == title]

    def _create(self, kind: str, title: str, parent: str | None) -> str:
        body: dict[str, Any] = {"name": title, "description": ""}
        if kind == DATASET:
            path = "datasets/createempty"
            if parent is not None:
                body["collection"] = [parent]
            if self.space_id is not None:
                body["space"] = [self.space_id]
        else:
            # Clowder reads parentId as a string; pyclowder's list is silently ignored.
            path = "collections" if parent is None else "collections/newCollectionWithParent"
            if parent is not None:
                body["parentId"] = parent
            if self.space_id is not None:
                body["space"] = self.space_id
        answer = self._http.post_json(path, body)
        if not isinstance(answer, Mapping) or "id" not in answer:
            raise CatalogTransientError(f"clowder did not create {kind[:-1]} {title!r}: {answer!r}")
        return str(answer["id"])

    def _link(self, kind: str, found: str, parent: str | None) -> None:
        """Put a collection or dataset under ``parent`` and in the space, once per process.

        Linking is idempotent at Clowder, so a link whose answer was lost is made again; a
        transient failure is raised like any other (the retry makes only the links still
        missing); a refusal is logged and taken as final: the object is usable where it is.
        """
        for path in self._link_paths(kind, found, parent):
            if path in self._linked:
                continue
            try:
                self._http.post_json(path, {})
            except CatalogPermanentError as exc:
                log.warning("could not link %s %s: %s", kind[:-1], found, exc)
            _remember(self._linked, path, True)

    def _link_paths(self, kind: str, found: str, parent: str | None) -> list[str]:
        """The requests that put ``found`` under ``parent`` and in the space."""
        links = []
        if parent is not None:
            what = "addSubCollection" if kind == COLLECTION else "datasets"
            links.append(f"collections/{segment(parent)}/{what}/{segment(found)}")
        if self.space_id is not None:
            what = "addCollectionToSpace" if kind == COLLECTION else "addDatasetToSpace"
            links.append(f"spaces/{segment(self.space_id)}/{what}/{segment(found)}")
        return links

    def _attach_dataset_metadata(self, dataset_id: str, content: Any) -> bool:
        """Post the JSON-LD document unless the dataset already carries the same content."""
        digest = _comparable_hash(content)
        if (dataset_id, digest) in self._attached:
            return False
        path = f"datasets/{segment(dataset_id)}/metadata.jsonld"
        existing = self._http.get(path)
        present = isinstance(existing, list) and any(
            isinstance(doc, Mapping) and _comparable_hash(doc.get("content")) == digest
            for doc in existing
        )
        if not present:
            self._http.post_json(path, jsonld_document(content, self._agent(), self._vocab))
        _remember(self._attached, (dataset_id, digest), True)
        return not present

    def _agent(self) -> dict[str, str]:
        """Who adds metadata: the API key's user, as the original named it."""
        if self._agent_user_url is None:
            me = self._http.get("me")
            if not isinstance(me, Mapping) or "id" not in me:
                raise CatalogPermanentError(f"clowder /api/me did not name a user: {me!r}")
            self._agent_user_url = f"{self.url}/api/users/{me['id']}"
        return {"@type": "cat:user", "user_id": self._agent_user_url}


def _remember(memory: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    """Keep ``key`` as the newest entry, forgetting the oldest beyond ``CACHE_SIZE``."""
    memory[key] = value
    memory.move_to_end(key)
    if len(memory) > CACHE_SIZE:
        memory.popitem(last=False)


def _comparable_hash(value: Any) -> str:
    """Hash of JSON content with integral floats as ints, so Clowder's echo compares equal."""
    return content_hash(_integral(value))


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_integral(v) for v in value]
    return value
