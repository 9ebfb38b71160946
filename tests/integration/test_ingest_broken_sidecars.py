"""A gantry night with broken ``*_metadata.json`` sidecars, through the real broker to DONE.

Three captures' sidecars hold bytes that are no JSON object: one cut short mid-value, one an HTML
error page, one not UTF-8. Each is still catalogued, as an ordinary file of its capture's dataset
with one ``unreadable_metadata`` note on the dataset, and reaches DONE with a ``warning`` naming
the reason in files.state; ``status`` shows the warnings and ``report`` counts exactly these files.
The good sidecars are attached to their datasets as metadata, as always, and carry no warning.
"""

from __future__ import annotations

import json
import os
import posixpath
import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from consumers.catalog.local import LocalCatalog
from consumers.catalog.naming import METADATA_SUFFIX, clean_metadata_keys
from producers.gantry.night import log_line, uploads, write_upload
from terra_xfer.cli import cli
from terra_xfer.config import Config
from terra_xfer.topics import create_topics
from tests.integration.test_pipeline_done import Pipeline
from tests.kafka_read import env_for, read_all
from tests.pipeline import START, gantry_config, run_until

pytestmark = pytest.mark.broker
UPLOADS = 48
SEED = 23
NOTE = "unreadable_metadata"
HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body>\r\n"
    b"</html>\r\n"
)
# How each broken sidecar is made from the document the gantry wrote, and the start of the reason
# its warning and its dataset's note must give.
BREAKERS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (
        lambda doc: doc[: doc.index(b'"auto"') + 3],  # an upload cut short mid-value
        "not JSON: Unterminated string starting at",
    ),
    "html": (lambda doc: HTML, "not JSON: Expecting value: line 1 column 1 (char 0)"),
    "latin-1": (
        lambda doc: doc.replace(b'"auto"', b'"auto\xe9"'),  # é written as Latin-1
        "not UTF-8: 'utf-8' codec can't decode byte 0xe9",
    ),
}


@pytest.fixture
def config(pipeline_config: Config) -> Iterator[Config]:
    cfg = gantry_config(pipeline_config)
    create_topics(cfg)
    yield cfg


def write_night_with_broken_sidecars(config: Config) -> tuple[list[str], dict[str, str]]:
    """A night as :func:`tests.pipeline.write_night` writes it, the first sidecars of the night
    broken one way each (before they are logged, so each is logged with the size it has).

    Returns the shipped relative paths and, for each broken sidecar, how it was broken.
    """
    rng = random.Random(SEED)
    cache = config.gantry.cache_root
    cache.mkdir(parents=True, exist_ok=True)
    config.gantry.xferlog.parent.mkdir(parents=True, exist_ok=True)
    shipped: list[str] = []
    broken: dict[str, str] = {}
    left = iter(BREAKERS)
    with config.gantry.xferlog.open("ab") as log:
        for up in uploads(START, UPLOADS, seed=SEED, size=64):
            write_upload(cache, up, rng)
            path = cache / up.rel
            if up.whitelisted and up.rel.endswith(METADATA_SUFFIX):
                kind = next(left, None)
                if kind is not None:
                    path.write_bytes(BREAKERS[kind][0](path.read_bytes()))
                    os.utime(path, (up.when.timestamp(), up.when.timestamp()))
                    broken[up.rel] = kind
            log.write(log_line(up, size=path.stat().st_size))
            if up.whitelisted:
                shipped.append(up.rel)
    return shipped, broken


def settled(states: dict[str, dict[str, Any]], keys: set[str]) -> bool:
    """Every file DONE, or stopped where it would stay without a person: quarantined, missing, or
    deleted from the cache with a final ingest refusal (``ingest: <reason>``, not retrying). The
    test then fails at once on such a file instead of waiting out the deadline for DONE."""

    def stopped(record: dict[str, Any] | None) -> bool:
        if record is None:
            return False
        if record["state"] in ("DONE", "QUARANTINED", "MISSING"):
            return True
        reason = record.get("reason") or ""
        refused = reason.startswith("ingest: ") and not reason.endswith("retrying)")
        return refused and bool(record["deleted"])

    return all(stopped(states.get(k)) for k in keys)


def test_broken_sidecars_reach_done_with_a_warning_and_a_note_on_their_dataset(
    config: Config,
) -> None:
    shipped, broken = write_night_with_broken_sidecars(config)
    cache = config.gantry.cache_root
    sidecars = {rel for rel in shipped if rel.endswith(METADATA_SUFFIX)}
    good = sidecars - set(broken)
    assert sorted(broken.values()) == sorted(BREAKERS) and len(good) >= 2, "night too small"
    contents = {rel: (cache / rel).read_bytes() for rel in sidecars}  # the cache is emptied
    keys = {f"ua-mac/{rel}" for rel in shipped}
    broken_keys = {f"ua-mac/{rel}" for rel in broken}

    pipeline = Pipeline(config)
    try:
        run_until(pipeline.stages, lambda: settled(pipeline.states(), keys), timeout_s=300)
    finally:
        pipeline.close()

    # files.state: every file DONE; the broken sidecars, and only they, with a warning.
    states = pipeline.states()
    assert {k: states[k]["state"] for k in keys} == dict.fromkeys(keys, "DONE")
    assert {k for k in keys if states[k]["warning"]} == broken_keys
    assert not any(states[k]["reason"] for k in keys)
    ingested = [v for _, v in read_all(config.kafka, config.topic("files.ingested"))]
    assert {v["key"] for v in ingested if v.get("warning")} == broken_keys

    # The catalog: each broken sidecar a file of its capture's dataset, which has one note.
    datasets: dict[str, str] = {}  # file name -> its dataset (every file name is unique here)
    catalog = LocalCatalog(config.catalog.path)
    try:
        filed: Counter[str] = Counter()
        for name in catalog.datasets():
            for file_name in catalog.files_in(name):
                filed[file_name] += 1
                datasets[file_name] = name
        shipped_files = Counter(posixpath.basename(rel) for rel in shipped if rel not in good)
        assert filed == shipped_files  # the broken sidecars are files; the good ones are not
        notes = {
            name: [doc for doc in catalog.dataset_metadata(name) if NOTE in doc]
            for name in catalog.datasets()
        }
        reasons: dict[str, str] = {}
        for rel, kind in broken.items():
            name = posixpath.basename(rel)
            dataset = datasets[name]
            siblings = siblings_of(rel, shipped)
            assert siblings, rel
            assert catalog.files_in(dataset) == sorted([name, *siblings]), rel  # with its capture
            assert len(notes[dataset]) == 1, (rel, notes[dataset])
            note = notes[dataset][0]
            assert note[NOTE]["file"] == name
            assert note[NOTE]["reason"].startswith(BREAKERS[kind][1]), note
            assert catalog.dataset_metadata(dataset) == [note]  # nothing else was attached
            reasons[f"ua-mac/{rel}"] = note[NOTE]["reason"]
        assert sum(map(len, notes.values())) == len(broken)
        for rel in good:
            dataset = datasets[siblings_of(rel, shipped)[0]]
            assert catalog.dataset_metadata(dataset) == [
                clean_metadata_keys(json.loads(contents[rel]))
            ], rel
    finally:
        catalog.close()

    # The warning names the file and the reason its dataset's note gives.
    for key, reason in reasons.items():
        name = posixpath.basename(key)
        assert states[key]["warning"] == (
            f"metadata {name} could not be read ({reason}); registered as a file of its dataset"
        )

    # status --all --json shows the warnings; status PATH too; report --json counts exactly these.
    env = env_for(config)
    runner = CliRunner()
    listed = runner.invoke(cli, ["status", "--all", "--json"], env=env, catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    rows = {r["key"]: r for r in json.loads(listed.output)}
    assert set(rows) == keys
    assert {k: r["state"] for k, r in rows.items()} == dict.fromkeys(keys, "DONE")
    assert {k: r["warning"] for k, r in rows.items() if r["warning"]} == {
        k: states[k]["warning"] for k in broken_keys
    }
    one = sorted(broken)[0]
    shown = runner.invoke(cli, ["status", one], env=env, catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert f"warning {states[f'ua-mac/{one}']['warning']}" in shown.output
    report = runner.invoke(cli, ["report", "--json"], env=env, catch_exceptions=False)
    assert report.exit_code == 0, report.output
    doc = json.loads(report.output)
    assert doc["warnings"] == {
        "files": len(broken),
        "bytes": sum(len(contents[rel]) for rel in broken),
    }
    assert sum(line["files_ingested"] for line in doc["files"]) == len(shipped)
    assert doc["dead_letters"] == {}


def siblings_of(rel: str, shipped: list[str]) -> list[str]:
    """The other files shipped from ``rel``'s capture directory."""
    folder = posixpath.dirname(rel)
    return [posixpath.basename(r) for r in shipped if r != rel and posixpath.dirname(r) == folder]
