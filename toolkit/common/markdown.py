"""Markdown tables, the one shape every report of the toolkit writes (summary.md, MODEL_CARD.md,
the benchmark report, RECIPES.md's recipe table)."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence


def table(header: Sequence, rows: Iterable[Sequence], cell: Callable[[object], str] = str) -> list:
    """The lines of a markdown table: header, separator, then one line per row, each cell through `cell`.

    A `|` inside a cell would end it early, so it is escaped.
    """
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header)] + [line(cell(c) for c in row) for row in rows]
