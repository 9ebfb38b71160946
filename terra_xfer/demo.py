"""The README's main command: a simulated gantry night through the whole pipeline.

Starts the embedded broker, creates the topics, then writes a night as the FTP server would (files
in the cache tree, vsftpd-format xferlog lines, a rotation whose file is gzipped while the
pipeline runs, a few malformed lines, a non-whitelisted backup folder, a file with a space in
its name, and an old file that was never logged) while ``terra-xfer up`` runs. When the pipeline
has drained it prints the per-sensor report, and exits non-zero unless every whitelisted file is
DONE and the cache holds only what should stay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import logging
import random
import shutil
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from consumers.state.view import StateFollower
from producers.gantry.night import Upload, log_line, uploads, write_upload
from producers.gantry.service import GantryProducer, log_source
from producers.gantry.tailer import checkpoint_at_end
from terra_xfer.broker import EmbeddedBroker
from terra_xfer.cli.events import read_committed
from terra_xfer.cli.status import render_report
from terra_xfer.cli.up import run_up
from terra_xfer.config import Config, load
from terra_xfer.deadletters import count_dead_letters
from terra_xfer.errors import TerraXferError
from terra_xfer.logs import configure
from terra_xfer.stages import registry
from terra_xfer.topics import create_topics

MALFORMED = (
    b"Tue Apr 31 12:35:58 2016 1 ::ffff:10.0.0.1 4061858 /x b _ i r u ftp 0 * c\n",
    b"-- MARK --\n",
    b"Wed Aug 24 01:02:03 2017 1 host notanumber /gantry_data/a b _ i r u ftp 0 * c\n",
)


def last_night() -> datetime:
    """Eight hours ago: the files are younger than the sweeper's two days, as on a real morning."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=8)


@dataclasses.dataclass
class Night:
    shipped: set[str]
    kept: set[str]
    malformed: int


def write_night(config: Config, count: int, done: threading.Event, night: Night) -> None:
    """Write the night into the cache and the xferlog, rotating (then gzipping) half way."""
    rng = random.Random(2017)
    cache, log = config.gantry.cache_root, config.gantry.xferlog
    night_start = last_night()
    ups = list(uploads(night_start, count, seed=24, size=4096))
    half = len(ups) // 2
    for i, up in enumerate(ups):
        _write(cache, log, up, rng, night)
        if i in (len(ups) // 5, half + len(ups) // 4, len(ups) - 3):
            with log.open("ab") as fh:
                fh.write(MALFORMED[night.malformed % len(MALFORMED)])
            night.malformed += 1
        if i == half:
            rotated = log.with_name(f"xferlog-{night_start:%Y%m%d}")
            log.rename(rotated)
        if i == half + 200:
            with rotated.open("rb") as src, gzip.open(f"{rotated}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            rotated.unlink()
        if i % 200 == 0:
            time.sleep(0.05)  # uploads trickle in, as on a real night
    when = night_start + timedelta(hours=3)
    folder = f"{when:%Y-%m-%d}/{when:%Y-%m-%d__%H-%M-%S}-000"
    spaced = Upload(f"LemnaTec/MovingSensor/stereoTop/{folder}/scan one_left.bin", 4096, when, True)
    _write(cache, log, spaced, rng, night)
    done.set()


def _write(cache: Path, log: Path, up: Upload, rng: random.Random, night: Night) -> None:
    write_upload(cache, up, rng)
    with log.open("ab") as fh:
        fh.write(log_line(up, size=(cache / up.rel).stat().st_size))
    (night.shipped if up.whitelisted else night.kept).add(up.rel)


def unlogged_old_file(config: Config, night: Night) -> None:
    """An upload whose log line was lost, three days old: only the sweeper can find it."""
    when = last_night() - timedelta(days=3)
    old = Upload(
        f"MAC/weather/{when:%Y-%m-%d}/{when:%Y-%m-%d_%H-%M-%S}_weather.dat", 512, when, True
    )
    write_upload(config.gantry.cache_root, old)
    night.shipped.add(old.rel)


def pin_log_start(config: Config) -> None:
    """Commit the producer's position at the start of today's (empty) log, so the rotation that
    may happen before the producer first reads cannot make it skip the rotated file."""

    producer = GantryProducer(config, registry.spec("gantry"), log_source(config, "xferlog"))
    try:
        producer.reseat(checkpoint_at_end(config.gantry.xferlog))
    finally:
        producer.close()


def check(config: Config, night: Night) -> list[str]:
    """Everything that is not as it should be after the night (empty: all good)."""

    problems = []
    follower = StateFollower(config, config.status.index_path)
    try:
        follower.catch_up()
        site = config.gantry.site
        not_done = [
            rel
            for rel in night.shipped
            if (follower.get(f"{site}/{rel}") or {}).get("state") != "DONE"
        ]
    finally:
        follower.close()
    if not_done:
        problems.append(f"{len(not_done)} whitelisted file(s) not DONE, e.g. {sorted(not_done)[0]}")
    cache = config.gantry.cache_root
    left = {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()}
    if left != night.kept:
        problems.append(
            f"the cache holds {len(left - night.kept)} file(s) it should not, and "
            f"lacks {len(night.kept - left)} it should keep"
        )
    return problems


@click.command()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), required=True
)
@click.option("--files", type=int, default=3000, show_default=True, help="Uploads in the night.")
@click.option("--keep-broker", is_flag=True, help="Leave the broker running afterwards.")
def demo(config_path: Path, files: int, keep_broker: bool) -> None:
    """Run a simulated gantry night through the whole pipeline on the embedded broker."""
    configure("INFO", json_lines=False)
    logging.getLogger("consumers").setLevel(logging.WARNING)  # per-batch lines: too many here
    config = load(config_path)

    base = config.broker.data_dir.parent
    for leftover in ("gantry_data", "destination", "transfer", "log"):
        shutil.rmtree(base / leftover, ignore_errors=True)
    for name in (
        "catalog.sqlite",
        "status.sqlite",
        "state-keeper.sqlite",
        "batcher-view.sqlite",
        "sweeper-view.sqlite",
    ):
        for suffix in ("", "-wal", "-shm"):
            (base / f"{name}{suffix}").unlink(missing_ok=True)
    config.gantry.cache_root.mkdir(parents=True)
    config.gantry.xferlog.parent.mkdir(parents=True)
    b = config.broker
    node = EmbeddedBroker(b.port, b.data_dir, b.kafka_version, b.heap)
    if node.pid() is not None:
        node.stop()
    shutil.rmtree(b.data_dir, ignore_errors=True)
    began = time.monotonic()
    node.start(timeout_s=b.start_timeout_s)
    click.echo(f"broker up at {node.bootstrap} in {time.monotonic() - began:.1f} s")
    try:
        create_topics(config)
        config.gantry.xferlog.touch()
        pin_log_start(config)
        night = Night(set(), set(), 0)
        unlogged_old_file(config, night)
        written = threading.Event()
        writer = threading.Thread(target=write_night, args=(config, files, written, night))
        writer.start()
        started = time.monotonic()
        run_up(config, exit_when_idle=6.0, show=True)
        writer.join()
        elapsed = time.monotonic() - started
        click.echo(render_report(_report(config), count_dead_letters(config)))
        problems = check(config, night)
        click.echo(
            f"\n{len(night.shipped)} whitelisted files shipped in {elapsed:.0f} s; "
            f"{len(night.kept)} non-whitelisted files left in place; "
            f"{night.malformed} malformed log lines dead-lettered."
        )
        click.echo(where_next(config, config_path, broker_kept=keep_broker))
        if problems:
            raise TerraXferError("the demo did not end as it should: " + "; ".join(problems))
        click.echo(
            "\nOK: every whitelisted file is DONE and the cache holds only what should stay."
        )
    finally:
        if not keep_broker:
            node.stop()


def where_next(config: Config, config_path: Path, *, broker_kept: bool) -> str:
    """Commands to look around after the demo, runnable as printed from where it was run: the
    virtualenv's own ``terra-xfer``, and the broker started again first when the demo stopped
    it (its data stays on disk)."""
    program = Path(sys.executable).with_name("terra-xfer")
    with contextlib.suppress(ValueError):
        program = program.relative_to(Path.cwd())
    run = f"{program} --config {config_path}"
    lines = ["", "Where to look next:"]
    if not broker_kept:
        lines.append(f"  {run} broker start        # the demo stopped it; its topics are kept")
    lines += [
        f"  {run} status --all --json | head",
        f"  {run} report",
        f"  {run} events tail deadletter --from-beginning --idle-exit 2",
        f"  ls -R {config.transfer.destination_root} | head",
    ]
    if not broker_kept:
        lines.append(f"  {run} broker stop")
    return "\n".join(lines)


def arrival_sources(config: Config) -> dict[str, int]:

    arrivals = read_committed(config, "files.arrived")
    return dict(Counter(v["source"] for name, v in arrivals if name == "FileArrived"))


def _report(config: Config) -> list[dict[str, object]]:

    follower = StateFollower(config, config.status.index_path)
    try:
        follower.catch_up()
        return follower.index.report()
    finally:
        follower.close()


if __name__ == "__main__":
    try:
        demo()
    except TerraXferError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
