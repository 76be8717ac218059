"""The one table renderer: rows of dicts -> aligned plain text or markdown; floats get 2 decimals.

``columns`` is a list of ``(key, header)``; a row without a key shows an empty cell.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Columns = Sequence[tuple[str, str]]


def cell(value: Any) -> str:
    """How a value prints in a table: floats with 2 decimals, ``None`` empty."""
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


def text_table(rows: Sequence[dict[str, Any]], columns: Columns) -> str:
    """Plain-text table, columns padded to their widest cell, a dashed rule under the header."""
    body = [[cell(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, (_, h) in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) for (_, h), w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Columns) -> str:
    """GitHub markdown table (no alignment row styling, cells as :func:`cell`)."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)
