"""The values a benchmark reports: each figure with what it is compared with, and its goal.

Pure data, no I/O: the runners build :class:`Figure` and :class:`Section` values, ``results.json``
holds their dictionaries, and the table is rendered from those dictionaries alone, so the table
in BENCHMARKS.md always says what the JSON says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

GoalKind = Literal["ratio_at_least", "value_at_least", "value_at_most", "value_below"]
SectionStatus = Literal["ok", "not available"]


@dataclass(frozen=True)
class Goal:
    """What a figure must reach: a ratio to its limit, or a bound on its own value."""

    kind: GoalKind
    threshold: float

    def met(self, value: float, ratio: float | None) -> bool | None:
        """Whether ``value`` (and its ``ratio`` to the limit) meets the goal; None if unknowable."""
        if self.kind == "ratio_at_least":
            return None if ratio is None else ratio >= self.threshold
        if self.kind == "value_at_least":
            return value >= self.threshold
        if self.kind == "value_at_most":
            return value <= self.threshold
        return value < self.threshold

    def text(self, unit: str) -> str:
        """The goal for a person: ``ratio ≥ 0.5``, ``< 150 MB``."""
        number = f"{self.threshold:,g}"
        return {
            "ratio_at_least": f"ratio ≥ {number}",
            "value_at_least": f"≥ {number} {unit}",
            "value_at_most": f"≤ {number} {unit}",
            "value_below": f"< {number} {unit}",
        }[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "threshold": self.threshold}


@dataclass(frozen=True)
class Figure:
    """One measured value, the limit it is compared with (measured in the same run) and a goal."""

    name: str
    value: float
    unit: str
    limit_name: str | None = None
    limit: float | None = None
    goal: Goal | None = None
    note: str = ""
    limit_unit: str | None = None  # when the limit counts something else (lines, not events)

    @property
    def ratio(self) -> float | None:
        if self.limit is None or self.limit == 0:
            return None
        return self.value / self.limit

    @property
    def met(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self.value, self.ratio)

    def to_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "limit_name": self.limit_name,
            "limit": self.limit,
            "limit_unit": self.limit_unit or self.unit,
            "ratio": None if ratio is None else round(ratio, 4),
            "goal": None if self.goal is None else self.goal.to_dict(),
            "goal_text": None if self.goal is None else self.goal.text(self.unit),
            "met": self.met,
            "note": self.note,
        }


@dataclass
class Section:
    """One numbered part of the benchmark: its figures, or why it could not be measured."""

    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    status: SectionStatus = "ok"
    reason: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 1),
            "figures": [f.to_dict() for f in self.figures],
            "details": self.details,
        }


def not_available(key: str, title: str, reason: str) -> Section:
    return Section(key, title, status="not available", reason=reason)


def format_number(value: float | None) -> str:
    """A figure for a table: thousands separated, three significant digits below 100."""
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile of ``values`` (``pct`` from 0 to 100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[int(rank) - 1]
