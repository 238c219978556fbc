"""Tables for a person: aligned columns (rich), colour only on a terminal;
piped, nothing wraps, so each row stays one line for grep and cut."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Colours of states, for a terminal; unknown (newer) statuses stay plain.
STATE_STYLES = {
    "completed": "green", "failed": "bold red", "cancelled": "yellow", "started": "cyan",
    "queued": "cyan", "created": "dim", "skipped": "dim", "live": "green", "lost": "bold red",
    "stopped": "dim",
}
ERROR_CHARS = 80  # of an error's first line, in tables
WIDE = 10_000  # columns when piped: no wrapping


def console() -> Console:
    """stdout; colour and width from the terminal, or none and no wrap.
    No markup or emoji codes: error messages and payloads are shown as they
    are ("[red]" or ":x:" in an error is text)."""
    tty = sys.stdout.isatty()
    return Console(highlight=False, markup=False, emoji=False, soft_wrap=not tty,
                   width=None if tty else WIDE)


def print_table(out: Console, columns: Sequence[str], rows: Sequence[Sequence[str | Text]],
                right: Sequence[str] = (), empty: str = "none") -> None:
    """Print a table on `out` (or `empty` when there are no rows); piped,
    without the padding after the last column."""
    if not rows:
        out.print(empty)
        return
    if out.is_terminal:
        out.print(table(columns, rows, right))
        return
    with out.capture() as captured:
        out.print(table(columns, rows, right))
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    sys.stdout.flush()


def table(columns: Sequence[str], rows: Sequence[Sequence[str | Text]],
          right: Sequence[str] = ()) -> Table:
    """A borderless table; columns named in `right` are right-aligned."""
    out = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in columns:
        out.add_column(name, justify="right" if name in right else "left",
                       overflow="fold", no_wrap=not sys.stdout.isatty())
    for row in rows:
        out.add_row(*row)
    return out


def state(value: str | None) -> Text:
    return Text(value or "-", style=STATE_STYLES.get(value or "", ""))


def when(value: datetime | None) -> str:
    """A time in the local time zone, to the second."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def seconds(value: float | None) -> str:
    """A duration or an age, short: 0.21 s, 12.0 s, 3m05s, 2h10m, 3d4h."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"
    whole = int(value)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                      ("m", 60, "s", 1)):
        if whole >= size:
            return f"{whole // size}{unit}{(whole % size) // sub_size:02d}{sub}"
    return f"{whole} s"  # unreachable: value >= 60 matched a unit


def first_line(text: str | None, limit: int = ERROR_CHARS) -> str:
    """An error's first non-empty line, cut to `limit` characters."""
    if not text:
        return ""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def count(value: int) -> str:
    return f"{value:,}"
