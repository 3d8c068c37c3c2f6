"""Plain-text rendering for the CLI: aligned tables and key/value blocks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def _cell(value: Any, width: int = 48) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        value = json.dumps(value, default=str)
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def block(obj: Mapping[str, Any]) -> str:
    width = max((len(k) for k in obj), default=0)
    lines = []
    for key, value in obj.items():
        if isinstance(value, list) and value and isinstance(value[0], Mapping):
            lines.append(f"{key}:")
            lines.append("  " + table(value).replace("\n", "\n  "))
        else:
            lines.append(f"{key.ljust(width)}  {_cell(value, 200)}")
    return "\n".join(lines)
