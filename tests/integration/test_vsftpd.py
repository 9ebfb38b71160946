"""A real FTP server: Debian's vsftpd writes the xferlog, the gantry producer ships its uploads."""

from __future__ import annotations

import dataclasses
import ftplib
import io
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.gantry.service import GantryProducer, log_source
from terra_xfer.broker import free_port, port_open
from terra_xfer.config import Config
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics
from tests.kafka_read import read_all, wait_for

pytestmark = pytest.mark.broker
VSFTPD = shutil.which("vsftpd") or "/usr/sbin/vsftpd"


@dataclasses.dataclass(frozen=True)
class FtpServer:
    port: int
    root: Path
    xferlog: Path


@pytest.fixture
def vsftpd(tmp_path: Path) -> Iterator[FtpServer]:
    if not os.path.exists(VSFTPD) or os.geteuid() != 0:
        pytest.skip("needs Debian's vsftpd and root (make test installs it when run as root)")
    root = tmp_path / "ftproot"
    ftp_user = pwd.getpwnam("ftp")
    for top in ("LemnaTec", "MAC", "ScriptBackup"):
        (root / top).mkdir(parents=True)
        os.chown(root / top, ftp_user.pw_uid, ftp_user.pw_gid)
    os.chmod(tmp_path, 0o755)
    port, pasv = free_port(), free_port()
    Path("/var/run/vsftpd/empty").mkdir(parents=True, exist_ok=True)
    conf = tmp_path / "vsftpd.conf"
    conf.write_text(f"""listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=YES
anon_root={root}
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_umask=022
no_anon_password=YES
write_enable=YES
local_enable=NO
xferlog_enable=YES
xferlog_std_format=YES
xferlog_file={tmp_path / "xferlog"}
dual_log_enable=NO
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port={pasv}
pasv_max_port={pasv}
secure_chroot_dir=/var/run/vsftpd/empty
seccomp_sandbox=NO
""")
    proc = subprocess.Popen([VSFTPD, str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, timeout_s=20, what="vsftpd")
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        yield FtpServer(port, root, tmp_path / "xferlog")
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def upload(server: FtpServer, files: dict[str, bytes]) -> None:
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", server.port, timeout=10)
    try:
        ftp.login()
        for rel, data in files.items():
            ftp.cwd("/")
            *dirs, name = rel.split("/")
            for d in dirs:
                if d not in ftp.nlst():
                    ftp.mkd(d)
                ftp.cwd(d)
            ftp.storbinary(f"STOR {name}", io.BytesIO(data))
    finally:
        ftp.quit()


def test_uploads_through_a_real_vsftpd_reach_files_arrived(
    vsftpd: FtpServer, pipeline_config: Config
) -> None:
    config = dataclasses.replace(
        pipeline_config,
        gantry=dataclasses.replace(
            pipeline_config.gantry, cache_root=vsftpd.root, xferlog=vsftpd.xferlog, timezone="UTC"
        ),
    )
    create_topics(config)
    ts = "LemnaTec/MovingSensor/stereoTop/2017-08-24/2017-08-24__12-40-01-916"
    files = {
        f"{ts}/ef0b016f_left.bin": os.urandom(3000),
        f"{ts}/ef0b016f_metadata.json": b'{"lemnatec_measurement_metadata": {}}',
        f"{ts}/scan one_right.bin": b"space in the name, logged as an underscore",
        "LemnaTec/EnvironmentLogger/2017-08-24/2017-08-24_12-40-00_environmentlogger.json": b"{}",
        "MAC/weather/2017-08-24/weather.dat": b"1,2,3\n",
        "ScriptBackup/2017-08-24/backup.tar": b"not shipped",
    }
    upload(vsftpd, files)
    logged = vsftpd.xferlog.read_bytes()
    assert b"scan_one_right.bin" in logged and b" i a " in logged  # vsftpd's own notation
    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    try:
        wait_for(
            lambda: producer.step() == 0 and producer.handler.counts.lines == len(files),
            timeout_s=30,
            what="the producer to read every logged upload",
        )
    finally:
        producer.close()
    arrived = {v["path"]: v for _, v in read_all(config.kafka, config.topic("files.arrived"))}
    shipped = {rel for rel in files if not rel.startswith("ScriptBackup/")}
    assert set(arrived) == shipped
    left = arrived[f"{ts}/ef0b016f_left.bin"]
    assert left["size"] == 3000 and left["remote_host"] == "127.0.0.1"
    assert (
        left["dest_path"]
        == "sites/ua-mac/raw_data/stereoTop/2017-08-24/2017-08-24__12-40-01-916/ef0b016f_left.bin"
    )
    assert producer.handler.counts.skipped["not_whitelisted"] == 1
    assert read_all(config.kafka, config.topic("deadletter")) == []
