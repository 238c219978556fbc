"""D10: races forced 1,000 times each. Every round releases its parties
together from a barrier, each on a connection of its own, onto the same run:
  - complete vs fail of sibling map tasks (fail exhausting the task, or retrying it);
  - a late complete vs redelivery (the claim's vt expired; two workers re-claim);
  - cancel_run vs complete (of a run's last task, or of a task with a dependent),
    with a worker polling for the dependent at the same time.
Pass: no error of any kind reaches a caller (a deadlock would) and the
server counted no deadlock; each round ends in one of its legal outcomes,
and both orders really happened; counters never go negative; triggers that
watch every row change see no completed task and no finished run changed
afterwards, and exactly one applied completion per completed task."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.sql.helpers import (
    Claim,
    assert_invariants,
    claim,
    complete,
    deadlocks,
    define,
    fail,
    queue_table,
)

ROUNDS = 1000

# Watches every change of a task or run, from inside the transactions that
# make them, so that even an overwrite undone later would be seen.
WATCH = """
CREATE TABLE public.seen (what text NOT NULL, run_id uuid NOT NULL, step_slug text,
                          task_index int, detail jsonb);
CREATE FUNCTION public.watch_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'completed' AND to_jsonb(NEW) IS DISTINCT FROM to_jsonb(OLD) THEN
        INSERT INTO public.seen VALUES ('completed task changed', NEW.run_id, NEW.step_slug,
            NEW.task_index, jsonb_build_object('old', to_jsonb(OLD), 'new', to_jsonb(NEW)));
    END IF;
    IF NEW.status = 'completed' AND OLD.status <> 'completed' THEN
        INSERT INTO public.seen VALUES ('completion applied', NEW.run_id, NEW.step_slug,
            NEW.task_index, NEW.output);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER watch_tasks AFTER UPDATE ON flowworker.step_tasks
    FOR EACH ROW EXECUTE FUNCTION public.watch_tasks();
CREATE FUNCTION public.watch_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'started' AND to_jsonb(NEW) IS DISTINCT FROM to_jsonb(OLD) THEN
        INSERT INTO public.seen VALUES ('finished run changed', NEW.run_id, NULL, NULL,
            jsonb_build_object('old', to_jsonb(OLD), 'new', to_jsonb(NEW)));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER watch_runs AFTER UPDATE ON flowworker.runs
    FOR EACH ROW EXECUTE FUNCTION public.watch_runs();
"""

Party = Callable[[psycopg.Connection, int], Any]
TaskKey = tuple[uuid.UUID, str, int]


def report(text: str) -> None:
    """What the run measured, shown with pytest -s."""
    print(text)  # noqa: T201


def race(db_url: str, rounds: int, parties: Sequence[Party],
         before_round: Callable[[int], None] | None = None) -> list[list[Any]]:
    """Run `rounds` rounds; in each, every party runs once in its own thread
    on its own connection, all released together by a barrier whose action
    first runs before_round(r) while they wait. Returns results[party][round]
    and re-raises the first error any party hit."""
    results: list[list[Any]] = [[None] * rounds for _ in parties]
    errors: list[BaseException] = []
    next_round = [0]

    def prepare() -> None:
        if before_round is not None:
            before_round(next_round[0])
        next_round[0] += 1

    barrier = threading.Barrier(len(parties), action=prepare)

    def body(i: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                for r in range(rounds):
                    barrier.wait(timeout=60)
                    results[i][r] = parties[i](conn, r)
                # Report this session's statistics (deadlocks among them) now,
                # before the caller reads pg_stat_database.
                conn.execute("SELECT pg_stat_force_next_flush()")
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(len(parties))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a party hung"
    if errors:
        raise errors[0]
    return results


@dataclass
class Watch:
    conn: psycopg.Connection
    deadlocks_before: int

    def check(self, applied: set[TaskKey]) -> None:
        """No deadlock was counted; nothing finished was changed; the
        completions applied are exactly those callers were told applied."""
        self.conn.execute("SELECT pg_stat_force_next_flush()")
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        assert deadlocks(self.conn) == self.deadlocks_before
        broken = self.conn.execute(
            "SELECT what, run_id, step_slug, task_index, detail FROM public.seen "
            "WHERE what <> 'completion applied' LIMIT 5").fetchall()
        assert broken == []
        completions = self.conn.execute(
            "SELECT run_id, step_slug, task_index FROM public.seen "
            "WHERE what = 'completion applied'").fetchall()
        assert len(completions) == len(set(completions)), "a task was completed twice"
        assert set(completions) == applied
        negative = self.conn.execute("""
            SELECT (SELECT count(*) FROM flowworker.step_states
                    WHERE remaining_tasks < 0 OR remaining_deps < 0 OR initial_tasks < 0),
                   (SELECT count(*) FROM flowworker.runs WHERE remaining_steps < 0),
                   (SELECT count(*) FROM flowworker.step_tasks WHERE attempts_count < 0)
        """).fetchone()
        assert negative == (0, 0, 0)


def watch(conn: psycopg.Connection) -> Watch:
    conn.execute(WATCH)
    return Watch(conn, deadlocks(conn))


def start_many(conn: psycopg.Connection, flow: str, inputs: list[Any]) -> list[uuid.UUID]:
    """Start one run per input in one statement; ids in input order."""
    ids = [uuid.uuid4() for _ in inputs]
    conn.execute(
        "SELECT flowworker.start_flow(%s, i.input, i.run_id) "
        "FROM unnest(%s::uuid[], %s::jsonb[]) WITH ORDINALITY AS i(run_id, input, n) "
        "ORDER BY i.n", (flow, ids, [Jsonb(x) for x in inputs]))
    return ids


def claim_all(conn: psycopg.Connection, flow: str, expected: int) -> dict[TaskKey, Claim]:
    claims = claim(conn, flow, batch_size=expected + 1)
    assert len(claims) == expected
    return {(c.run_id, c.step_slug, c.task_index): c for c in claims}


def task_rows(conn: psycopg.Connection, flow: str) -> dict[TaskKey, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT run_id, step_slug, task_index, status, attempts_count, output "
        "FROM flowworker.step_tasks WHERE flow_slug = %s", (flow,)).fetchall()
    return {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}


def run_statuses(conn: psycopg.Connection, flow: str) -> dict[uuid.UUID, tuple[str, Any]]:
    rows = conn.execute("SELECT run_id, status, output FROM flowworker.runs "
                        "WHERE flow_slug = %s", (flow,)).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_complete_against_fail_of_sibling_map_tasks(conn: psycopg.Connection,
                                                    db_url: str) -> None:
    """Odd rounds: the failure exhausts its task, so the run fails and the
    completions either landed first (and stay) or find the run over. Even
    rounds: the failure retries, and the completions all land."""
    define(conn, "sx", {"each": []}, maps=("each",), max_attempts=1)
    define(conn, "sr", {"each": []}, maps=("each",), max_attempts=3, base_delay=600)
    half = ROUNDS // 2
    runs = {f: start_many(conn, f, [[0, 1, 2]] * half) for f in ("sx", "sr")}
    claims = {f: claim_all(conn, f, 3 * half) for f in ("sx", "sr")}
    w = watch(conn)

    def task(r: int, index: int) -> Claim:
        flow = "sx" if r % 2 else "sr"
        return claims[flow][(runs[flow][r // 2], "each", index)]

    def complete_0(c: psycopg.Connection, r: int) -> bool:
        return complete(c, task(r, 0), {"round": r, "index": 0})

    def fail_1(c: psycopg.Connection, r: int) -> str:
        return fail(c, task(r, 1), f"round {r}")

    def complete_2(c: psycopg.Connection, r: int) -> bool:
        return complete(c, task(r, 2), {"round": r, "index": 2})

    started = time.perf_counter()
    done_0, failed_1, done_2 = race(db_url, ROUNDS, [complete_0, fail_1, complete_2])
    elapsed = time.perf_counter() - started

    rows = {f: task_rows(conn, f) for f in ("sx", "sr")}
    status = {f: run_statuses(conn, f) for f in ("sx", "sr")}
    applied: set[TaskKey] = set()
    for r in range(ROUNDS):
        flow = "sx" if r % 2 else "sr"
        run_id = runs[flow][r // 2]
        t = rows[flow]
        for index, done in ((0, done_0[r]), (2, done_2[r])):
            key = (run_id, "each", index)
            if done:
                applied.add(key)
                assert t[key] == ("completed", 1, {"round": r, "index": index}), (r, t[key])
            else:
                assert (flow, t[key][0]) == ("sx", "cancelled"), (r, t[key])
        if flow == "sx":
            assert failed_1[r] == "failed", r
            assert t[(run_id, "each", 1)][:2] == ("failed", 1)
            assert status[flow][run_id][0] == "failed"
        else:
            assert (failed_1[r], done_0[r], done_2[r]) == ("retry", True, True), r
            assert t[(run_id, "each", 1)][:2] == ("queued", 1)
            assert status[flow][run_id][0] == "started"
    exhausting = range(1, ROUNDS, 2)
    landed_first = sum(1 for r in exhausting for d in (done_0[r], done_2[r]) if d)
    report(f"\ncomplete vs fail: {ROUNDS} rounds in {elapsed:.1f} s; in the exhausting rounds "
          f"{landed_first} of {ROUNDS} completions landed before the failure")
    assert 0 < landed_first < ROUNDS, "the race never went both ways"
    w.check(applied)
    # The stale completions stay stale when repeated; nothing changes.
    for r in exhausting[:50]:
        assert not complete(conn, task(r, 0), "again")
    w.check(applied)
    assert_invariants(conn, "sx")
    assert_invariants(conn, "sr")


def test_late_complete_against_redelivery(conn: psycopg.Connection, db_url: str) -> None:
    """Each round, a claim's visibility timeout runs out (the barrier action
    expires it) and its late completion meets two workers re-claiming it:
    exactly one of the three gets the task."""
    define(conn, "rd", {"a": []})
    runs = start_many(conn, "rd", [{"round": r} for r in range(ROUNDS)])
    claims = claim_all(conn, "rd", ROUNDS)
    first = [claims[(run_id, "a", 0)] for run_id in runs]
    w = watch(conn)
    worker_b, worker_c = uuid.uuid4(), uuid.uuid4()

    with psycopg.connect(db_url, autocommit=True) as clock:
        expire_one = sql.SQL(
            "UPDATE {} SET vt = now() - interval '1 s' WHERE msg_id = %s").format(queue_table("rd"))

        def expire(r: int) -> None:
            clock.execute(expire_one, (first[r].msg_id,))

        def late_complete(c: psycopg.Connection, r: int) -> bool:
            return complete(c, first[r], {"late": r})

        def reclaim_b(c: psycopg.Connection, r: int) -> list[Claim]:
            return claim(c, "rd", batch_size=1, worker=worker_b)

        def reclaim_c(c: psycopg.Connection, r: int) -> list[Claim]:
            return claim(c, "rd", batch_size=1, worker=worker_c)

        started = time.perf_counter()
        late, by_b, by_c = race(db_url, ROUNDS, [late_complete, reclaim_b, reclaim_c],
                                before_round=expire)
        elapsed = time.perf_counter() - started
        clock.execute("SELECT pg_stat_force_next_flush()")

    applied: set[TaskKey] = set()
    redelivered: list[Claim] = []
    for r in range(ROUNDS):
        winners = [bool(late[r]), bool(by_b[r]), bool(by_c[r])]
        assert sum(winners) == 1, (r, late[r], by_b[r], by_c[r])
        if late[r]:
            applied.add((runs[r], "a", 0))
        else:
            (again,) = by_b[r] or by_c[r]
            assert (again.run_id, again.task_index, again.attempt) == (runs[r], 0, 2), r
            assert again.input == {"round": r}
            redelivered.append(again)
    report(f"\nlate complete vs redelivery: {ROUNDS} rounds in {elapsed:.1f} s; the late "
          f"completion won {len(applied)}, redelivery {len(redelivered)}")
    assert applied, "the late completion never won"
    assert redelivered, "redelivery never won"
    rows = task_rows(conn, "rd")
    for key in applied:
        assert rows[key] == ("completed", 1, {"late": runs.index(key[0])})
    w.check(applied)
    # The new claims complete; the superseded ones stay refused.
    for again in redelivered:
        assert not complete(conn, first[runs.index(again.run_id)], "too late")
        assert complete(conn, again, {"redelivered": True})
        applied.add((again.run_id, "a", 0))
    assert {s for s, _ in run_statuses(conn, "rd").values()} == {"completed"}
    w.check(applied)
    assert_invariants(conn, "rd")


def test_cancel_against_complete(conn: psycopg.Connection, db_url: str) -> None:
    """Odd rounds: the completion would finish the run, so exactly one of
    cancel and complete decides how it ends. Even rounds: the completion
    starts a dependent step, which a polling worker may claim before the
    cancel lands; the run ends cancelled either way, with no message left."""
    define(conn, "cs", {"a": []})
    define(conn, "cx", {"a": [], "b": ["a"]})
    half = ROUNDS // 2
    runs = {f: start_many(conn, f, [{}] * half) for f in ("cs", "cx")}
    claims = {f: claim_all(conn, f, half) for f in ("cs", "cx")}
    w = watch(conn)

    def pick(r: int) -> tuple[str, uuid.UUID]:
        flow = "cs" if r % 2 else "cx"
        return flow, runs[flow][r // 2]

    def cancel(c: psycopg.Connection, r: int) -> str:
        _, run_id = pick(r)
        row = c.execute("SELECT status FROM flowworker.cancel_run(%s)", (run_id,)).fetchone()
        assert row is not None
        result: str = row[0]
        return result

    def complete_a(c: psycopg.Connection, r: int) -> bool:
        flow, run_id = pick(r)
        return complete(c, claims[flow][(run_id, "a", 0)], {"round": r})

    def poll(c: psycopg.Connection, r: int) -> list[Claim]:
        flow, _ = pick(r)
        return claim(c, flow, batch_size=10)

    started = time.perf_counter()
    cancelled, completed, polled = race(db_url, ROUNDS, [cancel, complete_a, poll])
    elapsed = time.perf_counter() - started

    rows = {f: task_rows(conn, f) for f in ("cs", "cx")}
    status = {f: run_statuses(conn, f) for f in ("cs", "cx")}
    applied: set[TaskKey] = set()
    won = {"cs": 0, "cx": 0}
    for r in range(ROUNDS):
        flow, run_id = pick(r)
        a = rows[flow][(run_id, "a", 0)]
        if completed[r]:
            won[flow] += 1
            applied.add((run_id, "a", 0))
            assert a == ("completed", 1, {"round": r})
        else:
            assert a[0] == "cancelled"
        if flow == "cs":
            assert polled[r] == []
            assert cancelled[r] == ("completed" if completed[r] else "cancelled"), r
            assert status[flow][run_id] == (
                ("completed", {"a": {"round": r}}) if completed[r] else ("cancelled", None))
        else:
            assert cancelled[r] == "cancelled", r
            assert status[flow][run_id][0] == "cancelled"
            b = rows[flow].get((run_id, "b", 0))
            assert (b is not None) == bool(completed[r]), r
            if b is not None:
                assert b[0] == "cancelled"
            for got in polled[r]:
                assert (got.run_id, got.step_slug) == (run_id, "b"), r
                assert not complete(conn, got, "after cancel")
    report(f"\ncancel vs complete: {ROUNDS} rounds in {elapsed:.1f} s; the completion won "
          f"{won['cs']} of {half} (last task) and {won['cx']} of {half} (with a dependent); "
          f"the poller claimed the dependent {sum(len(p) for p in polled)} times")
    for flow in ("cs", "cx"):
        assert 0 < won[flow] < half, f"{flow}: the race never went both ways"
    w.check(applied)
    assert_invariants(conn, "cs")
    assert_invariants(conn, "cx")
