"""One event per line: `event` plus fields. Human on a terminal, JSON otherwise.

Payloads (inputs, outputs) are never logged; error text is logged only as
the exception type at the default level.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER = logging.getLogger("flowworker")


def _event_and_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """Our events carry their fields; a library's record (asyncpg's pool, say)
    becomes one `library.log` event, its message on one line, no traceback."""
    if record.name == LOGGER.name:
        return record.getMessage(), getattr(record, "fields", {})
    message = " ".join(record.getMessage().split())[:500]
    return "library.log", {"logger": record.name, "message": message}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        name, fields = _event_and_fields(record)
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": name,
        }
        body.update(fields)
        return json.dumps(body, default=str)


class _HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        name, fields = _event_and_fields(record)
        pairs = " ".join(f"{key}={value}" for key, value in fields.items())
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = record.levelname
        return f"{stamp}.{int(record.msecs):03d} {level:<7} {name} {pairs}"


def configure(log_format: str = "auto", level: str = "INFO") -> None:
    """Send flowworker's events to stderr in the chosen format."""
    if log_format == "auto":
        log_format = "human" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _HumanFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False
    library = logging.getLogger("asyncpg")
    library.handlers[:] = [handler]
    library.setLevel(max(logging.WARNING, LOGGER.level))
    library.propagate = False


def enabled(level: int) -> bool:
    """Whether an event at this level would be written (check before building
    the fields of a per-task event)."""
    return LOGGER.isEnabledFor(level)


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event, e.g. event("task.failed", flow="orders", ...).

    task.started and task.completed are DEBUG: at thousands of tasks a
    second they would cost as much as the tasks. Everything else is INFO."""
    if LOGGER.isEnabledFor(level):
        LOGGER.log(level, name, extra={"fields": fields})
