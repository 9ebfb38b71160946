"""The state behind the Clowder test double: an in-memory SQLite database, one lock.

It keeps what Clowder keeps for the endpoints the double serves: spaces, collections with their
parent/child links, datasets and the collections they are in, files (uploaded bytes or registered
by path) and JSON-LD metadata on datasets and files. Ids look like MongoDB ObjectIds (24 hex digits)
and grow in creation order, as ObjectIds from one Clowder server do. JSON shapes mirror Clowder's
``jsonCollection``, ``Dataset`` writes and ``jsonFile``.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
from typing import Any

SCHEMA = """
CREATE TABLE spaces (id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT, created TEXT);
CREATE TABLE space_members (space TEXT, kind TEXT, member TEXT, PRIMARY KEY (space, kind, member));
CREATE TABLE collections (id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT, created TEXT);
CREATE TABLE collection_children (parent TEXT, child TEXT, PRIMARY KEY (parent, child));
CREATE TABLE collection_datasets (collection TEXT, dataset TEXT, PRIMARY KEY (collection, dataset));
CREATE TABLE datasets (id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT, created TEXT);
CREATE TABLE files (
    id TEXT PRIMARY KEY, dataset TEXT NOT NULL, filename TEXT NOT NULL, size INTEGER NOT NULL,
    loader TEXT NOT NULL, path TEXT, content BLOB, created TEXT
);
CREATE TABLE metadata (
    id TEXT PRIMARY KEY, target_type TEXT NOT NULL, target TEXT NOT NULL,
    context TEXT, content TEXT NOT NULL, agent TEXT NOT NULL, created TEXT
);
"""
KINDS = {"collection": "collections", "dataset": "datasets"}


class ClowderStore:
    """Clowder's records, safe to use from the server's handler threads."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        self.lock = threading.RLock()
        self._epoch = int(time.time())
        self._counter = itertools.count(1)
        self.user_id = self.new_id()

    def close(self) -> None:
        with self.lock:
            self._db.close()

    def new_id(self) -> str:
        """An ObjectId-like id, greater than every id made before it."""
        return f"{self._epoch:08x}{next(self._counter):016x}"

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with self.lock:
            return list(self._db.execute(sql, params).fetchall())

    def execute(self, sql: str, *params: object) -> int:
        with self.lock:
            return self._db.execute(sql, params).rowcount

    # spaces -----------------------------------------------------------------------------------
    def create_space(self, name: str, description: str = "") -> str:
        new = self.new_id()
        self.execute("INSERT INTO spaces VALUES (?, ?, ?, ?)", new, name, description, _now())
        return new

    def space(self, space_id: str) -> dict[str, Any] | None:
        found = self.rows(
            "SELECT id, name, description, created FROM spaces WHERE id = ?", space_id
        )
        if not found:
            return None
        sid, name, description, created = found[0]
        return {"id": sid, "name": name, "description": description, "created": created}

    def add_to_space(self, space_id: str, kind: str, member: str) -> None:
        self.execute("INSERT OR IGNORE INTO space_members VALUES (?, ?, ?)", space_id, kind, member)

    def spaces_of(self, kind: str, member: str) -> list[str]:
        sql = "SELECT space FROM space_members WHERE kind = ? AND member = ? ORDER BY space"
        return [r[0] for r in self.rows(sql, kind, member)]

    # collections and datasets -----------------------------------------------------------------
    def create(self, kind: str, name: str, description: str = "") -> str:
        new = self.new_id()
        self.execute(
            f"INSERT INTO {KINDS[kind]} VALUES (?, ?, ?, ?)", new, name, description, _now()
        )
        return new

    def exists(self, kind: str, item_id: str) -> bool:
        return bool(self.rows(f"SELECT 1 FROM {KINDS[kind]} WHERE id = ?", item_id))

    def search(self, kind: str, title: str | None, exact: bool, limit: int) -> list[str]:
        """Ids newest first, as Clowder lists; ``exact`` matches the whole name, else a substring."""
        table = KINDS[kind]
        if title is None:
            ids = self.rows(f"SELECT id FROM {table} ORDER BY id DESC")
        elif exact:
            ids = self.rows(f"SELECT id FROM {table} WHERE name = ? ORDER BY id DESC", title)
        else:
            sql = f"SELECT id FROM {table} WHERE instr(lower(name), lower(?)) ORDER BY id DESC"
            ids = self.rows(sql, title)
        found = [r[0] for r in ids]
        return found[:limit] if limit > 0 else found

    def delete(self, kind: str, item_id: str) -> None:
        with self.lock:
            self.execute(f"DELETE FROM {KINDS[kind]} WHERE id = ?", item_id)
            self.execute("DELETE FROM space_members WHERE kind = ? AND member = ?", kind, item_id)
            if kind == "collection":
                self.execute(
                    "DELETE FROM collection_children WHERE parent = ? OR child = ?",
                    item_id,
                    item_id,
                )
                self.execute("DELETE FROM collection_datasets WHERE collection = ?", item_id)
            else:
                self.execute("DELETE FROM collection_datasets WHERE dataset = ?", item_id)
                for (file_id,) in self.rows("SELECT id FROM files WHERE dataset = ?", item_id):
                    self.execute("DELETE FROM metadata WHERE target = ?", file_id)
                self.execute("DELETE FROM files WHERE dataset = ?", item_id)
                self.execute("DELETE FROM metadata WHERE target = ?", item_id)

    def link_child(self, parent: str, child: str) -> None:
        self.execute("INSERT OR IGNORE INTO collection_children VALUES (?, ?)", parent, child)

    def link_dataset(self, collection: str, dataset: str) -> None:
        self.execute("INSERT OR IGNORE INTO collection_datasets VALUES (?, ?)", collection, dataset)

    def children(self, parent: str) -> list[str]:
        sql = "SELECT child FROM collection_children WHERE parent = ? ORDER BY child"
        return [r[0] for r in self.rows(sql, parent)]

    def parents(self, child: str) -> list[str]:
        sql = "SELECT parent FROM collection_children WHERE child = ? ORDER BY parent"
        return [r[0] for r in self.rows(sql, child)]

    def datasets_in(self, collection: str) -> list[str]:
        sql = "SELECT dataset FROM collection_datasets WHERE collection = ? ORDER BY dataset"
        return [r[0] for r in self.rows(sql, collection)]

    def collections_of(self, dataset: str) -> list[str]:
        sql = "SELECT collection FROM collection_datasets WHERE dataset = ? ORDER BY collection"
        return [r[0] for r in self.rows(sql, dataset)]

    def collection_json(self, collection_id: str) -> dict[str, Any]:
        """Clowder's ``jsonCollection``: every value a string, id lists as Scala ``List(...)``."""
        name, description, created = self.rows(
            "SELECT name, description, created FROM collections WHERE id = ?", collection_id
        )[0]
        children, parents = self.children(collection_id), self.parents(collection_id)
        return {
            "id": collection_id, "name": name, "description": description, "created": created,
            "author": "Terra Ingest", "root_flag": str(not parents).lower(),
            "child_collection_ids": _scala_list(children),
            "parent_collection_ids": _scala_list(parents),
            "childCollectionsCount": str(len(children)),
            "datasetCount": str(len(self.datasets_in(collection_id))),
            "spaces": _scala_list(self.spaces_of("collection", collection_id)),
        }  # fmt: skip

    def dataset_json(self, dataset_id: str) -> dict[str, Any]:
        """Clowder's dataset writes."""
        name, description, created = self.rows(
            "SELECT name, description, created FROM datasets WHERE id = ?", dataset_id
        )[0]
        return {
            "id": dataset_id, "name": name, "description": description, "created": created,
            "thumbnail": None, "authorId": self.user_id,
            "spaces": self.spaces_of("dataset", dataset_id), "resource_type": "dataset",
        }  # fmt: skip

    # files and metadata -----------------------------------------------------------------------
    def add_file(
        self, dataset: str, filename: str, size: int, *, path: str | None, content: bytes | None
    ) -> str:
        new = self.new_id()
        loader = "path" if path is not None else "bytes"
        self.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            new, dataset, filename, size, loader, path, content, _now(),
        )  # fmt: skip
        return new

    def delete_file(self, file_id: str) -> None:
        with self.lock:
            self.execute("DELETE FROM metadata WHERE target = ?", file_id)
            self.execute("DELETE FROM files WHERE id = ?", file_id)

    def file(self, file_id: str) -> dict[str, Any] | None:
        sql = "SELECT id, dataset, filename, size, loader, path, content FROM files WHERE id = ?"
        found = self.rows(sql, file_id)
        if not found:
            return None
        fid, dataset, filename, size, loader, path, content = found[0]
        return {
            "id": fid, "dataset": dataset, "filename": filename, "size": size, "loader": loader,
            "path": path, "content": content,
        }  # fmt: skip

    def files_in(self, dataset: str) -> list[dict[str, Any]]:
        ids = self.rows("SELECT id FROM files WHERE dataset = ? ORDER BY id", dataset)
        return [f for (fid,) in ids if (f := self.file(fid)) is not None]

    def file_json(self, file_id: str) -> dict[str, Any]:
        """Clowder's ``jsonFile`` for a non-admin user."""
        sql = "SELECT filename, size, created FROM files WHERE id = ?"
        filename, size, created = self.rows(sql, file_id)[0]
        return {
            "id": file_id, "filename": filename, "contentType": "application/octet-stream",
            "date-created": created, "size": str(size),
        }  # fmt: skip

    def add_metadata(
        self, target_type: str, target: str, context: Any, content: Any, agent: dict[str, Any]
    ) -> str:
        new = self.new_id()
        self.execute(
            "INSERT INTO metadata VALUES (?, ?, ?, ?, ?, ?, ?)",
            new, target_type, target, json.dumps(context), json.dumps(content),
            json.dumps(agent), _now(),
        )  # fmt: skip
        return new

    def metadata(self, target_type: str, target: str) -> list[dict[str, Any]]:
        """Documents on one target, oldest first: ``@context``, ``agent``, ``content`` and more."""
        sql = (
            "SELECT context, content, agent, created FROM metadata"
            " WHERE target_type = ? AND target = ? ORDER BY id"
        )
        return [
            {
                "@context": json.loads(context),
                "attached_to": {"resource_type": f"cat:{target_type}", "id": target},
                "created_at": created,
                "agent": json.loads(agent),
                "content": json.loads(content),
            }
            for context, content, agent, created in self.rows(sql, target_type, target)
        ]

    # inspection for tests ---------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        tables = ("collections", "datasets", "files", "metadata")
        return {t: int(self.rows(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in tables}

    def named(self, kind: str, name: str) -> list[str]:
        """Ids of every collection or dataset called ``name``, oldest first."""
        sql = f"SELECT id FROM {KINDS[kind]} WHERE name = ? ORDER BY id"
        return [r[0] for r in self.rows(sql, name)]


def _scala_list(ids: list[str]) -> str:
    return f"List({', '.join(ids)})"


def _now() -> str:
    """A creation time as Clowder prints a java.util.Date."""
    return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
