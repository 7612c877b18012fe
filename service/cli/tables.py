"""Tables for the CLI that fit the terminal: when the columns do not fit, cells wrap onto more lines
instead of being cut to ``0.5…`` (rich's default). Piped output is laid out for 80 columns (``$COLUMNS``)."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table


def fitted_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]], *,
                 left: Sequence[str] = ()) -> Table:
    """A compact table. ``left`` columns (names, notes) are left-aligned and wrap; the others are numbers,
    right-aligned and kept whole (a column is never narrower than its widest number)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title_justify="left")
    for j, col in enumerate(columns):
        if col in left:  # wraps at spaces; a single word (a verifier name) folds only below 16 characters
            longest_word = max([len(w) for row in rows for w in row[j].split()] + [len(col)])
            table.add_column(col, justify="left", overflow="fold", min_width=min(longest_word, 16))
        else:
            widest = max([len(row[j]) for row in rows] + [max(len(w) for w in col.split())])
            table.add_column(col, justify="right", overflow="fold", min_width=widest)
    for row in rows:
        table.add_row(*row)
    return table
