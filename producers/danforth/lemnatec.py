"""Reading the LemnaTec PostgreSQL database (psycopg 3): snapshots by id, and their images.

Only ``SELECT``s, in autocommit, on one connection opened on first use and reopened after it
fails. The connection string carries no password: it comes from the environment as a
:class:`~terra_xfer.config.Secret`. psycopg's errors are wrapped here: a lost or refused connection
is :class:`LemnaTecUnavailableError` (transient), a query the database rejects (no such table, no
permission) :class:`LemnaTecQueryError` (permanent).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from producers.danforth.errors import LemnaTecQueryError, LemnaTecUnavailableError
from producers.danforth.records import Snapshot, Tile
from terra_xfer.config import Secret
from terra_xfer.errors import ConfigError

log = logging.getLogger(__name__)

_SNAPSHOT_COLUMNS = (
    "id, id_tag, car_tag, time_stamp, weight_before, weight_after, water_amount,"
    " measurement_label, COALESCE(propagated, false)"
)
NEWER_SQL = f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshot WHERE id > %s ORDER BY id LIMIT %s"
BY_ID_SQL = f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshot WHERE id = ANY(%s) ORDER BY id"
TILES_SQL = (
    "SELECT ti.snapshot_id, ti.id, ti.camera_label, t.frame, t.raw_image_oid,"
    " t.rotate_flip_type, t.dataformat"
    " FROM tiled_image ti JOIN tile t ON t.tiled_image_id = ti.id"
    " WHERE ti.snapshot_id = ANY(%s) ORDER BY ti.snapshot_id, ti.id, t.frame"
)


def database_name(dsn: str) -> str:
    """The database a connection string names; refuses one that holds a password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"danforth.dsn is not a valid connection string: {exc}") from None
    if "password" in params:
        raise ConfigError(
            "danforth.dsn must not hold the password: set TERRA_XFER_DANFORTH_PASSWORD instead"
        )
    name = params.get("dbname")
    if not name:
        raise ConfigError("danforth.dsn must name the database (dbname=...)")
    return str(name)


class LemnaTecDb:
    """The queries the producer needs, on one lazily opened connection."""

    def __init__(self, dsn: str, password: Secret | None, connect_timeout_s: int = 10) -> None:
        self.database = database_name(dsn)
        self._dsn = dsn
        self._password = password
        self._timeout = connect_timeout_s
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def newer(self, after_id: int, limit: int) -> list[Snapshot]:
        """Up to ``limit`` snapshots with an id above ``after_id``, in id order (no tiles)."""
        return [_snapshot(r) for r in self._query(NEWER_SQL, (after_id, limit))]

    def by_id(self, ids: Sequence[int]) -> list[Snapshot]:
        """The snapshots of ``ids`` that exist, in id order (no tiles)."""
        if not ids:
            return []
        return [_snapshot(r) for r in self._query(BY_ID_SQL, (list(ids),))]

    def with_tiles(self, snapshots: Sequence[Snapshot]) -> list[Snapshot]:
        """``snapshots`` with their images (none for a watering job)."""
        if not snapshots:
            return []
        tiles: dict[int, list[Tile]] = {s.id: [] for s in snapshots}
        for row in self._query(TILES_SQL, ([s.id for s in snapshots],)):
            tile = Tile(int(row[0]), int(row[1]), str(row[2]), int(row[3]), int(row[4]), *row[5:7])
            tiles[tile.snapshot_id].append(tile)
        return [replace(s, tiles=tuple(tiles[s.id])) for s in snapshots]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            password = self._password.reveal() if self._password is not None else None
            kwargs: dict[str, Any] = {"connect_timeout": self._timeout, "autocommit": True}
            if password is not None:
                kwargs["password"] = password
            self._conn = psycopg.connect(self._dsn, **kwargs)
            log.info("danforth: connected to LemnaTec database %s", self.database)
        return self._conn

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            with self._connection().cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        except psycopg.OperationalError as exc:
            self.close()
            raise LemnaTecUnavailableError(f"LemnaTec database {self.database}: {exc}") from exc
        except psycopg.Error as exc:
            self.close()
            raise LemnaTecQueryError(f"LemnaTec database {self.database}: {exc}") from exc


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value) if isinstance(value, Decimal | int | float) else None


def _snapshot(row: tuple[Any, ...]) -> Snapshot:
    return Snapshot(
        id=int(row[0]),
        id_tag=row[1],
        car_tag=row[2],
        time_stamp=row[3],
        weight_before=_number(row[4]),
        weight_after=_number(row[5]),
        water_amount=_number(row[6]),
        measurement_label=row[7],
        completed=bool(row[8]),
    )
