"""The benchmark results: figures and goals, results.json → BENCHMARKS.md table, profile summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.figures import Figure, Goal, Section, format_number, not_available, percentile
from bench.profile import parse, summarise
from bench.run import finite
from bench.table import END, START, figure_row, render, replace_block, write_document


def results(*sections: Section) -> dict[str, Any]:
    """A results.json document as bench.run writes it (through JSON, as the table reads it)."""
    doc = {
        "mode": "quick",
        "started": "2026-01-02T03:04:05+00:00",
        "duration_s": 95.4,
        "load": {"before": 0.4, "after": 1.2},
        "machine": {
            "cpus": 2,
            "cpu_model": "AMD EPYC",
            "ram_gib": 23.5,
            "kernel": "6.1.0",
            "versions": {"Python": "3.11.7", "Kafka (embedded broker)": "4.4.0"},
        },
        "sections": [s.to_dict() for s in sections],
    }
    parsed: dict[str, Any] = json.loads(json.dumps(finite(doc)))
    return parsed


def producer() -> Section:
    s = Section("1", "Producer")
    s.figures += [
        Figure(
            "events/s",
            25_000.4,
            "events/s",
            "kcat -P",
            300_000,
            Goal("ratio_at_least", 0.5),
            limit_unit="lines/s",
        ),
        Figure("peak RSS", 71.2, "MB", goal=Goal("value_below", 150), note="under py-spy: no"),
    ]
    return s


@pytest.mark.parametrize(
    ("goal", "value", "ratio", "met"),
    [
        (Goal("ratio_at_least", 0.5), 1.0, 0.5, True),
        (Goal("ratio_at_least", 0.5), 1.0, 0.49, False),
        (Goal("ratio_at_least", 0.5), 1.0, None, None),
        (Goal("value_at_least", 5000), 5000, None, True),
        (Goal("value_at_least", 5000), 4999, None, False),
        (Goal("value_at_most", 3), 3, None, True),
        (Goal("value_at_most", 3), 3.01, None, False),
        (Goal("value_below", 10), 9.99, None, True),
        (Goal("value_below", 10), 10, None, False),
    ],
)
def test_a_goal_is_met_or_missed(
    goal: Goal, value: float, ratio: float | None, met: object
) -> None:
    assert goal.met(value, ratio) is met


def test_a_figure_carries_its_ratio_to_the_limit_and_whether_it_met_its_goal() -> None:
    figure = Figure("x", 150, "files/s", "plain loop", 1000, Goal("ratio_at_least", 0.5))
    assert figure.to_dict() | {"goal": None} == {
        "name": "x",
        "value": 150,
        "unit": "files/s",
        "limit_name": "plain loop",
        "limit": 1000,
        "limit_unit": "files/s",
        "ratio": 0.15,
        "goal": None,
        "goal_text": "ratio ≥ 0.5",
        "met": False,
        "note": "",
    }
    assert Figure("y", 1, "s").ratio is None and Figure("y", 1, "s").met is None


def test_numbers_are_shown_with_separators_or_three_digits() -> None:
    assert [format_number(v) for v in (123456.7, 45.67, 2.345, 0.01234, None)] == [
        "123,457",
        "45.7",
        "2.35",
        "0.012",
        "—",
    ]


def test_a_row_shows_value_limit_ratio_goal_and_verdict() -> None:
    row = figure_row("1", results(producer())["sections"][0]["figures"][0])
    assert row == (
        "| 1 | events/s | 25,000 events/s | kcat -P | 300,000 lines/s | 0.08 "
        "| ratio ≥ 0.5 | **missed** |"
    )


def test_the_table_has_the_machine_every_figure_notes_and_what_was_not_measured() -> None:
    gone = not_available("6", "Danforth", "bench/danforth.py does not exist yet")
    text = render(results(producer(), gone))
    assert text.startswith(START) and text.endswith(END)
    assert "2 CPUs (AMD EPYC), 23.5 GiB RAM, Linux 6.1.0" in text
    assert "Python 3.11.7, Kafka (embedded broker) 4.4.0" in text
    assert "load average (1 min) 0.4 before, 1.2 after" in text
    assert "| 1 | peak RSS | 71.2 MB | — | — | — | < 150 MB | met |" in text
    assert "- §1 peak RSS: under py-spy: no" in text
    assert "| 6 | Danforth | not available |" in text
    assert "- §6 Danforth: not available — bench/danforth.py does not exist yet" in text


def test_an_unmeasurable_value_is_a_dash_not_a_number() -> None:
    s = Section("5", "Recovery")
    s.figures.append(Figure("never recovered", math.inf, "s", goal=Goal("value_below", 10)))
    figure = results(s)["sections"][0]["figures"][0]
    assert figure["value"] is None
    assert figure_row("5", figure).startswith("| 5 | never recovered | — |")


def test_only_the_generated_block_is_replaced(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{START}\nold table\n{END}\n\n## Why\nprofile\n")
    write_document(doc, results(producer()))
    text = doc.read_text()
    assert "old table" not in text and "25,000 events/s" in text
    assert text.startswith("# Benchmarks\n\nintro\n\n") and text.endswith("## Why\nprofile\n")
    write_document(doc, results(producer()))
    assert doc.read_text() == text


def test_a_missing_document_or_block_is_created(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    write_document(doc, results(producer()))
    assert doc.read_text().startswith("# Benchmarks") and START in doc.read_text()
    assert replace_block("prose\n", "BLOCK") == "prose\n\nBLOCK\n"


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_a_profile_is_summarised_per_thread_and_function() -> None:
    raw = (
        "thread (1): gantry;step (producers/gantry/service.py:90);encode (schemas/codec.py:140) 30\n"
        "thread (1): gantry;step (producers/gantry/service.py:91) 10\n"
        "thread (2): deleter;delete (consumers/deletion.py:120) 60\n"
    )
    assert parse(raw)[0] == (
        "gantry",
        ["step (producers/gantry/service.py)", "encode (schemas/codec.py)"],
        30,
    )
    text = summarise(raw, seconds=1.0)
    assert "100 samples at 100 Hz" in text
    assert "deleter: 60 (60%; 60% of a core)" in text
    assert " 30.0%  encode (schemas/codec.py)" in text
    assert " 40.0%  step (producers/gantry/service.py)" in text
