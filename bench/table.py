"""results.json → the table in BENCHMARKS.md, so the document always shows what the JSON holds.

Only the block between the two markers is rewritten; the prose around it (the analysis of each
missed goal, with its profile) is kept as written.

    python -m bench.table [--results bench/results.json] [--doc BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.figures import format_number

START = "<!-- bench:results:start (generated from bench/results.json; edit nothing inside) -->"
END = "<!-- bench:results:end -->"
HEADER = "| § | Figure | Value | Compared with (same run) | Limit | Ratio | Goal | Met |"
RULE = "|---|---|--:|---|--:|--:|---|---|"

SKELETON = """# Benchmarks

Speed is measured here, never asserted in tests. Every figure is compared with its limit measured
on the same machine, against the same broker, in the same run, as a ratio: machines are noisy,
ratios within one run are not. `make bench` runs everything (`make bench-quick`: smaller counts)
and rewrites `bench/results.json` and the block below.

{block}
"""


def _met(value: object) -> str:
    if value is None:
        return "—"
    return "met" if value else "**missed**"


def _with_unit(value: float | None, unit: str) -> str:
    return "—" if value is None else f"{format_number(value)} {unit}".strip()


def figure_row(number: str, figure: Mapping[str, Any]) -> str:
    """One table row of a figure's dictionary (as results.json holds it)."""
    unit = str(figure.get("unit") or "")
    ratio = figure.get("ratio")
    cells = [
        number,
        str(figure["name"]),
        _with_unit(figure["value"], unit),
        str(figure.get("limit_name") or "—"),
        _with_unit(figure.get("limit"), str(figure.get("limit_unit") or unit)),
        "—" if ratio is None else f"{ratio:.2f}",
        str(figure.get("goal_text") or "—"),
        _met(figure.get("met")),
    ]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def machine_lines(results: Mapping[str, Any]) -> list[str]:
    """The run and the machine, one bullet each."""
    m = results.get("machine", {})
    load = results.get("load", {})
    lines = [
        f"- Run: `{results.get('mode', '?')}` on {results.get('started', '?')}, "
        f"{format_number(results.get('duration_s'))} s; load average (1 min) "
        f"{load.get('before', '?')} before, {load.get('after', '?')} after",
        f"- Machine: {m.get('cpus', '?')} CPUs ({m.get('cpu_model', '?')}), "
        f"{m.get('ram_gib', '?')} GiB RAM, Linux {m.get('kernel', '?')}",
    ]
    versions = m.get("versions", {})
    if versions:
        lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return lines


def cpu_lines(results: Mapping[str, Any]) -> list[str]:
    """One bullet per measured ``up`` run: each process's CPU per file, the busiest first."""
    lines = []
    for section in results.get("sections", []):
        details = section.get("details") or {}
        for how, run in (("`up`", details), ("`up --threads`", details.get("threads") or {})):
            per_file = run.get("cpu_ms_per_file")
            if not per_file:
                continue
            total = per_file.get("pipeline")
            rest = ", ".join(
                f"{name} {format_number(ms)}" for name, ms in per_file.items() if name != "pipeline"
            )
            lines.append(f"- §{section['key']} {how}: pipeline {format_number(total)} ({rest})")
    return lines


def render(results: Mapping[str, Any]) -> str:
    """The whole generated block: machine, one table of every figure, then notes and gaps."""
    rows: list[str] = [HEADER, RULE]
    notes: list[str] = []
    gaps: list[str] = []
    for section in results.get("sections", []):
        number = str(section["key"])
        if section.get("status") != "ok":
            gaps.append(f"- §{number} {section['title']}: not available — {section.get('reason')}")
            rows.append(f"| {number} | {section['title']} | not available | — | — | — | — | — |")
            continue
        for figure in section.get("figures", []):
            rows.append(figure_row(number, figure))
            if figure.get("note"):
                notes.append(f"- §{number} {figure['name']}: {figure['note']}")
    parts = [START, "", *machine_lines(results), "", *rows, ""]
    cpu = cpu_lines(results)
    if cpu:
        parts += [
            "CPU per file (ms of user + system time, from the first line fed to the last file "
            "complete; `pipeline` is every process but the broker):",
            "",
            *cpu,
            "",
        ]
    if notes:
        parts += ["Notes:", "", *notes, ""]
    if gaps:
        parts += ["Not measured in this run:", "", *gaps, ""]
    parts.append(END)
    return "\n".join(parts)


def replace_block(document: str, block: str) -> str:
    """``document`` with its generated block replaced (appended when it has none)."""
    start, end = document.find(START), document.find(END)
    if start == -1 or end == -1 or end < start:
        return document.rstrip("\n") + "\n\n" + block + "\n"
    return document[:start] + block + document[end + len(END) :]


def write_document(path: Path, results: Mapping[str, Any]) -> None:
    """Rewrite the generated block of ``path`` (created from a skeleton when missing)."""
    block = render(results)
    if path.exists():
        text = replace_block(path.read_text(encoding="utf-8"), block)
    else:
        text = SKELETON.format(block=block)
    path.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("bench/results.json"))
    ap.add_argument("--doc", type=Path, default=Path("BENCHMARKS.md"))
    args = ap.parse_args(argv)
    write_document(args.doc, json.loads(args.results.read_text(encoding="utf-8")))


if __name__ == "__main__":
    main()
