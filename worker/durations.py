"""Durations as people type them: `7d`, `12h`, `1h30m`, `90s`, `2w`."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d{1,9})([smhdw])")
_WHOLE = re.compile(r"(?:\d{1,9}[smhdw])+")
MAX_SECONDS = 100 * 365 * 86400  # past this no timestamp arithmetic is sensible


def parse_duration(text: str) -> timedelta:
    """A positive duration from `<number><unit>` parts (units s, m, h, d, w);
    ValueError saying what is accepted otherwise."""
    value = text.strip().lower()
    if not _WHOLE.fullmatch(value):
        raise ValueError(f"{text!r} is not a duration: use e.g. 7d, 12h, 1h30m, 90s or 2w")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"{text!r}: a duration must be more than 0 and at most 100 years")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest `parse_duration` spelling of a whole number of seconds."""
    seconds = int(value.total_seconds())
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
