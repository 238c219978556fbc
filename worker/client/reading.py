"""Read runs: one by id, a page of them, or the one you wait for."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from uuid import UUID

import anyio
import psycopg
from psycopg import sql as pgsql

from flowworker.client._calls import RUN_ROW, Run, mapped_errors, run_id_of, sql
from flowworker.dsl import check_slug
from flowworker.errors import UnknownRunError

POLL_EVERY = 1.0  # seconds: the fallback when no notification comes (NOTIFY is a hint)


def get_run(conn: psycopg.Connection[Any], run_id: UUID | str) -> Run | None:
    """The run with this run_id, or None when there is none."""
    with mapped_errors(UnknownRunError), conn.cursor(row_factory=RUN_ROW) as cur:
        cur.execute(sql("client_get_run"), {"run_id": run_id_of(run_id)})
        return cur.fetchone()


async def get_run_async(conn: psycopg.AsyncConnection[Any], run_id: UUID | str) -> Run | None:
    """`get_run` for an AsyncConnection."""
    with mapped_errors(UnknownRunError):
        async with conn.cursor(row_factory=RUN_ROW) as cur:
            await cur.execute(sql("client_get_run"), {"run_id": run_id_of(run_id)})
            return await cur.fetchone()


def list_runs(conn: psycopg.Connection[Any], flow_slug: str | None = None,
              status: str | None = None, limit: int = 50,
              started_before: datetime | None = None) -> list[Run]:
    """Runs, newest first: of one flow and/or in one status, at most `limit`;
    `started_before` (the last run's started_at) gives the next page."""
    params = {"flow_slug": flow_slug, "status": status, "limit": limit,
              "before": started_before}
    with mapped_errors(UnknownRunError), conn.cursor(row_factory=RUN_ROW) as cur:
        cur.execute(sql("client_list_runs"), params)
        return cur.fetchall()


def wait_for_run(conn: psycopg.Connection[Any], run_id: UUID | str,
                 timeout: float | None = None) -> Run:
    """Block until the run is completed, failed or cancelled, and return it;
    TimeoutError after `timeout` seconds. It LISTENs for runs of the flow
    ending (one hint per transaction, no payload) and reads the run then,
    or every POLL_EVERY seconds at the latest. The connection must not be in
    a transaction: notifications arrive between transactions."""
    run = _existing(get_run(conn, run_id), run_id)
    conn.execute(_listen("LISTEN", run.flow_slug))
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not run.finished:
            left = POLL_EVERY if deadline is None else min(POLL_EVERY,
                                                           deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"run {run.run_id} is still {run.status} after {timeout} s")
            for _ in conn.notifies(timeout=left, stop_after=1):
                pass
            run = _existing(get_run(conn, run_id), run_id)
        return run
    finally:
        conn.execute(_listen("UNLISTEN", run.flow_slug))


async def wait_for_run_async(
        conn: psycopg.AsyncConnection[Any], run_id: UUID | str,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract: wait_for_run(conn, run_id, timeout)
) -> Run:
    """`wait_for_run` for an AsyncConnection."""
    run = _existing(await get_run_async(conn, run_id), run_id)
    await conn.execute(_listen("LISTEN", run.flow_slug))
    try:
        with anyio.fail_after(timeout):
            while not run.finished:
                with anyio.move_on_after(POLL_EVERY):
                    async for _ in conn.notifies(stop_after=1):
                        pass
                run = _existing(await get_run_async(conn, run_id), run_id)
        return run
    finally:
        await conn.execute(_listen("UNLISTEN", run.flow_slug))


def _listen(verb: str, flow_slug: str) -> pgsql.Composed:
    """(UN)LISTEN on the channel that runs of the flow ending notify
    (sql/schema/0108_function_run_ended.sql); the slug passes the allow-list."""
    channel = "flowworker_end_" + check_slug(flow_slug, "flow slug")
    return pgsql.SQL(verb + " {}").format(pgsql.Identifier(channel))


def _existing(run: Run | None, run_id: UUID | str) -> Run:
    if run is None:
        raise UnknownRunError(f"run {run_id} does not exist")
    return run
