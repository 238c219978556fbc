"""Runs for the dashboard tests, made through the SQL functions a worker
calls (claim, complete, fail), on flow `shop`: check → charge → ship."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from tests.sql.helpers import claim, complete, define, fail, run_row, start

STEPS = {"check": [], "charge": ["check"], "ship": ["charge"]}


def define_shop(url: str) -> None:
    """Flow `shop`, one attempt per task: a failure fails the run."""
    with psycopg.connect(url, autocommit=True) as conn:
        define(conn, "shop", STEPS, max_attempts=1)


def failed_run(url: str, error: str = "card declined\n  at charge()") -> uuid.UUID:
    """A run whose `check` completed and whose `charge` failed with error."""
    with psycopg.connect(url, autocommit=True) as conn:
        run_id = start(conn, "shop", {"card": "4242"})
        (task,) = claim(conn, "shop")
        complete(conn, task, {"ok": True})
        (task,) = claim(conn, "shop")
        fail(conn, task, error)
    return run_id


def started_run(url: str) -> uuid.UUID:
    with psycopg.connect(url, autocommit=True) as conn:
        return start(conn, "shop", {"card": "4242"})


def run_status(url: str, run_id: uuid.UUID) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row: dict[str, Any] = run_row(conn, run_id)
    return str(row["status"])


def reader_url(url: str, role: str) -> str:
    """A login that may only read (flowworker_reader: SELECT, no EXECUTE)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE flowworker_reader")
    return make_conninfo(url, user=role)


def drop_role(url: str, role: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
