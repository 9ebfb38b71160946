"""A throwaway PostgreSQL server (Debian's ``postgresql`` package) on a free loopback port.

``PostgresServer.start()`` runs ``initdb`` into a fresh temporary directory (password
authentication, a random password) and starts the server with ``pg_ctl`` on 127.0.0.1; ``stop()``
stops it and removes the directory. PostgreSQL refuses to run as root, so as root both run as the
``postgres`` user (``runuser``) in a directory it owns. Anything that goes wrong is a
:class:`PostgresUnavailable` with the reason and the server log's tail.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from terra_xfer.broker import free_port

USER = "lemnatec"


class PostgresUnavailable(Exception):
    """The test server could not be started; the message says why and what to install."""


def server_bin() -> Path:
    """The newest installed server's bin directory (``/usr/lib/postgresql/<v>/bin``), or PATH's."""
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").exists()),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)],
    )
    if versions:
        return versions[-1]
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (pg_ctl) found: install Debian's postgresql package"
        " (make system-deps, as root)"
    )


@dataclass
class PostgresServer:
    base: Path
    port: int
    password: str
    bindir: Path
    run_as: list[str]
    host: str = "127.0.0.1"
    user: str = USER

    @classmethod
    def start(cls) -> PostgresServer:
        bindir = server_bin()
        base = Path(tempfile.mkdtemp(prefix="terra-xfer-pg-"))
        run_as: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(base, ignore_errors=True)
                raise PostgresUnavailable("running as root and there is no postgres user") from None
            os.chown(base, owner.pw_uid, owner.pw_gid)
            run_as = ["runuser", "-u", "postgres", "--"]
        server = cls(base, free_port(), secrets.token_hex(12), bindir, run_as)
        try:
            server._init()
            server._start()
        except BaseException:
            server.stop()
            raise
        return server

    def dsn(self, dbname: str) -> str:
        """A connection string for ``dbname`` without the password."""
        return f"host={self.host} port={self.port} dbname={dbname} user={self.user}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn(dbname), password=self.password, autocommit=True)

    def create_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        if (self.base / "data" / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def _init(self) -> None:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if self.run_as:
            shutil.chown(pwfile, "postgres", "postgres")
        done = self._run(
            "initdb",
            *("-D", str(self.base / "data"), "-U", self.user, "--pwfile", str(pwfile)),
            *("-A", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-sync"),
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {done.stderr.strip()[-2000:]}")

    def _start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses={self.host}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = self.base / "server.log"
        done = self._run(
            "pg_ctl",
            *("-D", str(self.base / "data"), "-l", str(log), "-o", options, "-w", "-t", "60"),
            "start",
        )
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {done.stderr.strip()}\n{tail}")

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [*self.run_as, str(self.bindir / tool), *args]
        return subprocess.run(
            cmd, cwd=self.base, capture_output=True, text=True, timeout=120, check=False
        )
