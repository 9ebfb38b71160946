"""Building the configured transfer and catalog backends (the only place that chooses them).

Every implementation is imported here, whichever is configured: globus-sdk and pyclowder cost about
a tenth of a second each at start, once per stage process.
"""

from __future__ import annotations

from consumers.catalog.base import Catalog
from consumers.catalog.clowder import ClowderCatalog
from consumers.catalog.local import LocalCatalog
from consumers.transfer.base import TransferBackend
from consumers.transfer.globus import GlobusTransfer
from consumers.transfer.local import LocalTransfer
from consumers.transfer.record import RecordTransfer
from terra_xfer.config import Config
from terra_xfer.errors import ConfigError


def make_transfer(config: Config) -> TransferBackend:
    t = config.transfer
    if t.backend == "local":
        return LocalTransfer(t.destination_root, t.state_dir)
    if t.backend == "record":  # moves no bytes: for measuring the pipeline's overhead only
        return RecordTransfer()
    g = t.globus
    if not (g.client_id and g.source_endpoint and g.destination_endpoint):
        raise ConfigError(
            "[transfer.globus] client_id, source_endpoint and destination_endpoint "
            "must be set for the globus backend"
        )
    if g.client_secret is None:
        raise ConfigError("the globus backend needs TERRA_XFER_GLOBUS_CLIENT_SECRET")
    return GlobusTransfer(
        g.client_id,
        g.client_secret,
        g.source_endpoint,
        g.destination_endpoint,
        g.destination_base,
        deadline_s=g.deadline_s,
    )


def make_catalog(config: Config) -> Catalog:
    c = config.catalog
    if c.backend == "local":
        return LocalCatalog(c.path)
    if not c.clowder.url:
        raise ConfigError("[catalog.clowder] url must be set for the clowder backend")
    if c.clowder.key is None:
        raise ConfigError("the clowder backend needs TERRA_XFER_CLOWDER_KEY")
    return ClowderCatalog(
        c.clowder.url,
        c.clowder.key,
        space_id=c.clowder.space_id,
        destination_root=str(config.transfer.destination_root),
        mounted_prefix=c.clowder.mounted_prefix,
    )
