"""The completer against a fake database: batches, the one-by-one fallback
when the database refuses a batch, outcomes of runs held elsewhere ('busy')
sent again, and settle() exactly once per outcome whatever happens."""

from __future__ import annotations

import collections
import math
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg
import pytest

from flowworker import Flow
from flowworker.daemon import completer as completer_module
from flowworker.daemon.claims import ClaimedTask, Kind, Outcome
from flowworker.daemon.completer import Completer
from flowworker.daemon.db_asyncpg import ConnectionLostError
from flowworker.daemon.outcomes import OutcomeQueue
from tests.unit.fakes import DEADLINE, Calls, FakeDatabase, LogEvents, claimed

flow = Flow("acks")
NUL_OUTPUT = '{"text": "\\u0000"}'  # valid JSON that jsonb refuses


def outcome(kind: Kind = "completed", index: int = 0) -> Outcome:
    task = claimed(flow, index=index)
    if kind == "completed":
        return Outcome(task, kind, output_json=f'"out {index}"')
    if kind in ("error", "timeout"):
        return Outcome(task, kind, error="ValueError: no")
    return Outcome(task, kind)


def acked(call_args: tuple[Any, ...]) -> list[int]:
    """The task indexes an ack_tasks call wrote, in order."""
    return list(call_args[2])


def answer_by(decide: Callable[[int, str | None, str | None], str],
              ) -> Callable[..., list[dict[str, Any]]]:
    """An ack_tasks answer: decide(task_index, output, error) -> result, per
    position (ack_tasks' arguments: run ids, steps, indexes, attempts,
    outputs, errors, ...); no run ends."""
    def answer(*args: Any) -> list[dict[str, Any]]:
        indexes, outputs, errors = args[2], args[4], args[5]
        return [{"ord": i + 1, "result": decide(index, output, error), "run_status": None}
                for i, (index, output, error) in enumerate(zip(indexes, outputs, errors,
                                                               strict=True))]
    return answer


def applied(_index: int, output: str | None, _error: str | None) -> str:
    return "completed" if output is not None else "retry"


def refuses_nul(index: int, output: str | None, error: str | None) -> str:
    if output == NUL_OUTPUT:
        raise asyncpg.exceptions.UntranslatableCharacterError(
            "unsupported Unicode escape sequence")
    return applied(index, output, error)


class Rig:
    def __init__(self, db: FakeDatabase, give_up: Callable[[], bool] = lambda: False,
                 seconds_to_give_up: Callable[[], float] = lambda: math.inf) -> None:
        self.db = db
        self.outcomes = OutcomeQueue(100)
        self.settled = Calls[ClaimedTask]()
        self.failed_runs = Calls[uuid.UUID]()
        self.completer = Completer(db, self.outcomes, self.settled, self.failed_runs, give_up,
                                   seconds_to_give_up)

    async def write(self, *outcomes: Outcome) -> None:
        """Hand the completer these outcomes and let it finish."""
        for item in outcomes:
            await self.outcomes.put(item)
        self.outcomes.close()
        with anyio.fail_after(DEADLINE):
            await self.completer.run()

    def settled_once(self, *outcomes: Outcome) -> bool:
        counts = collections.Counter(id(task) for task in self.settled.seen)
        return counts == collections.Counter(id(o.task) for o in outcomes)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Busy outcomes are due again at once: what is waiting goes with them."""
    monkeypatch.setattr(completer_module, "backoff", lambda *_args: 0.0)


async def test_outcomes_are_written_in_one_batch() -> None:
    r = Rig(FakeDatabase({"ack_tasks": answer_by(applied), "release_tasks": 1}))
    written = [outcome("completed", 0), outcome("error", 1), outcome("release", 2),
               outcome("discard", 3)]
    await r.write(*written)
    assert [(c.name, c.args[2]) for c in r.db.calls.seen] == [
        ("release_tasks", [2]), ("ack_tasks", [0, 1])], "discard writes nothing"
    assert r.settled_once(*written)


async def test_a_refused_batch_is_written_one_by_one(events: LogEvents) -> None:
    r = Rig(FakeDatabase({"ack_tasks": answer_by(refuses_nul)}))
    good, bad, failed = outcome("completed", 0), outcome("completed", 1), outcome("error", 2)
    bad.output_json = NUL_OUTPUT
    await r.write(good, bad, failed)
    calls = r.db.calls_to("ack_tasks")
    assert [acked(c.args) for c in calls] == [[0, 1, 2], [0], [1], [1], [2]]
    refused = calls[3].args
    assert refused[4] == [None], "the refused output is not sent again"
    assert refused[5][0].startswith("output refused by the database: unsupported Unicode")
    assert (bad.kind, good.kind) == ("error", "completed")
    assert r.settled_once(good, bad, failed)
    assert len(events.named("task.failed")) == 2


async def test_a_failure_the_database_refuses_too_is_given_up_to_redelivery(
        events: LogEvents) -> None:
    r = Rig(FakeDatabase({"ack_tasks": asyncpg.exceptions.RaiseError("no")}))
    lone = outcome("error", 0)
    await r.write(lone)
    assert len(r.db.calls_to("ack_tasks")) == 1
    assert [e["task_index"] for e in events.named("task.ack_failed")] == [0]
    assert r.settled_once(lone)


async def test_busy_outcomes_are_sent_again_with_new_ones_and_written_once() -> None:
    db = FakeDatabase()
    r = Rig(db)
    first, held, later = outcome("completed", 0), outcome("completed", 1), outcome("completed", 2)

    async def held_elsewhere(*args: Any) -> list[dict[str, Any]]:
        await r.outcomes.put(later)  # arrives while the batch is written
        return answer_by(lambda index, *_: "busy" if index == 1 else "completed")(*args)

    db.script("ack_tasks", held_elsewhere, answer_by(applied))
    await r.write(first, held)
    assert [acked(c.args) for c in db.calls_to("ack_tasks")] == [[0, 1], [1, 2]]
    assert r.settled_once(first, held, later)


async def test_busy_outcomes_wait_out_their_backoff_beside_new_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(completer_module, "backoff", lambda *_args: 3600.0)
    db = FakeDatabase()
    r = Rig(db)
    held, fresh = outcome("completed", 0), outcome("completed", 1)
    db.script("ack_tasks", answer_by(lambda *_: "busy"), answer_by(applied))
    await r.outcomes.put(held)
    async with anyio.create_task_group() as group:
        group.start_soon(r.completer.run)
        await db.called("ack_tasks")
        await r.outcomes.put(fresh)
        [_, second] = await db.called("ack_tasks", 2)
        assert acked(second.args) == [1], "new outcomes are not held up by busy ones"
        assert await r.settled.reach(1) == [fresh.task]
        group.cancel_scope.cancel()
    assert held.task not in r.settled.seen, "still held for its next try"


async def test_busy_outcomes_are_given_up_once_give_up_is_true(events: LogEvents) -> None:
    stopping = False
    r = Rig(FakeDatabase(), give_up=lambda: stopping)

    def busy_then_stop(*args: Any) -> list[dict[str, Any]]:
        nonlocal stopping
        stopping = True  # the drain timeout passes while the run is held
        return answer_by(lambda *_: "busy")(*args)

    r.db.script("ack_tasks", busy_then_stop)
    held = outcome("completed", 0)
    await r.write(held)
    assert len(r.db.calls_to("ack_tasks")) == 1, "not sent again"
    assert [e["task_index"] for e in events.named("task.unwritten")] == [0]
    assert r.settled_once(held)


async def test_the_give_up_time_cuts_a_busy_backoff_short(
        monkeypatch: pytest.MonkeyPatch, events: LogEvents) -> None:
    """A worker stopping while a run is held exits at the give-up time, not
    at the end of a backoff that would outlast it."""
    monkeypatch.setattr(completer_module, "backoff", lambda *_args: 3600.0)
    stopping = False
    r = Rig(FakeDatabase(), give_up=lambda: stopping,
            seconds_to_give_up=lambda: 0.0 if stopping else math.inf)

    def busy_then_stop(*args: Any) -> list[dict[str, Any]]:
        nonlocal stopping
        stopping = True
        return answer_by(lambda *_: "busy")(*args)

    r.db.script("ack_tasks", busy_then_stop)
    held = outcome("completed", 0)
    await r.write(held)  # within DEADLINE, not after the hour-long backoff
    assert [e["task_index"] for e in events.named("task.unwritten")] == [0]
    assert r.settled_once(held)


async def test_a_lost_connection_is_retried_until_give_up(events: LogEvents) -> None:
    db = FakeDatabase({"ack_tasks": ConnectionLostError("server down")})
    r = Rig(db, give_up=lambda: len(db.retried.seen) >= 3)
    batch = [outcome("completed", 0), outcome("timeout", 1)]
    await r.write(*batch)
    assert len(db.calls_to("ack_tasks")) == 4
    assert len(events.named("task.unwritten")) == 2
    assert r.settled_once(*batch)


async def test_a_lost_connection_is_retried_and_the_batch_written() -> None:
    db = FakeDatabase()
    db.script("ack_tasks", ConnectionLostError("server down"), answer_by(applied))
    r = Rig(db)
    batch = [outcome("completed", 0), outcome("completed", 1)]
    await r.write(*batch)
    assert [acked(c.args) for c in db.calls_to("ack_tasks")] == [[0, 1], [0, 1]]
    assert r.settled_once(*batch)


async def test_a_failed_result_stops_its_run_and_a_retry_does_not() -> None:
    r = Rig(FakeDatabase({"ack_tasks": answer_by(
        lambda index, *_: {0: "failed", 1: "retry", 2: "stale"}[index])}))
    batch = [outcome("error", 0), outcome("timeout", 1), outcome("completed", 2)]
    await r.write(*batch)
    assert r.failed_runs.seen == [batch[0].task.run_id]
    assert r.settled_once(*batch)
