"""Path rules: log-root mapping, safety, whitelist, sensor/date/timestamp and destination rewrite."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terra_xfer.errors import ConfigError
from terra_xfer.sites.gantry import (
    CachePath,
    PathClassifier,
    PathRejected,
    PathRules,
    RejectKind,
    cache_path,
    classify_logged,
    matching_names,
    matching_paths,
    rel_from_logged,
)

RULES = PathRules()
UUID = "ef0b016f-3069-4f00-90fb-95475cb581f6"


def accepted(result: CachePath | PathRejected) -> CachePath:
    assert isinstance(result, CachePath), result
    return result


def rejected(result: CachePath | PathRejected | str, kind: RejectKind) -> PathRejected:
    assert isinstance(result, PathRejected), result
    assert result.kind is kind, result
    return result


def test_moving_sensor_file_maps_to_the_original_destination() -> None:
    logged = f"/gantry_data/LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916/{UUID}_left.bin"
    path = accepted(classify_logged(logged, RULES))
    assert path == CachePath(
        rel=f"LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916/{UUID}_left.bin",
        site="ua-mac",
        sensor="stereoTop",
        date="2017-08-24",
        timestamp="2017-08-24__12-40-01-916",
        dest_rel=f"sites/ua-mac/raw_data/stereoTop/2017-08-24/2017-08-24__12-40-01-916/{UUID}_left.bin",
    )


def test_environment_logger_file_has_no_timestamp_directory() -> None:
    rel = "LemnaTec/EnvironmentLogger/2016-04-05/2016-04-05_12-34-58_enviromentlogger.json"
    path = accepted(cache_path(rel, RULES))
    assert path.sensor == "EnvironmentLogger"
    assert path.date == "2016-04-05"
    assert path.timestamp is None
    assert path.dest_rel == (
        "sites/ua-mac/raw_data/EnvironmentLogger/2016-04-05/"
        "2016-04-05_12-34-58_enviromentlogger.json"
    )


@pytest.mark.parametrize(
    ("rel", "sensor", "dest"),
    [
        (
            "MAC/weather/2016-04-05/WeatherStation_SecData_2016_04_05_1200.dat",
            "weather",
            "sites/ua-mac/raw_data/weather/2016-04-05/WeatherStation_SecData_2016_04_05_1200.dat",
        ),
        (
            "MAC/lightning/2016-06-29/LW110_ALARM1min.dat",
            "lightning",
            "sites/ua-mac/raw_data/lightning/2016-06-29/LW110_ALARM1min.dat",
        ),
        (
            "LemnaTec/3DScannerRawDataTmp/scanner3DTop/2017-08-24/2017-08-24__12-40-01-916/a.ply",
            "scanner3DTop",
            "sites/ua-mac/raw_data/scanner3DTop/2017-08-24/2017-08-24__12-40-01-916/a.ply",
        ),
        (
            "LemnaTec/EnviromentLogger/2016-02-01/2016-02-01_00-00-00_enviromentlogger.json",
            "EnvironmentLogger",
            "sites/ua-mac/raw_data/EnviromentLogger/2016-02-01/2016-02-01_00-00-00_enviromentlogger.json",
        ),
    ],
)
def test_each_whitelisted_area_is_rewritten(rel: str, sensor: str, dest: str) -> None:
    rules = PathRules(whitelist=(*RULES.whitelist, "LemnaTec/EnviromentLogger/"))
    path = accepted(cache_path(rel, rules))
    assert (path.sensor, path.dest_rel) == (sensor, dest)


def test_reprocessing_directories_are_dropped() -> None:
    rules = PathRules(whitelist=("LemnaTec/MovingSensor.reproc2016-8-18/",))
    rel = "LemnaTec/MovingSensor.reproc2016-8-18/scanner3DTop/2016-08-22/2016-08-22__15-13-01-672/x.png"
    path = accepted(cache_path(rel, rules))
    assert path.sensor == "scanner3DTop"
    assert path.timestamp == "2016-08-22__15-13-01-672"
    assert path.dest_rel == (
        "sites/ua-mac/raw_data/scanner3DTop/2016-08-22/2016-08-22__15-13-01-672/x.png"
    )


def test_other_3d_scanner_tmp_directories_match_the_pattern() -> None:
    rules = PathRules(whitelist=("LemnaTec/3DScannerRawDataLowerOnEastSideTmp/",))
    rel = "LemnaTec/3DScannerRawDataLowerOnEastSideTmp/scanner3DLowerOnEastSide/2016-09-01/f.ply"
    assert accepted(cache_path(rel, rules)).dest_rel == (
        "sites/ua-mac/raw_data/scanner3DLowerOnEastSide/2016-09-01/f.ply"
    )


def test_site_and_destination_prefix_are_configurable() -> None:
    rules = PathRules(site="ksu", dest_prefix="{site}/incoming")
    path = accepted(cache_path("MAC/weather/2016-04-05/w.dat", rules))
    assert (path.site, path.dest_rel) == ("ksu", "ksu/incoming/weather/2016-04-05/w.dat")


@pytest.mark.parametrize(
    "rel",
    ["ScriptBackup/2016-04-05/backup.sh", "LemnaTec/Other/2016-04-05/x", "MACHINE/x", "MAC"],
)
def test_paths_outside_the_whitelist_are_counted_not_dead_lettered(rel: str) -> None:
    result = rejected(cache_path(rel, RULES), RejectKind.NOT_WHITELISTED)
    assert not result.dead_letter


@pytest.mark.parametrize(
    "rel",
    [
        "LemnaTec/MovingSensor/stereoTop/2017-08-24/.x_left.bin.part",
        "LemnaTec/MovingSensor/.hidden/2017-08-24/x.bin",
        "MAC/weather/2016-04-05/.DS_Store",
    ],
)
def test_hidden_components_are_skipped(rel: str) -> None:
    assert not rejected(cache_path(rel, RULES), RejectKind.HIDDEN).dead_letter


@pytest.mark.parametrize(
    "rel",
    [
        "LemnaTec/MovingSensor/../../etc/passwd",
        "MAC/../MAC/weather/2016-04-05/w.dat",
        "/etc/passwd",
        "MAC/weather/2016-04-05/w\0.dat",
        "MAC/weather/2016-04-05/",
        "",
    ],
)
def test_unsafe_relative_paths_are_dead_lettered(rel: str) -> None:
    assert rejected(cache_path(rel, RULES), RejectKind.UNSAFE).dead_letter


@pytest.mark.parametrize(
    "rel",
    [
        "MAC/weather/w.dat",
        "MAC/weather/not-a-date/w.dat",
        "MAC/weather/2016-02-30/w.dat",
        "MAC/w.dat",
    ],
)
def test_whitelisted_paths_without_the_layout_are_unrecognised(rel: str) -> None:
    assert rejected(cache_path(rel, RULES), RejectKind.UNRECOGNISED).dead_letter


def test_redundant_separators_and_dots_are_normalised() -> None:
    path = accepted(cache_path("MAC//weather/./2016-04-05/w.dat", RULES))
    assert path.rel == "MAC/weather/2016-04-05/w.dat"


@pytest.mark.parametrize(
    ("logged", "rules", "chrooted", "rel"),
    [
        ("/gantry_data/MAC/weather/2016-04-05/w.dat", RULES, False, "MAC/weather/2016-04-05/w.dat"),
        ("/MAC/weather/2016-04-05/w.dat", RULES, True, "MAC/weather/2016-04-05/w.dat"),
        (
            "/home/gantry/MAC/w.dat",
            PathRules(cache_root="/mnt/cache", log_root="/home/gantry"),
            False,
            "MAC/w.dat",
        ),
        (
            "/MAC/w.dat",
            PathRules(log_root="/srv/ftp", chroot_root="/srv/ftp/anon"),
            True,
            "anon/MAC/w.dat",
        ),
        (b"/gantry_data/MAC/caf\xe9.dat", RULES, False, "MAC/caf\udce9.dat"),
    ],
)
def test_logged_paths_map_onto_the_cache_root(
    logged: str | bytes, rules: PathRules, chrooted: bool, rel: str
) -> None:
    assert rel_from_logged(logged, rules, chrooted) == rel


@pytest.mark.parametrize(
    ("logged", "chrooted"),
    [
        ("/etc/passwd", False),
        ("/gantry_data", False),
        ("/gantry_dataX/MAC/w.dat", False),
        ("/gantry_data/../etc/passwd", False),
        ("/../gantry_data/MAC/w.dat", True),
        ("gantry_data/MAC/w.dat", False),
        ("/gantry_data/MAC/weather/", False),
        ("/gantry_data/MAC/\0", False),
    ],
)
def test_logged_paths_escaping_the_root_are_unsafe(logged: str, chrooted: bool) -> None:
    rejected(rel_from_logged(logged, RULES, chrooted), RejectKind.UNSAFE)


def test_classify_logged_runs_both_steps() -> None:
    rejected(classify_logged("/gantry_data/ScriptBackup/x.sh", RULES), RejectKind.NOT_WHITELISTED)
    rejected(classify_logged("/elsewhere/MAC/x.sh", RULES), RejectKind.UNSAFE)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cache_root": "relative"}, "cache_root"),
        ({"log_root": "/a/../b"}, "log_root"),
        ({"log_root": "/srv/ftp", "chroot_root": "/other"}, "chroot_root"),
        ({"site": "a/b"}, "site"),
        ({"whitelist": ("MAC",)}, "whitelist"),
        ({"whitelist": ("/MAC/",)}, "whitelist"),
        ({"dest_prefix": "sites/{sitename}"}, "dest_prefix"),
        ({"dest_prefix": "/abs/{site}"}, "dest_prefix"),
    ],
)
def test_invalid_rules_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PathRules(**kwargs)  # type: ignore[arg-type]


def test_rules_are_frozen_values() -> None:
    assert PathRules() == PathRules()
    with pytest.raises(AttributeError):
        RULES.site = "x"  # type: ignore[misc]


def test_vsftpd_underscore_may_stand_for_a_space_or_itself() -> None:
    listing = [b"my file.txt", b"my_file.txt", b"my-file.txt", b"my file.txt.part"]
    assert matching_names(b"my_file.txt", listing) == [b"my_file.txt", b"my file.txt"]


def test_vsftpd_question_mark_stands_for_any_single_byte() -> None:
    listing = ["caf\u00e9.dat".encode(), b"caf\xe9.dat", b"cafe.dat", b"caf??.dat"]
    assert matching_names(b"caf??.dat", listing) == [b"caf??.dat", "caf\u00e9.dat".encode()]


def test_no_match_gives_an_empty_list() -> None:
    assert matching_names(b"a_b", [b"ab", b"a__b"]) == []


def test_matching_paths_resolves_each_component() -> None:
    tree = {
        b"": [b"MAC"],
        b"MAC": [b"my dir", b"my_dir"],
        b"MAC/my dir": [b"a b.dat"],
        b"MAC/my_dir": [b"a_b.dat", b"other"],
    }

    def listdir(rel: bytes) -> list[bytes]:
        if rel not in tree:
            raise FileNotFoundError(rel)
        return tree[rel]

    found = matching_paths(b"MAC/my_dir/a_b.dat", listdir)
    assert found == [b"MAC/my_dir/a_b.dat", b"MAC/my dir/a b.dat"]
    assert matching_paths(b"MAC/missing_dir/x", listdir) == []
    assert matching_paths(b"nowhere/a_b", listdir) == []
    assert matching_paths(b"MAC//my_dir/a_b.dat", listdir)[0] == b"MAC/my_dir/a_b.dat"
    assert matching_paths(b"MAC/my_dir/a_b.dat", listdir, limit=1) == [b"MAC/my_dir/a_b.dat"]


_PARTS = st.sampled_from(
    [
        "gantry_data",
        "LemnaTec",
        "MovingSensor",
        "MovingSensor.reproc2",
        "stereoTop",
        "MAC",
        "EnvironmentLogger",
        "3DScannerRawDataTmp",
        "ScriptBackup",
        "2017-08-24",
        "2017-02-30",
        "2017-08-24__12-40-01-916",
        ".",
        "..",
        "",
        ".hidden",
        "a b",
        "x_left.bin",
        "caf\u00e9",
        "\udcff",
        "nul\0",
        "f",
    ]
)


_BASES = st.sampled_from(
    [
        "",
        "gantry_data",
        "gantry_data/LemnaTec/MovingSensor/stereoTop/2017-08-24",
        "gantry_data/LemnaTec/MovingSensor.reproc2/VNIR/2017-08-24/2017-08-24__12-40-01-916",
        "gantry_data/LemnaTec/3DScannerRawDataTmp/scanner3DTop/2017-08-24",
        "gantry_data/LemnaTec/EnvironmentLogger/2017-08-24",
        "gantry_data/MAC/weather/2017-08-24",
        "gantry_data/ScriptBackup",
        "LemnaTec/MovingSensor/stereoTop/2017-08-24",
    ]
)


@settings(max_examples=400)
@given(
    base=_BASES,
    parts=st.lists(_PARTS, min_size=0, max_size=4),
    absolute=st.booleans(),
    trailing=st.booleans(),
    chrooted=st.booleans(),
)
def test_directory_shortcut_classifies_as_the_full_rules(
    base: str, parts: list[str], absolute: bool, trailing: bool, chrooted: bool
) -> None:
    rules = PathRules(cache_root="/cache", log_root="/gantry_data")
    classify = PathClassifier(rules)
    logged = ("/" if absolute else "") + "/".join([base, *parts]) + ("/" if trailing else "")
    raw = logged.encode("utf-8", "surrogateescape")
    # Twice: the second answer comes from the directory cache.
    assert classify(raw, chrooted) == classify_logged(raw, rules, chrooted)
    assert classify(raw, chrooted) == classify_logged(raw, rules, chrooted)


def test_directory_shortcut_names_each_file_of_a_directory() -> None:
    rules = PathRules(cache_root="/cache", log_root="/gantry_data")
    classify = PathClassifier(rules)
    stem = b"/gantry_data/LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916/"
    first, second = classify(stem + b"a_left.bin"), classify(stem + b"b_right.bin")
    assert isinstance(first, CachePath) and isinstance(second, CachePath)
    assert first.rel.endswith("/a_left.bin") and second.dest_rel.endswith("/b_right.bin")
    assert second == classify_logged(stem + b"b_right.bin", rules)
