"""Configuration: file, environment overrides, secrets from the environment only, clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from terra_xfer.config import DEFAULT_WHITELIST, Secret, env_names, load, unknown_env
from terra_xfer.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "terra-xfer.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_documented_ones() -> None:
    cfg = load(env={})
    assert cfg.batcher.max_files == 500 and cfg.batcher.max_wait_s == 30
    assert cfg.sweeper.min_age_s == 172800 and cfg.sweeper.interval_s == 86400
    assert cfg.gantry.whitelist == DEFAULT_WHITELIST and cfg.gantry.timezone == "America/Phoenix"
    assert cfg.transfer.backend == "local" and cfg.catalog.backend == "local"
    assert cfg.topic("files.arrived") == "terra.files.arrived"


def test_file_values_and_relative_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[kafka]
bootstrap_servers = "k:9092"
partitions = 12
[gantry]
cache_root = "cache"
whitelist = ["MAC/"]
[transfer]
backend = "globus"
[transfer.globus]
client_id = "abc"
[catalog.clowder]
url = "https://clowder.example"
""",
    )
    cfg = load(path, env={})
    assert cfg.kafka.partitions == 12 and cfg.kafka.bootstrap_servers == "k:9092"
    assert cfg.gantry.cache_root == tmp_path / "cache"
    assert cfg.gantry.whitelist == ("MAC/",)
    assert cfg.transfer.backend == "globus" and cfg.transfer.globus.client_id == "abc"
    assert cfg.catalog.clowder.url == "https://clowder.example"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[batcher]\nmax_files = 100\n")
    env = {
        "TERRA_XFER_BATCHER_MAX_FILES": "7",
        "TERRA_XFER_DELETER_DRY_RUN": "yes",
        "TERRA_XFER_GANTRY_WHITELIST": "MAC/, LemnaTec/MovingSensor/",
        "TERRA_XFER_TRANSFER_GLOBUS_CLIENT_ID": "id-from-env",
    }
    cfg = load(path, env=env)
    assert cfg.batcher.max_files == 7
    assert cfg.deleter.dry_run is True
    assert cfg.gantry.whitelist == ("MAC/", "LemnaTec/MovingSensor/")
    assert cfg.transfer.globus.client_id == "id-from-env"


def test_secrets_come_from_the_environment_and_never_show() -> None:
    env = {"TERRA_XFER_GLOBUS_CLIENT_SECRET": "s3cret-g", "TERRA_XFER_CLOWDER_KEY": "s3cret-c"}
    cfg = load(env=env)
    secret = cfg.transfer.globus.client_secret
    assert isinstance(secret, Secret) and secret.reveal() == "s3cret-g"
    assert cfg.catalog.clowder.key is not None and cfg.catalog.clowder.key.reveal() == "s3cret-c"
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg)


def test_a_secret_in_the_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[transfer.globus]\nclient_secret = "oops"\n')
    with pytest.raises(ConfigError, match="TERRA_XFER_GLOBUS_CLIENT_SECRET"):
        load(path, env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[batcher]\nmax_file = 3\n",
            "unknown key 'max_file' in \\[batcher\\]; did you mean 'max_files'",
        ),
        ("[batcher]\ncolour = 3\n", "unknown key 'colour' in \\[batcher\\]$"),
        ("[batcher]\nmax_files = 'many'\n", "batcher.max_files .* must be a number"),
        ("[batcher]\nmax_files = 2.5\n", "batcher.max_files .* whole number"),
        ("[batcher]\nmax_wait_s = -1\n", "batcher.max_wait_s .* negative"),
        ("[transfer]\nbackend = 'ftp'\n", "transfer.backend .* one of 'local', 'globus'"),
        ("[deleter]\nenabled = 'no'\n", "deleter.enabled .* true or false"),
        ("[gantry]\nwhitelist = 'MAC/'\n", "gantry.whitelist .* list of strings"),
        ("batcher = 3\n", "batcher must be a table"),
        ("[kafka\n", "not valid TOML"),
        ("[kafka]\npartitions = 0\n", "kafka.partitions in the config file must be at least 1"),
        ("[batcher]\nmax_bytes = 0\n", "batcher.max_bytes in the config file must be at least 1"),
        ("[transfer]\nbackend = 'record'\n", "copies nothing .* set \\[deleter\\] dry_run = true"),
    ],
)
def test_bad_files_get_one_clear_sentence(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text), env={})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="TERRA_XFER_BATCHER_MAX_FILES must be a number"):
        load(env={"TERRA_XFER_BATCHER_MAX_FILES": "lots"})


def test_no_partitions_from_the_environment_is_refused_too() -> None:
    with pytest.raises(ConfigError, match="TERRA_XFER_KAFKA_PARTITIONS must be at least 1, not 0"):
        load(env={"TERRA_XFER_KAFKA_PARTITIONS": "0"})
    assert load(env={"TERRA_XFER_KAFKA_PARTITIONS": "1"}).kafka.partitions == 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml", env={})


def test_every_secret_of_every_section_is_redacted_from_logs() -> None:
    from terra_xfer.logs import secrets_of

    env = {
        "TERRA_XFER_GLOBUS_CLIENT_SECRET": "g-secret",
        "TERRA_XFER_CLOWDER_KEY": "c-key",
        "TERRA_XFER_KAFKA_SASL_PASSWORD": "k-pass",
        "TERRA_XFER_DANFORTH_PASSWORD": "d-pass",
    }
    assert sorted(secrets_of(load(None, env))) == ["c-key", "d-pass", "g-secret", "k-pass"]


def test_an_unknown_variable_is_told_once_with_the_setting_it_is_near(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"TERRA_XFER_KAFKA_PARTITON": "4", "TERRA_XFER_COLOUR": "blue", "TERRA_XFER_CONFIG": ""}
    assert unknown_env(env) == {
        "TERRA_XFER_COLOUR": "",
        "TERRA_XFER_KAFKA_PARTITON": "; did you mean TERRA_XFER_KAFKA_PARTITIONS?",
    }
    with caplog.at_level(logging.WARNING):
        assert load(env=env).kafka.partitions == load(env={}).kafka.partitions
        load(env=env)
    told = [r.getMessage() for r in caplog.records if "PARTITON" in r.getMessage()]
    assert told == [
        "TERRA_XFER_KAFKA_PARTITON is not a terra-xfer setting and is ignored; "
        "did you mean TERRA_XFER_KAFKA_PARTITIONS?"
    ]


def test_the_known_variables_include_secrets_and_explicit_names() -> None:
    assert {"TERRA_XFER_INSTANCE_ID", "TERRA_XFER_CLOWDER_KEY", "TERRA_XFER_METRICS_ADDRESS"} <= (
        env_names()
    )
