"""Repeated measurements: median with min and max, and latency percentiles."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Series:
    """One figure measured once per repetition."""

    unit: str
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def to_json(self) -> dict[str, object]:
        return {"unit": self.unit, "values": self.values, "median": self.median,
                "min": self.low, "max": self.high}


def percentile(samples: list[float], pct: float) -> float:
    """The pct-th percentile (0-100) by linear interpolation; NaN when empty."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * pct / 100
    lower = int(rank)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (rank - lower)
