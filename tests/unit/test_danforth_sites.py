"""Danforth files in the consumers: their cache root, transfer source, deletion and catalog entry."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from consumers.batch_records import source_of
from consumers.catalog.base import CatalogNameError
from consumers.catalog.entries import danforth_item
from consumers.catalog.naming import danforth_names
from terra_xfer.config import Config
from terra_xfer.errors import PermanentError
from terra_xfer.sites.cache import SiteFile, Sites, site_of
from terra_xfer.sites.gantry import PathRejected

SNAPSHOT = {"snapshot_id": 7, "timestamp": "2017-06-28 23:48:28.435", "complete": True}
IMAGE = "VIS_SV_90_z1_h1_g0_e82_1090617_0.png"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    base = Config()
    return dataclasses.replace(
        base,
        gantry=dataclasses.replace(base.gantry, cache_root=tmp_path / "gantry"),
        danforth=dataclasses.replace(base.danforth, cache_root=tmp_path / "danforth"),
    )


def event(name: str, **extra: object) -> dict[str, object]:
    rel = f"snapshot7/{name}"
    return {
        "key": f"danforth/{rel}",
        "path": rel,
        "dest_path": f"sites/danforth/raw_data/ddpscIndoorSuite/{rel}",
        "size": 10,
        "checksum": "abc",
        "dataset_metadata": json.dumps(SNAPSHOT),
        "file_metadata": None,
        **extra,
    }


def test_each_site_has_its_cache(config: Config, tmp_path: Path) -> None:
    sites = Sites(config)
    found = sites.site_file("danforth/snapshot7/a.png", "snapshot7/a.png")
    assert found == SiteFile(tmp_path / "danforth", "snapshot7/a.png", 0, "ddpscIndoorSuite")
    rel = "LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916/x_left.bin"
    gantry = sites.site_file(f"ua-mac/{rel}", rel)
    assert isinstance(gantry, SiteFile) and gantry.root == tmp_path / "gantry"
    assert gantry.keep_depth == 3 and gantry.sensor == "stereoTop"
    assert isinstance(sites.site_file("danforth/x/y.png", "x/y.png"), PathRejected)
    assert site_of("danforth/snapshot7/a.png") == "danforth"
    assert sites.sensor("ua-mac/MAC/none", "MAC/none") is None


def test_transfer_source_by_site(config: Config, tmp_path: Path) -> None:
    assert source_of(config, "snapshot7/a.png", "danforth") == str(
        tmp_path / "danforth/snapshot7/a.png"
    )
    assert source_of(config, "MAC/x", "ua-mac") == str(tmp_path / "gantry/MAC/x")
    globus = dataclasses.replace(
        config,
        transfer=dataclasses.replace(
            config.transfer,
            backend="globus",
            globus=dataclasses.replace(config.transfer.globus, source_base="/~/cache"),
        ),
    )
    assert source_of(globus, "MAC/x", "ua-mac") == "/~/cache/MAC/x"


def test_danforth_dataset_names() -> None:
    names = danforth_names("2017-06-28 23:48:28.435", IMAGE)
    assert names.dataset_name == "ddpscIndoorSuite - 2017-06-28__23-48-28-435"
    assert names.collections == (
        "ddpscIndoorSuite",
        "ddpscIndoorSuite - 2017",
        "ddpscIndoorSuite - 2017-06",
        "ddpscIndoorSuite - 2017-06-28",
    )
    assert not names.as_dataset_metadata
    assert danforth_names("2017-06-28 23:48:28.435", "snapshot7_metadata.json").as_dataset_metadata
    with pytest.raises(CatalogNameError, match="not YYYY-MM-DD"):
        danforth_names("2017-06-28T23:48:28", IMAGE)


def test_an_image_carries_both_metadata_to_the_catalog() -> None:
    item = danforth_item(event(IMAGE, file_metadata='{"frame": 0}'), Path("/dest"))
    assert item.dataset_name == "ddpscIndoorSuite - 2017-06-28__23-48-28-435"
    assert item.dataset_metadata == SNAPSHOT and item.file_metadata == {"frame": 0}
    assert item.file_path == f"/dest/sites/danforth/raw_data/ddpscIndoorSuite/snapshot7/{IMAGE}"
    assert (item.file_name, item.size, item.checksum) == (IMAGE, 10, "abc")
    assert not item.as_dataset_metadata


def test_the_metadata_file_attaches_what_its_event_carries() -> None:
    item = danforth_item(event("snapshot7_metadata.json"), Path("/dest"))
    assert item.as_dataset_metadata and item.dataset_metadata == SNAPSHOT


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"dataset_metadata": None}, "no snapshot metadata"),
        ({"dataset_metadata": "{"}, "dataset_metadata is not JSON"),
        ({"dataset_metadata": "[1]"}, "not a JSON object"),
        ({"dataset_metadata": '{"snapshot_id": 7}'}, "no timestamp"),
        ({"file_metadata": "7"}, "file_metadata is not a JSON object"),
    ],
)
def test_unusable_metadata_is_a_permanent_error(extra: dict[str, object], words: str) -> None:
    with pytest.raises(PermanentError, match=words):
        danforth_item(event(IMAGE, **extra), Path("/dest"))
