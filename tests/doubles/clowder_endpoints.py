"""What each endpoint of the Clowder test double does, following Clowder's own controllers.

Quirks of the real server are kept on purpose, because clients meet them: ``parentId`` must be a
string (a list, as pyclowder sends, creates the collection unlinked); listing the files of a missing
dataset is a 500; collection deletes always succeed; metadata needs an ``agent`` naming a user or
an extractor; MongoDB refuses dotted keys in metadata (a 500); by-path files are accepted only
under the configured source paths (Clowder's ``filesystem.sourcepaths``), else "No files uploaded".
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.doubles.clowder_store import ClowderStore


@dataclass(frozen=True)
class Request:
    """One parsed request: path parameters, first value of each query parameter, raw body."""

    params: dict[str, str]
    query: dict[str, str]
    body: bytes = b""
    content_type: str = ""


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any = field(default_factory=dict)
    text: bool = False  # send ``body`` as text/plain rather than JSON


def bad(message: str, status: int = 400) -> Reply:
    """An error the way Play's ``BadRequest(toJson("..."))`` sends it: a JSON string."""
    return Reply(status, message)


class Endpoints:
    """The handlers named in the double's route table."""

    def __init__(self, store: ClowderStore, base_url: str, source_paths: tuple[str, ...]) -> None:
        self.store = store
        self.base_url = base_url
        self.source_paths = source_paths

    def me(self, req: Request) -> Reply:
        return Reply(200, {
            "id": self.store.user_id, "firstName": "Terra", "lastName": "Ingest",
            "fullName": "Terra Ingest", "email": "ingest@example.org", "avatar": "",
            "profile": {}, "identityProvider": "local",
        })  # fmt: skip

    def create_space(self, req: Request) -> Reply:
        body = _json_body(req)
        if not isinstance(body, Mapping) or not isinstance(body.get("name"), str):
            return bad("Missing parameter [name]")
        return Reply(
            200, {"id": self.store.create_space(body["name"], body.get("description", ""))}
        )

    def get_space(self, req: Request) -> Reply:
        found = self.store.space(req.params["id"])
        return Reply(200, found) if found else bad("Space not found", 404)

    def add_collection_to_space(self, req: Request) -> Reply:
        return self._add_to_space(req.params["spaceId"], "collection", req.params["collectionId"])

    def add_dataset_to_space(self, req: Request) -> Reply:
        return self._add_to_space(req.params["spaceId"], "dataset", req.params["datasetId"])

    def list_collections(self, req: Request) -> Reply:
        ids = self._search("collection", req)
        return Reply(200, [self.store.collection_json(i) for i in ids])

    def create_collection(self, req: Request, with_parent: bool = False) -> Reply:
        body = _json_body(req)
        if not isinstance(body, Mapping) or not isinstance(body.get("name"), str):
            return bad("Missing parameter [name]")
        space = body.get("space")
        if isinstance(space, str) and space != "default" and not self.store.space(space):
            return bad(f"Bad space = {space}")
        new = self.store.create("collection", body["name"], str(body.get("description") or ""))
        if isinstance(space, str) and space != "default":
            self.store.add_to_space(space, "collection", new)
        parent = body.get("parentId")
        if with_parent and isinstance(parent, str) and self.store.exists("collection", parent):
            self.store.link_child(parent, new)
        return Reply(200, {"id": new})

    def create_collection_with_parent(self, req: Request) -> Reply:
        return self.create_collection(req, with_parent=True)

    def get_collection(self, req: Request) -> Reply:
        cid = req.params["coll_id"]
        if not self.store.exists("collection", cid):
            return bad("collection not found")
        return Reply(200, self.store.collection_json(cid))

    def delete_collection(self, req: Request) -> Reply:
        self.store.delete("collection", req.params["coll_id"])
        return Reply(200, {"status": "success"})

    def collection_datasets(self, req: Request) -> Reply:
        cid = req.params["coll_id"]
        if not self.store.exists("collection", cid):
            return bad("collection not found", 404)
        return Reply(200, [self.store.dataset_json(d) for d in self.store.datasets_in(cid)])

    def attach_dataset(self, req: Request) -> Reply:
        cid, did = req.params["coll_id"], req.params["ds_id"]
        if not (self.store.exists("collection", cid) and self.store.exists("dataset", did)):
            return Reply(500, "Internal Server Error", text=True)
        self.store.link_dataset(cid, did)
        return Reply(200, {"datasetsInCollection": len(self.store.datasets_in(cid))})

    def attach_sub_collection(self, req: Request) -> Reply:
        cid, sub = req.params["coll_id"], req.params["sub_coll_id"]
        if not (self.store.exists("collection", cid) and self.store.exists("collection", sub)):
            return Reply(500, "Internal Server Error", text=True)
        self.store.link_child(cid, sub)
        return Reply(200, self.store.collection_json(cid))

    def child_collections(self, req: Request) -> Reply:
        return self._related(req.params["coll_id"], self.store.children)

    def parent_collections(self, req: Request) -> Reply:
        return self._related(req.params["coll_id"], self.store.parents)

    def list_datasets(self, req: Request) -> Reply:
        return Reply(200, [self.store.dataset_json(i) for i in self._search("dataset", req)])

    def create_dataset(self, req: Request) -> Reply:
        body = _json_body(req)
        if not isinstance(body, Mapping) or not isinstance(body.get("name"), str):
            return bad("Missing parameter [name]")
        new = self.store.create("dataset", body["name"], str(body.get("description") or ""))
        for space in _strings(body.get("space")):
            if space != "default" and self.store.space(space):
                self.store.add_to_space(space, "dataset", new)
        for collection in _strings(body.get("collection")):
            if self.store.exists("collection", collection):
                self.store.link_dataset(collection, new)
        return Reply(200, {"id": new})

    def get_dataset(self, req: Request) -> Reply:
        did = req.params["id"]
        if not self.store.exists("dataset", did):
            return bad(f"dataset {did} not found", 404)
        return Reply(200, self.store.dataset_json(did))

    def delete_dataset(self, req: Request) -> Reply:
        did = req.params["id"]
        if not self.store.exists("dataset", did):
            return bad(f"dataset {did} not found", 404)
        self.store.delete("dataset", did)
        return Reply(200, {"status": "success"})

    def dataset_files(self, req: Request) -> Reply:
        did = req.params["id"]
        if not self.store.exists("dataset", did):
            return Reply(500, "Internal Server Error", text=True)
        return Reply(200, [self.store.file_json(f["id"]) for f in self.store.files_in(did)])

    def get_dataset_metadata(self, req: Request) -> Reply:
        did = req.params["id"]
        if not self.store.exists("dataset", did):
            return bad(f"Error getting dataset  {did}")
        return Reply(200, self.store.metadata("dataset", did))

    def add_dataset_metadata(self, req: Request) -> Reply:
        if not self.store.exists("dataset", req.params["id"]):
            return Reply(404, "", text=True)
        return self._add_metadata("dataset", req)

    def delete_file(self, req: Request) -> Reply:
        """Clowder removes the entry; bytes only inside its own storage (uploads), never a path."""
        if self.store.file(req.params["id"]) is None:
            return bad("File not found", 404)
        self.store.delete_file(req.params["id"])
        return Reply(200, {"status": "success"})

    def get_file_metadata(self, req: Request) -> Reply:
        fid = req.params["id"]
        if self.store.file(fid) is None:
            return bad(f"Error getting file  {fid}")
        return Reply(200, self.store.metadata("file", fid))

    def add_file_metadata(self, req: Request) -> Reply:
        if self.store.file(req.params["id"]) is None:
            return Reply(404, "", text=True)
        return self._add_metadata("file", req)

    def upload_to_dataset(self, req: Request) -> Reply:
        did = req.params["id"]
        if not req.content_type.startswith("multipart/form-data"):
            return bad("Expecting multipart/form-data request body")
        if not self.store.exists("dataset", did):
            return bad(f"Dataset with id={did} does not exist")
        try:
            files, data = parse_multipart(req.content_type, req.body)
        except ValueError as exc:
            return bad(str(exc))
        made = [self._add_upload(did, part, data) for part in files]
        for text in data.get("file", []):
            made.extend(self._add_path(did, text))
        if None in made:
            return Reply(500, "Document field names can't have a . in them", text=True)
        if not made:
            return bad("No files uploaded")
        if len(made) == 1:
            return Reply(200, {"id": made[0]})
        return Reply(200, {"ids": [self.store.file_json(str(f)) for f in made]})

    # helpers ----------------------------------------------------------------------------------
    def _add_to_space(self, space: str, kind: str, member: str) -> Reply:
        if not self.store.space(space) or not self.store.exists(kind, member):
            return bad(f"The given {kind} or space does not exist")
        self.store.add_to_space(space, kind, member)
        return Reply(200, {"status": "success"})

    def _search(self, kind: str, req: Request) -> list[str]:
        exact = req.query.get("exact", "false").lower() == "true"
        limit = int(req.query.get("limit", "12"))
        return self.store.search(kind, req.query.get("title"), exact, limit)

    def _related(self, cid: str, relation: Any) -> Reply:
        if not self.store.exists("collection", cid):
            return bad("collection not found")
        return Reply(200, [self.store.collection_json(c) for c in relation(cid)])

    def _agent(self) -> dict[str, str]:
        user_url = f"{self.base_url}/api/users/{self.store.user_id}"
        return {"@type": "cat:user", "name": "Terra Ingest", "user_id": user_url}

    def _add_metadata(self, target_type: str, req: Request) -> Reply:
        body = _json_body(req)
        if not isinstance(body, Mapping):
            return bad("Invalid Json")
        agent = body.get("agent")
        if not isinstance(agent, Mapping) or not _valid_agent(agent):
            return bad("Creator data is missing or incorrect.")
        content = body.get("content", body) if target_type == "dataset" else body
        if _has_dotted_key(content):
            return Reply(500, "Document field names can't have a . in them", text=True)
        context = body.get("@context")
        self.store.add_metadata(target_type, req.params["id"], context, content, dict(agent))
        return Reply(200, "Metadata successfully added to db")

    def _add_upload(self, did: str, part: FilePart, data: dict[str, list[str]]) -> str | None:
        mds = data.get(part.filename) or [t for t in data.get(part.name, []) if "@context" in t]
        if any(_has_dotted_key(json.loads(md)) for md in mds):
            return None
        fid = self.store.add_file(
            did, part.filename, len(part.content), path=None, content=part.content
        )
        self._associate(fid, mds)
        return fid

    def _add_path(self, did: str, text: str) -> list[str | None]:
        field_value = json.loads(text)
        path = field_value.get("path") if isinstance(field_value, Mapping) else None
        if not isinstance(path, str) or not any(path.startswith(s) for s in self.source_paths):
            return []
        md = field_value.get("md", field_value.get("metadata"))
        if md is not None and _has_dotted_key(md):
            return [None]
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        fid = self.store.add_file(did, path.rsplit("/", 1)[-1], size, path=path, content=None)
        self._associate(fid, [] if md is None else [json.dumps(md)])
        return [fid]

    def _associate(self, file_id: str, documents: list[str]) -> None:
        """Clowder's associateMetaData: the object minus ``@context`` is the content."""
        for text in documents:
            doc = json.loads(text)
            content = {k: v for k, v in doc.items() if k != "@context"}
            self.store.add_metadata("file", file_id, doc.get("@context"), content, self._agent())


@dataclass(frozen=True)
class FilePart:
    name: str
    filename: str
    content: bytes


_DISPOSITION = re.compile(r'\b(name|filename)="([^"]*)"')


def parse_multipart(content_type: str, body: bytes) -> tuple[list[FilePart], dict[str, list[str]]]:
    """File parts (those with a filename) and data parts (name → values) of a form body."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ValueError("Missing boundary header")
    files: list[FilePart] = []
    data: dict[str, list[str]] = {}
    for chunk in body.split(b"--" + match.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        params = dict(_DISPOSITION.findall(head.decode("utf-8", "replace")))
        if "filename" in params:
            files.append(FilePart(params.get("name", ""), params["filename"], content))
        else:
            data.setdefault(params.get("name", ""), []).append(content.decode("utf-8"))
    return files, data


def _json_body(req: Request) -> Any:
    try:
        return json.loads(req.body or b"null")
    except ValueError:
        return None


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _valid_agent(agent: Any) -> bool:
    """Clowder's AgentReads: ``@type`` plus a ``user_id`` or ``extractor_id`` URL."""
    if not isinstance(agent, Mapping) or not isinstance(agent.get("@type"), str):
        return False
    url = agent.get("user_id", agent.get("extractor_id"))
    return isinstance(url, str) and re.match(r"https?://", url) is not None


def _has_dotted_key(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any("." in str(k) or _has_dotted_key(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_dotted_key(v) for v in value)
    return False
