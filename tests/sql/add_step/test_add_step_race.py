"""A step added while a run starts: the run sees all of the flow or none of the new step."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg

from tests.sql.helpers import assert_invariants, claim, complete, define, run_row, start


def test_start_flow_waits_for_a_concurrent_add_step(conn: psycopg.Connection,
                                                    db_url: str) -> None:
    define(conn, "grow", {"a": []})
    started: list[uuid.UUID] = []
    errors: list[BaseException] = []

    with psycopg.connect(db_url) as definer, psycopg.connect(db_url, autocommit=True) as runner:
        definer.execute("SELECT flowworker.add_step('grow', 'b')")  # transaction stays open

        def body() -> None:
            try:
                started.append(start(runner, "grow"))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=body)
        thread.start()
        deadline = time.monotonic() + 10
        pid = runner.info.backend_pid
        while thread.is_alive() and conn.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                (pid,)).fetchone() != ("Lock",):
            assert time.monotonic() < deadline, "start_flow neither waited nor finished"
            time.sleep(0.01)
        definer.commit()
        thread.join(timeout=30)
    assert errors == []
    (run_id,) = started

    states = conn.execute("SELECT step_slug FROM flowworker.step_states WHERE run_id = %s "
                          "ORDER BY 1", (run_id,)).fetchall()
    assert run_row(conn, run_id)["remaining_steps"] == len(states)
    for c in claim(conn, "grow"):
        assert complete(conn, c, c.step_slug)
    run = run_row(conn, run_id)
    assert run["status"] == "completed"
    assert run["output"] == {slug: slug for (slug,) in states}
    assert_invariants(conn, "grow")
