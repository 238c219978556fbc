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

# Library warnings that repeat what flowworker already logs, shown only at
# DEBUG: asyncpg's pool retries its connection floor in the background during
# an outage, beside the worker's own db.reconnecting / listener.lost events
# (which flowworker_db_reconnects_total counts); at WARNING it added a line
# every second or so, twice over, for one outage.
DEMOTED = ("Failed to restore the pool connection floor",)


def _event_and_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """Our events carry their fields; a library's record (asyncpg's pool, say)
    becomes one `library.log` event, its message on one line, no traceback."""
    if record.name == LOGGER.name:
        return record.getMessage(), getattr(record, "fields", {})
    message = " ".join(record.getMessage().split())[:500]
    fields = {"logger": record.name, "message": message}
    if record.exc_info and record.exc_info[0] is not None:
        fields["error"] = record.exc_info[0].__name__  # its traceback is not logged
    return "library.log", fields


def _demote_library_noise(record: logging.LogRecord) -> bool:
    """A DEMOTED library record becomes DEBUG, written only at that level."""
    if record.name != LOGGER.name and record.getMessage().startswith(DEMOTED):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return LOGGER.isEnabledFor(logging.DEBUG)
    return True


def _value(value: Any) -> Any:
    """Lists read as `a,b` on a terminal; JSON keeps them as arrays."""
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(item) for item in value)
    return value


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
        pairs = " ".join(f"{key}={_value(value)}" for key, value in fields.items())
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = record.levelname
        return f"{stamp}.{int(record.msecs):03d} {level:<7} {name} {pairs}"


def configure(log_format: str = "auto", level: str = "INFO") -> None:
    """Send flowworker's events to stderr in the chosen format."""
    if log_format == "auto":
        log_format = "human" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _HumanFormatter())
    handler.addFilter(_demote_library_noise)
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
