"""Every stage of the pipeline, in one table: read top to bottom, it is one file's journey.

Each entry says what the stage is called (its command, its process name, its Kubernetes component,
its metrics label), which consumer group it is, which topics it reads and writes, which records it
accepts, how it is built, when ``up`` runs it and what it needs on Kubernetes. The CLI, ``up``
(processes and threads), ``lag``, the Kubernetes generator, the chaos runner and the tests all
read this table; no other list of stages exists.

A factory builds its stage from a :class:`Wiring` and hands the stage its own entry; what it
gives the stage (a transfer backend, a view of files.state) is held by the wiring and closed after
the stage. A factory makes no network call: the stage connects on its first step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from consumers.backends import make_catalog, make_transfer
from consumers.batcher import Batcher
from consumers.deleter import Deleter
from consumers.ingest import Ingest
from consumers.monitor import Monitor
from consumers.state.indexer import Indexer
from consumers.state.keeper import StateKeeper
from consumers.state.retention import Retention
from consumers.state.view import StateFollower
from producers.danforth.service import DanforthProducer
from producers.gantry.service import GantryProducer, log_source
from producers.sweeper import Sweeper
from terra_xfer.config import Config
from terra_xfer.errors import ConfigError
from terra_xfer.stages.spec import (
    Deployment,
    Mount,
    Resources,
    Scaling,
    Stage,
    StageSpec,
    Wiring,
)
from terra_xfer.topics import (
    BATCHES_SUBMITTED,
    CHECKPOINTS,
    DEADLETTER,
    FILES_ARRIVED,
    FILES_DELETED,
    FILES_INGESTED,
    FILES_STATE,
    FILES_TRANSFERRED,
)

CACHE_DIR = "/gantry_data"
LOG_DIR = "/var/log/gantry"
DANFORTH_CACHE_DIR = "/danforth_data"
BLOB_DIR = "/lemnatec_blobs"
CACHE_RW = Mount("gantry-cache", CACHE_DIR, read_only=False)
CACHE_RO = Mount("gantry-cache", CACHE_DIR, read_only=True)
LOGS_RO = Mount("gantry-log", LOG_DIR, read_only=True)
# The Danforth producer writes its PNGs and metadata here (and removes an interrupted run's
# leftovers); the deleter removes verified files. The LemnaTec blob store is only ever read.
DANFORTH_CACHE_RW = Mount("danforth-cache", DANFORTH_CACHE_DIR, read_only=False)
BLOBS_RO = Mount("lemnatec-blobs", BLOB_DIR, read_only=True)
GLOBUS_SECRET = ("TERRA_XFER_GLOBUS_CLIENT_SECRET", "terra-xfer-globus", "client-secret")
CLOWDER_SECRET = ("TERRA_XFER_CLOWDER_KEY", "terra-xfer-clowder", "key")
LEMNATEC_SECRET = ("TERRA_XFER_DANFORTH_PASSWORD", "terra-xfer-lemnatec", "password")
# Bytes on disk per file of a stage's local copy of files.state, measured by bench.scale with a
# million files (BENCHMARKS.md, "Scale": the state keeper's copy 2,289-2,293, the views 649-692,
# the status index 1,512-1,526), rounded up: what its Kubernetes volume is sized from.
KEEPER_COPY_BYTES = 2300
VIEW_BYTES = 700
STATUS_INDEX_BYTES = 1600
TRANSFER_OUTCOMES = frozenset({"FileTransferred", "FileTransferFailed"})
# What files.arrived carries: a file version to ship, or a logged file the cache did not hold.
ARRIVALS = frozenset({"FileArrived", "FileMissing"})


def _view(w: Wiring, file_name: str, **kind: bool) -> StateFollower:
    """A local follower of files.state, of the kind a stage needs, beside the status index."""
    path = w.config.status.index_path.with_name(file_name)
    retention = Retention.of(w.config)
    return w.hold(
        StateFollower(
            w.config, path, retention=retention, progress=w.waiting, alive=w.alive, **kind
        )
    )


def _indexer(w: Wiring) -> Stage:
    # Every file, whole, for the site's lifetime: no retention.
    index = StateFollower(w.config, w.config.status.index_path, progress=w.waiting, alive=w.alive)
    return Indexer(w.hold(index))


def _gantry(w: Wiring) -> Stage:
    return GantryProducer(w.config, w.spec, log_source(w.config, "xferlog"))


def _gantry_nas(w: Wiring) -> Stage:
    return GantryProducer(w.config, w.spec, log_source(w.config, "nas_log"))


def _danforth(w: Wiring) -> Stage:
    return DanforthProducer(w.config, w.spec)


def _sweeper(w: Wiring) -> Stage:
    view = _view(w, "sweeper-view.sqlite", records=False)
    return Sweeper(w.config, w.spec, view, measured=list(consumers()))


def _batcher(w: Wiring) -> Stage:
    backend = w.hold(make_transfer(w.config))
    return Batcher(
        w.config, w.spec, backend, _view(w, "batcher-view.sqlite", transferred_only=True)
    )


def _monitor(w: Wiring) -> Stage:
    return Monitor(w.config, w.spec, w.hold(make_transfer(w.config)))


def _state_keeper(w: Wiring) -> Stage:
    return StateKeeper(w.config, w.spec, progress=w.waiting, alive=w.alive)


def _ingest(w: Wiring) -> Stage:
    return Ingest(w.config, w.spec, make_catalog(w.config))


def _deleter(w: Wiring) -> Stage:
    if not w.config.deleter.enabled:
        raise ConfigError("[deleter] enabled is false: the deleter has nothing to run")
    return Deleter(w.config, w.spec, w.hold(make_transfer(w.config)))


def _has_nas_log(config: Config) -> bool:
    return config.gantry.nas_log is not None


def _danforth_enabled(config: Config) -> bool:
    return config.danforth.enabled


def _deleter_enabled(config: Config) -> bool:
    return config.deleter.enabled


# The pipeline, in the order `up` starts it: producers, then each consumer after what it reads.
STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "gantry",
        "Tail xferlog into files.arrived (producer).",
        _gantry,
        help="""Tail the FTP server's xferlog and emit one FileArrived per completed whitelisted upload.

        Follows the log through daily rotation (xferlog-YYYYMMDD, later gzipped) and copytruncate;
        events and the log position are committed in one Kafka transaction, so a restart resumes
        exactly where the last commit ended. Malformed lines and files missing from the cache go to
        the dead-letter topic with the reason; a missing file also gets a FileMissing, so
        `terra-xfer status` shows it MISSING until a version of it arrives.

        \b
        Examples:
          terra-xfer gantry --config site.toml
          terra-xfer gantry --config site.toml --source nas_log
          terra-xfer gantry reseat --config site.toml --from-end
        """,
        outputs=(FILES_ARRIVED, CHECKPOINTS, DEADLETTER),
        deployment=Deployment((CACHE_RO, LOGS_RO), single=True),
    ),
    StageSpec(
        "gantry-nas",
        "Tail nas.log into files.arrived (producer).",
        _gantry_nas,
        outputs=(FILES_ARRIVED, CHECKPOINTS, DEADLETTER),
        command=("gantry", "--source", "nas_log"),
        runs_when=_has_nas_log,
        deployment=None,  # a site with a nas.log adds it beside the gantry's
    ),
    StageSpec(
        "danforth",
        "Ship LemnaTec snapshots into files.arrived (producer).",
        _danforth,
        help="""Poll the LemnaTec database for completed snapshots and ship each one, metadata first.

        Every [danforth] poll_s, the snapshots after the committed position are read in id order;
        each image blob becomes a PNG under [danforth] cache_root (snapshot<id>/), the snapshot's
        metadata a snapshot<id>_metadata.json, and all of it one FileArrived per file, committed in
        one Kafka transaction with the new position. A missing or corrupt blob is a dead letter and
        the snapshot is marked incomplete. The database password comes only from the environment
        (TERRA_XFER_DANFORTH_PASSWORD).

        \b
        Example:
          TERRA_XFER_DANFORTH_PASSWORD=... terra-xfer danforth --config site.toml
        """,
        outputs=(FILES_ARRIVED, CHECKPOINTS, DEADLETTER),
        runs_when=_danforth_enabled,
        # One poller per LemnaTec database, never two: its transactional id is fixed per database,
        # so a second copy would fence the first, and both would rewrite the same snapshot<id>/
        # directories of the shared cache. One chunk of ten full-size snapshots made by its two
        # PNG threads peaks at about 320 MiB, and the threads can use two cores.
        deployment=Deployment(
            (DANFORTH_CACHE_RW, BLOBS_RO),
            secrets=(LEMNATEC_SECRET,),
            single=True,
            resources=Resources("500m", "512Mi", "2", "1Gi"),
            component="danforth",
        ),
    ),
    StageSpec(
        "batcher",
        "Batch arrivals into transfer tasks.",
        _batcher,
        help="""Window files.arrived into batches of [batcher] max_files (or max_wait_s) and submit each as
        one transfer task, idempotently (the submission id is recorded in Kafka first).

        \b
        Example:
          terra-xfer batcher --config site.toml
        """,
        group="batcher",
        inputs=(FILES_ARRIVED,),
        outputs=(BATCHES_SUBMITTED, DEADLETTER),
        accepts=ARRIVALS,
        deployment=Deployment(
            secrets=(GLOBUS_SECRET,), scaling=Scaling(2000), copy_bytes_per_file=VIEW_BYTES
        ),
    ),
    StageSpec(
        "monitor",
        "Follow transfer tasks; per-file outcomes.",
        _monitor,
        help="""Follow every transfer task to its end and publish one outcome per file (files.transferred);
        retry failed files with backoff up to [monitor] max_attempts.

        \b
        Example:
          terra-xfer monitor --config site.toml
        """,
        group="monitor",
        inputs=(BATCHES_SUBMITTED,),
        outputs=(FILES_TRANSFERRED, FILES_ARRIVED, DEADLETTER),
        accepts=frozenset({"BatchSubmitted"}),
        deployment=Deployment(secrets=(GLOBUS_SECRET,), scaling=Scaling(20)),
    ),
    StageSpec(
        "state-keeper",
        "Fold events into files.state.",
        _state_keeper,
        help="""Fold every file event into the compacted files.state topic (its only writer).

        \b
        Example:
          terra-xfer state-keeper --config site.toml
        """,
        group="state-keeper",
        inputs=(FILES_ARRIVED, BATCHES_SUBMITTED, FILES_TRANSFERRED, FILES_INGESTED, FILES_DELETED),
        outputs=(FILES_STATE, DEADLETTER),
        accepts=frozenset(
            {
                *ARRIVALS,
                "BatchSubmitted",
                "FileTransferred",
                "FileTransferFailed",
                "FileIngested",
                "FileIngestFailed",
                "FileDeleted",
            }
        ),
        # 730-815 MB at its peak over a million files: it holds the 20,000 most recent states.
        deployment=Deployment(
            scaling=Scaling(5000),
            copy_bytes_per_file=KEEPER_COPY_BYTES,
            resources=Resources("250m", "832Mi", "1", "1280Mi"),
        ),
    ),
    StageSpec(
        "ingest",
        "Register transferred files in the catalog.",
        _ingest,
        help="""Register every transferred file in the catalog ([catalog] backend: local or clowder).

        \b
        Example:
          TERRA_XFER_CLOWDER_KEY=... terra-xfer ingest --config site.toml
        """,
        group="ingest",
        inputs=(FILES_TRANSFERRED,),
        outputs=(FILES_INGESTED, DEADLETTER),
        accepts=TRANSFER_OUTCOMES,
        deployment=Deployment(secrets=(CLOWDER_SECRET,), scaling=Scaling(500)),
    ),
    StageSpec(
        "deleter",
        "Remove verified files from the cache.",
        _deleter,
        help="""Remove transferred files from the cache once the destination copy is confirmed; refuse,
        with the reason, anything modified, moved, symlinked or unconfirmed. [deleter] dry_run only
        reports.

        \b
        Example:
          terra-xfer deleter --config site.toml
        """,
        group="deleter",
        inputs=(FILES_TRANSFERRED,),
        outputs=(FILES_DELETED, DEADLETTER),
        accepts=TRANSFER_OUTCOMES,
        runs_when=_deleter_enabled,
        deployment=Deployment((CACHE_RW,), secrets=(GLOBUS_SECRET,), scaling=Scaling(1000)),
    ),
    StageSpec(
        "sweeper",
        "Re-queue old untransferred cache files.",
        _sweeper,
        help="""Walk the whitelisted cache at start and every [sweeper] interval_s; re-queue files older
        than min_age_s that never transferred, and report files stuck in one state.

        \b
        Example:
          terra-xfer sweeper --config site.toml --once
        """,
        outputs=(FILES_ARRIVED,),
        # 314-363 MB at its peak over a million files (its walk and the lag it measures).
        deployment=Deployment(
            (CACHE_RO,),
            single=True,
            copy_bytes_per_file=VIEW_BYTES,
            resources=Resources("100m", "384Mi", "1", "768Mi"),
        ),
    ),
    StageSpec(
        "indexer",
        "Keep the status index current.",
        _indexer,
        help="""Follow files.state into the status index ([status] index_path), which `terra-xfer status`,
        `report` and `up` answer from: every file's last record, history included, for the site's
        lifetime. Kept current, a question reads only the last seconds of files.state; a lost
        index is rebuilt from the start of the topic (/readyz says how far).

        \b
        Examples:
          terra-xfer indexer --config site.toml
          kubectl exec statefulset/terra-xfer-indexer -- terra-xfer status PATH
        """,
        # One writer is enough: status and report write beside it safely, and a second replica
        # would only repeat its work.
        # 245-262 MB at its peak over a million files (337 in a shorter run): a step's records.
        deployment=Deployment(
            single=True,
            copy_bytes_per_file=STATUS_INDEX_BYTES,
            copy_keeps_history=True,
            resources=Resources("100m", "384Mi", "1", "768Mi"),
        ),
    ),
)
SPECS: Mapping[str, StageSpec] = {s.name: s for s in STAGES}


def spec(name: str) -> StageSpec:
    """The entry of the stage called ``name``."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"no stage called {name!r}; stages: {', '.join(SPECS)}") from None


def running(config: Config) -> list[StageSpec]:
    """The stages ``up`` runs under ``config``, in start order."""
    return [s for s in STAGES if s.runs_when(config)]


def consumers() -> Iterator[StageSpec]:
    """The stages that consume, each as its own consumer group."""
    return (s for s in STAGES if s.group is not None)


def deployed(component: str = "") -> list[StageSpec]:
    """The stages of a Kubernetes kustomization: the base (``""``) or a named component."""
    return [s for s in STAGES if s.deployment is not None and s.deployment.component == component]
