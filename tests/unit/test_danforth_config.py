"""The ``[danforth]`` configuration: file, environment, the password only from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.danforth.lemnatec import database_name
from terra_xfer.config import DEFAULT_CAMERAS, Secret, load
from terra_xfer.errors import ConfigError


def test_danforth_section_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "terra-xfer.toml"
    path.write_text(
        '[danforth]\ndsn = "host=lt dbname=LTSystem user=reader"\nblob_root = "blobs"\n'
        'cameras = ["VIS=8x6", "NIR=4x2"]\npoll_s = 2.5\n',
        encoding="utf-8",
    )
    env = {"TERRA_XFER_DANFORTH_PASSWORD": "s3cret", "TERRA_XFER_DANFORTH_CACHE_ROOT": "/dc"}
    d = load(path, env=env).danforth
    assert d.dsn == "host=lt dbname=LTSystem user=reader" and d.poll_s == 2.5
    assert d.blob_root == tmp_path / "blobs" and d.cache_root == Path("/dc")
    assert d.cameras == ("VIS=8x6", "NIR=4x2")
    assert d.password == Secret("s3cret") and "s3cret" not in repr(d)
    assert load(None, env={}).danforth.cameras == DEFAULT_CAMERAS


def test_the_password_is_refused_in_the_file_and_in_the_dsn(tmp_path: Path) -> None:
    path = tmp_path / "terra-xfer.toml"
    path.write_text('[danforth]\npassword = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="TERRA_XFER_DANFORTH_PASSWORD"):
        load(path, env={})
    with pytest.raises(ConfigError, match="must not hold the password"):
        database_name("host=lt dbname=LTSystem password=x")
    with pytest.raises(ConfigError, match="must not hold the password"):
        database_name("postgresql://reader:x@lt/LTSystem")


def test_the_dsn_names_the_database() -> None:
    assert database_name("postgresql://reader@lt:5432/LTSystem") == "LTSystem"
    with pytest.raises(ConfigError, match="must name the database"):
        database_name("host=lt user=reader")
    with pytest.raises(ConfigError, match="not a valid connection string"):
        database_name("host='unterminated")
