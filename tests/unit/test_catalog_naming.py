"""Catalog names and metadata cleaning, as the original TERRA-REF pipeline named things."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.catalog.base import CatalogNameError
from consumers.catalog.naming import (
    CLOWDER_METADATA_CONTEXT,
    UAMAC_VOCAB,
    catalog_names,
    clean_metadata_keys,
    collection_chain,
    content_hash,
    dataset_name,
    file_metadata_part,
    is_dataset_metadata,
    jsonld_document,
)
from terra_xfer.errors import PermanentError

LEFT = "ef0b016f-3069-4f00-90fb-95475cb581f6_left.bin"


def test_capture_dataset_is_named_for_its_timestamp_directory() -> None:
    names = catalog_names("stereoTop", "2017-08-24", "2017-08-24__12-40-01-916", LEFT)

    assert names.dataset_name == "stereoTop - 2017-08-24__12-40-01-916"
    assert names.collections == (
        "stereoTop",
        "stereoTop - 2017",
        "stereoTop - 2017-08",
        "stereoTop - 2017-08-24",
    )
    assert names.as_dataset_metadata is False


@pytest.mark.parametrize("sensor", ["EnvironmentLogger", "weather"])
@pytest.mark.parametrize("timestamp_dir", [None, ""])
def test_sensors_without_timestamp_dir_get_one_dataset_per_day(
    sensor: str, timestamp_dir: str | None
) -> None:
    assert dataset_name(sensor, "2016-04-05", timestamp_dir) == f"{sensor} - 2016-04-05"


def test_collection_chain_runs_sensor_year_month_day() -> None:
    assert collection_chain("VNIR", "2018-01-09") == (
        "VNIR",
        "VNIR - 2018",
        "VNIR - 2018-01",
        "VNIR - 2018-01-09",
    )


def test_metadata_json_is_marked_as_dataset_metadata() -> None:
    names = catalog_names(
        "stereoTop", "2017-08-24", "2017-08-24__12-40-01-916", "ef0b_metadata.json"
    )

    assert names.as_dataset_metadata is True
    assert names.dataset_name == "stereoTop - 2017-08-24__12-40-01-916"


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("ef0b_metadata.json", True),
        ("x_metadata.json", True),
        ("_metadata.json", False),
        ("metadata.json", False),
        ("ef0b_metadata.json.bak", False),
        ("ef0b_metadata_cleaned.json", False),
        ("2016-04-05_12-34-58_enviromentlogger.json", False),
        (LEFT, False),
    ],
)
def test_is_dataset_metadata(file_name: str, expected: bool) -> None:
    assert is_dataset_metadata(file_name) is expected


@pytest.mark.parametrize("date", ["2017-8-24", "17-08-24", "2017-02-30", "2017-13-01", "", "x"])
def test_a_bad_date_is_a_permanent_naming_error(date: str) -> None:
    with pytest.raises(CatalogNameError, match="date"):
        catalog_names("stereoTop", date, None, LEFT)


@pytest.mark.parametrize("sensor", ["", "a/b", " stereoTop", "stereoTop\n"])
def test_a_bad_sensor_is_refused(sensor: str) -> None:
    with pytest.raises(CatalogNameError, match="sensor"):
        collection_chain(sensor, "2017-08-24")


def test_a_timestamp_dir_or_file_name_with_a_separator_is_refused() -> None:
    with pytest.raises(CatalogNameError, match="timestamp"):
        dataset_name("stereoTop", "2017-08-24", "2017-08-24/x")
    with pytest.raises(CatalogNameError, match="file name"):
        catalog_names("stereoTop", "2017-08-24", None, "a/b.bin")


def test_naming_errors_are_permanent() -> None:
    with pytest.raises(PermanentError):
        dataset_name("stereoTop", "yesterday", None)


def test_clean_replaces_dots_in_keys_at_every_depth_and_leaves_values() -> None:
    raw = {
        "lemnatec_measurement_metadata": {
            "gantry_system_variable_metadata": {"position x [m]": "205.0", "speed.x": 0.5},
            "sensor.fixed": [{"a.b": 1, "c": ["d.e"]}, 2.5, None],
        },
        "version.1": "1.0.0",
    }
    original = copy.deepcopy(raw)

    cleaned = clean_metadata_keys(raw)

    assert cleaned == {
        "lemnatec_measurement_metadata": {
            "gantry_system_variable_metadata": {"position x [m]": "205.0", "speed_x": 0.5},
            "sensor_fixed": [{"a_b": 1, "c": ["d.e"]}, 2.5, None],
        },
        "version_1": "1.0.0",
    }
    assert raw == original


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=20,
)


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k in value] + [k for v in value.values() for k in _keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


@given(json_values)
def test_cleaned_metadata_has_no_dotted_key_and_cleaning_twice_changes_nothing(value: Any) -> None:
    cleaned = clean_metadata_keys(value)

    assert not any("." in key for key in _keys(cleaned))
    assert clean_metadata_keys(cleaned) == cleaned
    assert json.loads(json.dumps(cleaned)) == cleaned


def test_content_hash_ignores_key_order_and_tells_content_apart() -> None:
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert content_hash({"a": 1}) != content_hash({"a": "1"})


def test_jsonld_document_has_the_original_context_agent_and_cleaned_content() -> None:
    agent = {"@type": "cat:user", "user_id": "https://clowder.example/api/users/abc"}

    doc = jsonld_document({"a.b": {"c.d": 1}}, agent)

    assert doc == {
        "@context": [CLOWDER_METADATA_CONTEXT, {"@vocab": UAMAC_VOCAB}],
        "content": {"a_b": {"c_d": 1}},
        "agent": agent,
    }


def test_file_metadata_part_is_context_plus_cleaned_content() -> None:
    part = file_metadata_part({"x.y": 1}, vocab="https://example.org/v#")

    assert part == {
        "@context": [CLOWDER_METADATA_CONTEXT, {"@vocab": "https://example.org/v#"}],
        "x_y": 1,
    }
