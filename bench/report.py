"""Result lines: each figure is printed as ``name: value`` the moment it is measured.

The same figures are kept for the closing summary (the lines `make bench` ends with) and
for ``bench/.work/results.json``, from which docs/benchmarks.md's table is filled in.
Histogram quantiles follow Prometheus' ``histogram_quantile`` (linear within a bucket), so
a figure read from the daemon's own metrics means what an operator's dashboard would show.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

Value = float | int | str


def format_value(value: Value) -> str:
    """Floats to 4 significant digits (enough to compare runs), everything else as is."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.0f}"
    return str(value)


@dataclass(slots=True)
class Recorder:
    """Prints each figure at once and remembers it, in order, for the summary."""

    values: dict[str, Value] = field(default_factory=dict)

    def emit(self, name: str, value: Value) -> None:
        self.values[name] = value
        print(f"{name}: {format_value(value)}", flush=True)

    def note(self, text: str) -> None:
        """Context that is not a figure (configuration, progress); ``#``-prefixed."""
        print(f"# {text}", flush=True)

    def summary(self, names: Sequence[str]) -> None:
        """Re-print ``names`` last (missing ones as ``n/a``): the lines `make bench` ends with."""
        print("# ---- summary ----", flush=True)
        for name in names:
            value = self.values.get(name)
            print(f"{name}: {'n/a' if value is None else format_value(value)}", flush=True)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.values, indent=2, sort_keys=False) + "\n")


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q`` quantile of a cumulative histogram ``[(upper_bound, count), …]``.

    Linear interpolation inside the bucket holding the rank, as Prometheus does; a rank in
    the ``+Inf`` bucket returns the highest finite bound (the answer is "at least that").
    """
    if not buckets:
        return math.nan
    ordered = sorted(buckets)
    total = ordered[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def share_at_most(limit: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Fraction of observations ≤ ``limit``, exact when ``limit`` is a bucket bound."""
    ordered = sorted(buckets)
    total = ordered[-1][1] if ordered else 0.0
    if total <= 0:
        return math.nan
    within = max((count for bound, count in ordered if bound <= limit), default=0.0)
    return within / total


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of raw samples (``q`` in 0..1)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[index]
