"""Catalog backends: where transferred files are registered (Clowder, or a local SQLite catalog).

Both follow the TERRA-REF hierarchy: collections ``<sensor>`` → ``<sensor> - YYYY`` →
``<sensor> - YYYY-MM`` → ``<sensor> - YYYY-MM-DD``, then one dataset per capture
(``<sensor> - <timestamp dir>``) holding its files, with ``*_metadata.json`` attached to the dataset
as JSON-LD. A ``*_metadata.json`` whose bytes are not a JSON object is added as an ordinary file
instead, with a note on its dataset and a warning in the result
(:func:`consumers.catalog.naming.placement_of`). Import a backend from its module
(``consumers.catalog.local``, ``consumers.catalog.clowder``); this package exports the interface
only.
"""

from consumers.catalog.base import (
    Catalog,
    CatalogError,
    CatalogNameError,
    CatalogPermanentError,
    CatalogTransientError,
    CatalogUnavailable,
    IngestItem,
    IngestResult,
    UnreadableMetadata,
)

__all__ = [
    "Catalog",
    "CatalogError",
    "CatalogNameError",
    "CatalogPermanentError",
    "CatalogTransientError",
    "CatalogUnavailable",
    "IngestItem",
    "IngestResult",
    "UnreadableMetadata",
]
