"""Catalog backends: where transferred files are registered (Clowder, or a local SQLite catalog).

Both follow the TERRA-REF hierarchy: collections ``<sensor>`` → ``<sensor> - YYYY`` →
``<sensor> - YYYY-MM`` → ``<sensor> - YYYY-MM-DD``, then one dataset per capture
(``<sensor> - <timestamp dir>``) holding its files, with ``*_metadata.json`` attached to the dataset
as JSON-LD. Import a backend from its module (``consumers.catalog.local``,
``consumers.catalog.clowder``); this package exports the interface only.
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
]
