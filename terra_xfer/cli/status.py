"""``terra-xfer status`` and ``terra-xfer report``: what happened to the files, from files.state.

Both read the on-disk index ([status] index_path), first bringing it up to date from the compacted
topic (rebuilding it from the start when the file is missing), so they answer for 10 million files
in bounded memory.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from consumers.state.fold import FILE_STATES
from consumers.state.view import StateFollower
from terra_xfer.cli import State
from terra_xfer.config import Config
from terra_xfer.deadletters import count_dead_letters


def _follower(config: Config) -> Any:
    follower = StateFollower(config, config.status.index_path)
    follower.catch_up()
    return follower


def file_key(config: Config, path: str) -> str:
    """Accept a key (``ua-mac/...``), a path relative to the cache root, or an absolute cache path."""
    site = config.gantry.site
    if path.startswith(f"{site}/"):
        return path
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(config.gantry.cache_root)
        except ValueError:
            raise click.UsageError(
                f"{path} is not under the cache root {config.gantry.cache_root}"
            ) from None
    return f"{site}/{p.as_posix()}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


@click.command()
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (or object for PATH).")
@click.option(
    "--state",
    "state_filter",
    type=click.Choice(FILE_STATES, case_sensitive=False),
    help="Only files in this state.",
)
@click.option("--sensor", help="Only files of this sensor (e.g. stereoTop).")
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="Every file, settled ones (DONE, MISSING) too; without it or --state, only the others.",
)
@click.pass_obj
def status(
    state: State,
    path: str | None,
    as_json: bool,
    state_filter: str | None,
    sensor: str | None,
    every: bool,
) -> None:
    """Show one file's whole history (PATH), or the files per state and those not settled yet.

    Without PATH it prints how many files are in each state, then lists the files in flight or
    waiting (neither DONE nor MISSING): as many as the site has under way, however many it
    shipped before. --state lists the files in one state (DONE included), --all every file.

    A file catalogued with a warning (a *_metadata.json that could not be read, registered as
    a file) reaches DONE like any other; its warning is shown beside it.

    \b
    Examples:
      terra-xfer status LemnaTec/MovingSensor/stereoTop/2017-08-24/.../x_left.bin
      terra-xfer status --json --state QUARANTINED | jq '.[].reason'
      terra-xfer status --all --json | jq '.[] | select(.warning) | .path'
    """
    follower = _follower(state.with_broker())
    try:
        if path is not None:
            _show_one(follower, file_key(state.config, path), as_json)
            return
        if sensor is not None and sensor not in (known := follower.index.sensors()):
            raise click.BadParameter(
                f"no file of sensor {sensor!r}; sensors with files: {', '.join(known) or 'none'}",
                param_hint="'--sensor'",
            )
        unsettled = not every and state_filter is None
        rows = follower.index.query(
            state=state_filter.upper() if state_filter else None,
            sensor=sensor,
            unsettled=unsettled,
        )
        if as_json:
            _json_array(rows)
            return
        counts = follower.index.counts_by_state(sensor)
        summary = "  ".join(f"{k}={v}" for k, v in counts.items())
        of = f"  (sensor {sensor})" if sensor is not None else ""
        click.echo(f"{summary}{of}" if summary else "no files yet")
        listed = 0
        for row in rows:
            reason = f"  ({row['reason']})" if row.get("reason") else ""
            warning = f"  [warning: {row['warning']}]" if row.get("warning") else ""
            click.echo(f"{row['state']:<12} {row['updated_at']}  {row['path']}{reason}{warning}")
            listed += 1
        if unsettled and counts and not listed:
            click.echo("every file is settled (DONE or MISSING); --all lists them")
    finally:
        follower.close()


def _json_array(rows: Any) -> None:
    """Stream a JSON array row by row (never the whole list in memory)."""
    click.echo("[", nl=False)
    for i, row in enumerate(rows):
        doc = {
            k: row.get(k)
            for k in (
                "path",
                "state",
                "version",
                "updated_at",
                "reason",
                "sensor",
                "date",
                "size",
                "key",
                "warning",
            )
        }
        click.echo(("," if i else "") + "\n  " + json.dumps(doc), nl=False)
    click.echo("\n]")


def _show_one(follower: Any, key: str, as_json: bool) -> None:
    record = follower.get(key)
    if record is None:
        raise click.ClickException(f"no record of {key} in files.state")
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(
        f"{record['path']}\n  state {record['state']}  version {record['version']}  "
        f"size {record['size']}"
        + (f"\n  reason {record['reason']}" if record["reason"] else "")
        + (f"\n  warning {record['warning']}" if record.get("warning") else "")
    )
    for t in record["history"]:
        evidence = " ".join(f"{k}={v}" for k, v in sorted(t["evidence"].items()))
        click.echo(f"  {_when(t['at_ms'])}  {t['state']:<12} {evidence}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def report(state: State, as_json: bool) -> None:
    """Per sensor and per day: files and bytes arrived, transferred, ingested, deleted, failed;
    what the files not DONE wait for (a batch, their transfer, ingest, deletion; MISSING and
    QUARANTINED ones a person), with the most common reasons ingest is behind; the files
    catalogued with a warning; and the dead letters by reason.

    \b
    Examples:
      terra-xfer report
      terra-xfer report --json | jq '.waiting.ingest.reasons'
    """
    follower = _follower(state.with_broker())
    try:
        lines = follower.index.report()
        waiting = follower.index.waiting()
        warned = follower.index.warnings()
    finally:
        follower.close()
    dead = count_dead_letters(state.config)
    if as_json:
        doc = {"files": lines, "dead_letters": dead, "waiting": waiting, "warnings": warned}
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(render_report(lines, dead, waiting, warned))


def render_report(
    lines: list[dict[str, Any]],
    dead: dict[str, int],
    waiting: dict[str, dict[str, Any]] | None = None,
    warned: dict[str, int] | None = None,
) -> str:
    """The report as a fixed-width table, then what files wait for, the files catalogued with a
    warning, then the dead letters."""
    stages = ("arrived", "transferred", "ingested", "deleted", "failed")
    head = f"{'day':<10} {'sensor':<18}" + "".join(f" {s:>17}" for s in stages)
    out = [head, "-" * len(head)]
    for line in lines:
        cells = "".join(f" {line[f'files_{s}']:>7} {_size(line[f'bytes_{s}']):>9}" for s in stages)
        out.append(f"{line['date']:<10} {(line['sensor'] or '-'):<18}{cells}")
    out.append("")
    if waiting is not None:
        out += [*render_waiting(waiting), ""]
    if warned is not None:
        size = _size(warned["bytes"])
        out += [f"{'ingested with a warning':<24} {warned['files']:>9} {size:>9}", ""]
    out.append(
        "dead letters: "
        + (", ".join(f"{r}: {n}" for r, n in sorted(dead.items())) if dead else "none")
    )
    return "\n".join(out)


_WAITING_LABELS = {
    "batch": "waiting for a batch",
    "transfer": "waiting for transfer",
    "ingest": "waiting for ingest",
    "deletion": "waiting for deletion",
    "missing": "missing from the cache",
    "quarantined": "quarantined",
}


def render_waiting(waiting: dict[str, dict[str, Any]]) -> list[str]:
    """One line per thing files wait for (files, bytes), the ingest reasons under their line."""
    out = [f"{'files not DONE':<24} {'files':>9} {'bytes':>9}"]
    for name, label in _WAITING_LABELS.items():
        group = waiting[name]
        out.append(f"{label:<24} {group['files']:>9} {_size(group['bytes']):>9}")
        for why in group.get("reasons", []):
            out.append(f"  {why['files']:>7}  {why['reason']}")
    return out


def _size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
