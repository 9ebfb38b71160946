"""The benchmark's compiled producer floor writes real FileArrived events, exactly once, that our
codec reads back with the same key, size and mtime the Python producer would give them: so its
figure measures the same per-line work, not a cheaper stand-in."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.producer import build_compiled_floor, compiled_floor, make_log
from terra_xfer.config import KafkaConfig
from tests.kafka_read import read_all


def test_the_compiled_floor_commits_one_decodable_event_per_upload(
    tmp_path: Path, kafka_config: KafkaConfig, make_topic: Callable[..., str]
) -> None:
    exe = build_compiled_floor(tmp_path)
    if isinstance(exe, str):
        pytest.skip(f"the compiled floor cannot be built here: {exe}")
    cache, log = make_log(tmp_path, lines=250, distinct=100)
    lines = log.read_bytes().splitlines(keepends=True)
    logged = {ln.split()[8].decode().removeprefix("/gantry_data/") for ln in lines}
    (cache / "gone").mkdir()
    with log.open("ab") as out:  # not an upload, a missing file, and a malformed line
        out.write(lines[0].replace(b" i r ", b" o r "))
        out.write(
            b"Thu Aug 24 12:00:00 2017 1 ::ffff:1.2.3.4 0 /gantry_data/gone/x b _ i r u ftp 0 * c\n"
        )
        out.write(b"not a line\n")
    topic = make_topic(partitions=3)
    events, _, _ = compiled_floor(exe, kafka_config.bootstrap_servers, topic, log, cache, chunk=40)
    assert events == 250
    read = read_all(kafka_config, topic)
    assert len(read) == 250 and {name for name, _ in read} == {"FileArrived"}
    assert {value["path"] for _, value in read} == logged
    for _, value in read[:10]:
        st = os.lstat(cache / value["path"])
        assert value["key"] == f"ua-mac/{value['path']}"
        assert (value["size"], value["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
        assert value["version"] == f"{st.st_size}:{st.st_mtime_ns}"
        assert value["sensor"] == value["path"].split("/")[2]
        assert value["source"] == "XFERLOG" and value["attempt"] == 1
