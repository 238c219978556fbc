"""What the dashboard may change, each through one SQL function of
ARCHITECTURE.md §7 (sql/queries/dashboard.sql), and what it says when the
database refuses: a role without the grant, a run in the wrong status, an
unknown run, step or flow. Nothing here writes a table."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from flowworker.ops import mapped_errors
from flowworker.schema import queries


@dataclass(frozen=True)
class Action:
    """name: the URL's last part; function: the SQL function it calls;
    statuses: the run statuses it applies to (empty: not a run action)."""

    name: str
    function: str
    statuses: tuple[str, ...] = ()

    @property
    def query(self) -> str:
        return f"dashboard_{self.function}"


RUN_ACTIONS = {a.name: a for a in (
    Action("cancel", "cancel_run", ("started", "paused")),
    Action("retry", "retry_run", ("failed", "cancelled")),
    Action("pause", "pause_run", ("started",)),
    Action("resume", "resume_run", ("paused",)),
)}
SIGNAL = Action("signal", "signal")
FLOW_ACTIONS = {a.name: a for a in (Action("pause", "pause_flow"),
                                     Action("resume", "resume_flow"))}
ALL_FUNCTIONS = sorted({a.function for a in (*RUN_ACTIONS.values(), SIGNAL,
                                              *FLOW_ACTIONS.values())})


class ActionRefusedError(Exception):
    """The database (or the request) refused an action; `status` is the
    HTTP status to answer with, the message what the page says."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def available(conn: psycopg.Connection[Any]) -> frozenset[str]:
    """The action functions this database's schema has."""
    with mapped_errors(conn):
        rows = conn.execute(queries()["dashboard_functions"], {"names": ALL_FUNCTIONS},
                            prepare=False).fetchall()
    return frozenset(name for (name,) in rows)


def run_actions_for(status: str, functions: frozenset[str]) -> list[Action]:
    """The run actions shown for a run in this status (none for a status
    this code does not know)."""
    return [a for a in RUN_ACTIONS.values() if status in a.statuses and a.function in functions]


def parse_payload(text: str) -> Any:
    """A signal's payload as typed in the form: JSON, {} when empty."""
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ActionRefusedError(f"the payload is not JSON: {exc}", 400) from None


def perform(conn: psycopg.Connection[Any], action: Action,
            params: Mapping[str, Any]) -> str:
    """Call the action's function; its one result (a status, 'already', a
    flow slug) as text."""
    values = {k: Jsonb(v) if k == "payload" else v for k, v in params.items()}
    try:
        row = conn.execute(queries()[action.query], values, prepare=False).fetchone()
    except pg_errors.InsufficientPrivilege:
        raise ActionRefusedError(_no_grant(conn, action), 403) from None
    except pg_errors.UndefinedFunction:
        raise ActionRefusedError(f"this database's flowworker schema has no {action.function}; "
                            "run `flowworker migrate`", 409) from None
    except (pg_errors.NoDataFound, pg_errors.UndefinedObject) as exc:
        raise ActionRefusedError(_first_line(exc), 404) from None
    except (pg_errors.ObjectNotInPrerequisiteState, pg_errors.InvalidParameterValue,
            pg_errors.RaiseException) as exc:
        raise ActionRefusedError(_first_line(exc), 409) from None
    except psycopg.Error:
        with mapped_errors(conn):
            raise
    assert row is not None
    return str(row[0])


def _no_grant(conn: psycopg.Connection[Any], action: Action) -> str:
    role = conn.info.parameter_status("session_authorization") or conn.info.user
    return (f"permission denied: the database role {role} may not run "
            f"flowworker.{action.function} ({action.name}). Actions need a role granted "
            "flowworker_operator (cancel alone: flowworker_enqueuer); this one can only read.")


def _first_line(exc: psycopg.Error) -> str:
    lines = str(exc).strip().splitlines()
    return (exc.diag.message_primary if exc.diag else None) or (lines[0] if lines else "refused")
