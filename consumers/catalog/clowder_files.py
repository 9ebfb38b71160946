"""Adding one file to a Clowder dataset: by path where Clowder mounts the destination, else bytes.

By path is a multipart field ``file={"path": ..., "md": ...}`` posted to
``/api/uploadToDataset/<id>``: Clowder registers the file where it lies, without copying it, if
the path is under its ``filesystem.sourcepaths``. pyclowder's by-path helper reads and uploads the
bytes anyway, so this module posts the field itself. File metadata travels in the same request
(``md`` by path, a form field named after the file for an upload), so a file never exists in
Clowder without it.

A file already in the dataset by name is not added again. Two workers adding the same file at once
both see the other's entry when they list again afterwards; the lowest id wins, as for datasets.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from requests_toolbelt.multipart.encoder import MultipartEncoder

from consumers.catalog.base import CatalogError, CatalogPermanentError, IngestItem
from consumers.catalog.clowder_http import ClowderHttp, objects_with_ids, segment
from consumers.catalog.naming import file_metadata_part

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mount:
    """The transfer destination as Clowder sees it: ``prefix`` stands for ``destination_root``."""

    destination_root: str
    prefix: str

    def clowder_path(self, file_path: str, file_name: str) -> str:
        """``prefix`` + the path of ``file_path`` under the destination root."""
        try:
            relative = PurePosixPath(file_path).relative_to(self.destination_root)
        except ValueError:
            raise CatalogPermanentError(
                f"{file_path} is not under the destination root {self.destination_root}"
            ) from None
        if ".." in relative.parts or relative.name != file_name:
            raise CatalogPermanentError(f"{file_path} does not name file {file_name}")
        return posixpath.join(self.prefix, str(relative))


class FileAdder:
    """Adds files to datasets, once each."""

    def __init__(self, http: ClowderHttp, mount: Mount | None, vocab: str) -> None:
        self._http = http
        self._mount = mount
        self._vocab = vocab

    def add(self, dataset_id: str, item: IngestItem) -> tuple[str, bool]:
        """The file's id in the dataset, and whether this call added it."""
        present = self._ids_named(dataset_id, item.file_name)
        if present:
            return min(present), False
        if self._mount is not None:
            answer = self._post_by_path(dataset_id, item, self._mount)
        else:
            answer = self._post_bytes(dataset_id, item)
        if not isinstance(answer, dict) or "id" not in answer:
            raise CatalogPermanentError(f"clowder did not add {item.file_name}: {answer!r}")
        return self._keep_first(dataset_id, item.file_name, str(answer["id"]))

    def _keep_first(self, dataset_id: str, file_name: str, made: str) -> tuple[str, bool]:
        """After adding, the lowest id of that name wins.

        A losing upload is deleted. A losing by-path entry is left, unused: Clowder deletes the
        bytes behind a path only inside its own storage root, but whether the mount lies outside
        it cannot be checked from here.
        """
        winner = min([made, *self._ids_named(dataset_id, file_name)])
        if winner == made:
            log.info("added %s to dataset %s as %s", file_name, dataset_id, made)
            return made, True
        log.info("%s was also added to dataset %s as %s; keeping it", file_name, dataset_id, winner)
        if self._mount is None:
            try:
                self._http.delete(f"files/{segment(made)}")
            except CatalogError as exc:
                log.warning("could not drop duplicate file %s (%s); it stays unused", made, exc)
        return winner, False

    def _ids_named(self, dataset_id: str, file_name: str) -> list[str]:
        listed = self._http.get(f"datasets/{segment(dataset_id)}/files")
        return [str(f["id"]) for f in objects_with_ids(listed, "file list")
                if f.get("filename") == file_name]  # fmt: skip

    def _post_by_path(self, dataset_id: str, item: IngestItem, mount: Mount) -> Any:
        field: dict[str, Any] = {"path": mount.clowder_path(item.file_path, item.file_name)}
        if item.file_metadata is not None:
            field["md"] = file_metadata_part(item.file_metadata, self._vocab)
        encoder = MultipartEncoder(fields={"file": json.dumps(field)})
        try:
            return self._http.post_multipart(
                f"uploadToDataset/{segment(dataset_id)}", encoder, encoder.content_type
            )
        except CatalogPermanentError as exc:
            raise CatalogPermanentError(
                f"{exc.reason} (is {field['path']} under Clowder's filesystem.sourcepaths?)",
                exc.status,
            ) from None

    def _post_bytes(self, dataset_id: str, item: IngestItem) -> Any:
        fields: dict[str, Any] = {}
        if item.file_metadata is not None:
            fields[item.file_name] = json.dumps(file_metadata_part(item.file_metadata, self._vocab))
        try:
            handle = open(item.file_path, "rb")  # noqa: SIM115 - closed below, after the post
        except OSError as exc:
            raise CatalogPermanentError(f"cannot read {item.file_path}: {exc}") from exc
        with handle:
            fields["file"] = (item.file_name, handle, "application/octet-stream")
            encoder = MultipartEncoder(fields=fields)
            return self._http.post_multipart(
                f"uploadToDataset/{segment(dataset_id)}", encoder, encoder.content_type
            )
