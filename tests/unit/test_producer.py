"""The producer against a fake database: how much it claims and when, and
what it does when a claim or a flow input cannot be had. Time is the
producer's own (CLAIM_COALESCE, its backoff); tests wait for what it does."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
import pytest

from flowworker import Context, Flow
from flowworker.daemon import producer as producer_module
from flowworker.daemon.claims import ClaimedTask
from flowworker.daemon.db_asyncpg import ConnectionLostError
from flowworker.daemon.flow_inputs import FlowInputs
from flowworker.daemon.inflight import InFlight
from flowworker.daemon.producer import (
    CLAIM_FAILED_BACKOFF_CAP,
    RECONNECT_BACKOFF_CAP,
    ClaimConfig,
    Producer,
)
from flowworker.daemon.slots import Slots
from tests.unit.fakes import DEADLINE, WORKER, Calls, FakeDatabase, LogEvents, claim_row

flow = Flow("orders", timeout=30)


@flow.step()
async def first(_input: Any, _ctx: Context) -> list[int]:
    return [1]


@flow.map(over=first)
async def each(_item: Any, _ctx: Context) -> None:
    return None


class WatchedSlots(Slots):
    """Slots that record each wait_free (how many free slots the producer
    waits for) and may act at that moment, as another flow's producer would."""

    def __init__(self, total: int) -> None:
        super().__init__(total)
        self.waits = Calls[int]()
        self.on_wait: Callable[[int], None] = lambda _at_least: None

    async def wait_free(self, at_least: int = 1) -> None:
        self.waits(at_least)
        self.on_wait(at_least)
        await super().wait_free(at_least)


@dataclass
class Rig:
    db: FakeDatabase
    slots: WatchedSlots
    producer: Producer
    submitted: Calls[ClaimedTask]
    waiting: Calls[None]  # the producer went to wait for a NOTIFY or its poll timer

    def wanted(self) -> list[int]:
        """How many tasks each claim asked for."""
        return [call.args[2] for call in self.db.calls_to("start_tasks")]


def rig(total: int, batch: int) -> Rig:
    db = FakeDatabase(defaults={"start_tasks": []})
    slots = WatchedSlots(total)
    submitted = Calls[ClaimedTask]()
    waiting = Calls[None]()

    def submit(task: ClaimedTask) -> None:  # as the executor does
        slots.take(1)
        submitted(task)

    def notify_works() -> bool:  # asked as the producer starts to wait for a signal
        waiting(None)
        return True

    # Polls an hour apart: only a wake() or the claims themselves make it claim again.
    config = ClaimConfig(flow, WORKER, batch, grace=5, poll_min=3600, poll_max=3600)
    inputs = FlowInputs(lambda run_ids: db.fetch("run_inputs", run_ids))
    producer = Producer(config, db, slots, InFlight(), submit, inputs, notify_works)
    return Rig(db, slots, producer, submitted, waiting)


@contextlib.asynccontextmanager
async def running(producer: Producer) -> AsyncIterator[None]:
    async with anyio.create_task_group() as group:
        group.start_soon(producer.run)
        yield
        group.cancel_scope.cancel()


def rows(count: int, step: str = "each") -> list[dict[str, Any]]:
    run_id = uuid.uuid4()
    return [claim_row(run_id, step, i) for i in range(count)]


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The cap of each backoff the producer waits; it waits none."""
    caps: list[float] = []

    def no_wait(_attempt: int, _base: float = 0.1, cap: float = 5.0) -> float:
        caps.append(cap)
        return 0.0

    monkeypatch.setattr(producer_module, "backoff", no_wait)
    return caps


# ---------------------------------------------------------------- how much, and when

async def test_a_busy_worker_waits_for_half_a_batch_of_free_slots(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_module, "CLAIM_COALESCE", 3600)  # only free slots end it
    r = rig(total=10, batch=10)
    r.slots.take(10)
    async with running(r.producer):
        await r.slots.waits.reach(1)
        r.slots.give(1)
        assert await r.slots.waits.reach(2) == [1, 5], "then waits for half a batch"
        r.slots.give(4)
        await r.db.called("start_tasks")
    assert r.wanted() == [5], "one claim for the five slots, not one per slot"


async def test_the_wait_is_short_then_it_claims_what_is_free() -> None:
    r = rig(total=10, batch=10)
    r.slots.take(10)
    async with running(r.producer):
        await r.slots.waits.reach(1)
        r.slots.give(1)
        await r.db.called("start_tasks")  # after CLAIM_COALESCE, with one slot free
    assert r.wanted() == [1]


@pytest.mark.parametrize(("total", "taken", "batch", "wanted"),
                         [(10, 0, 4, 4), (3, 0, 10, 3), (10, 3, 10, 7)])
async def test_a_claim_asks_for_free_slots_up_to_the_batch_size(
        total: int, taken: int, batch: int, wanted: int) -> None:
    r = rig(total, batch)
    r.slots.take(taken)
    async with running(r.producer):
        [call] = await r.db.called("start_tasks")
    assert call.args == (flow.slug, WORKER, wanted, 5)


async def test_no_claim_when_the_free_slots_were_taken_during_the_wait() -> None:
    r = rig(total=10, batch=10)
    r.slots.take(10)
    # Another flow's producer takes the one free slot while this one waits for more.
    r.slots.on_wait = lambda at_least: r.slots.take(1) if at_least == 5 else None
    async with running(r.producer):
        await r.slots.waits.reach(1)
        r.slots.give(1)
        assert await r.slots.waits.reach(3) == [1, 5, 1], "back to waiting for a slot"
        assert r.db.calls.seen == [], "no claim for zero tasks"
        r.slots.on_wait = lambda _at_least: None
        r.slots.give(1)
        await r.db.called("start_tasks")
    assert r.wanted() == [1]


async def test_it_claims_again_at_once_while_claims_come_back_full() -> None:
    r = rig(total=10, batch=2)
    r.db.script("start_tasks", rows(2), rows(2), rows(1))
    async with running(r.producer):
        await r.waiting.reach(1)
        assert r.wanted() == [2, 2, 2], "two full claims, then one that was not"
        assert len(r.submitted.seen) == 5
        r.producer.wake()  # a NOTIFY
        await r.db.called("start_tasks", 4)
        await r.waiting.reach(2)
    assert r.wanted() == [2, 2, 2, 2]
    assert r.producer.idle, "the last claim found nothing"


# ---------------------------------------------------------------- claims that fail

async def test_a_refused_claim_is_logged_and_tried_again_after_a_backoff(
        backoffs: list[float], events: LogEvents) -> None:
    r = rig(total=4, batch=4)
    r.db.script("start_tasks", asyncpg.exceptions.RaiseError("no claims today"), rows(2))
    async with running(r.producer):
        await r.submitted.reach(2)
    assert r.wanted() == [4, 4]
    assert backoffs == [CLAIM_FAILED_BACKOFF_CAP]
    [failed] = events.named("claim.failed")
    assert (failed["sqlstate"], failed["message"]) == ("P0001", "no claims today")
    assert r.slots.used == 2, "the refused claim's slots were given back"


@pytest.mark.parametrize("lost", [ConnectionLostError("server down"),
                                  asyncpg.exceptions.AdminShutdownError("terminating"),
                                  ConnectionResetError("reset by peer")],
                         ids=lambda exc: type(exc).__name__)
async def test_a_claim_whose_connection_is_lost_is_tried_again(
        lost: Exception, backoffs: list[float], events: LogEvents) -> None:
    r = rig(total=4, batch=4)
    r.db.script("start_tasks", lost, lost, rows(3))
    async with running(r.producer):
        await r.submitted.reach(3)
    assert r.wanted() == [4, 4, 4]
    assert backoffs == [RECONNECT_BACKOFF_CAP] * 2
    assert [e["what"] for e in events.named("db.reconnecting")] == ["start_tasks"] * 2


async def test_a_bug_is_not_swallowed_as_a_failed_claim(backoffs: list[float]) -> None:
    r = rig(total=4, batch=4)
    r.db.script("start_tasks", KeyError("msg_id"))
    with anyio.fail_after(DEADLINE), pytest.raises(KeyError):
        await r.producer.run()
    assert backoffs == []


# ---------------------------------------------------------------- large flow inputs

def run_inputs(*run_ids: uuid.UUID) -> list[dict[str, Any]]:
    return [{"run_id": run_id, "input": {"of": str(run_id)}, "size": 100} for run_id in run_ids]


async def test_large_flow_inputs_are_fetched_once_per_run() -> None:
    r = rig(total=10, batch=4)
    a, b = uuid.uuid4(), uuid.uuid4()
    r.db.script("start_tasks",
                [claim_row(a, index=0, fetch_flow_input=True),
                 claim_row(a, index=1, fetch_flow_input=True),
                 claim_row(b, index=0, fetch_flow_input=True), claim_row(b, "first")],
                [claim_row(a, index=2, fetch_flow_input=True)])
    r.db.defaults["run_inputs"] = lambda run_ids: run_inputs(*run_ids)
    async with running(r.producer):
        await r.waiting.reach(1)
    [fetched] = r.db.calls_to("run_inputs")
    assert sorted(fetched.args[0]) == sorted([a, b]), "one query for both runs"
    by_task = {(t.run_id, t.step_slug, t.task_index): t.flow_input for t in r.submitted.seen}
    assert by_task == {(a, "each", 0): {"of": str(a)}, (a, "each", 1): {"of": str(a)},
                       (b, "each", 0): {"of": str(b)}, (a, "each", 2): {"of": str(a)},
                       (b, "first", 0): {"i": 0}}, "a root step's input is the flow input"


@pytest.mark.parametrize("failure", [ConnectionLostError("server down"),
                                     asyncpg.exceptions.RaiseError("run_inputs refused")],
                         ids=lambda exc: type(exc).__name__)
async def test_tasks_whose_flow_input_cannot_be_fetched_are_handed_back(
        failure: Exception, events: LogEvents) -> None:
    r = rig(total=10, batch=4)
    a = uuid.uuid4()
    r.db.script("start_tasks", [claim_row(a, index=0, fetch_flow_input=True),
                                claim_row(a, index=1)])
    r.db.script("run_inputs", failure)
    async with running(r.producer):
        await r.waiting.reach(1)
    reasons = {t.task_index: t.cancel_reason for t in r.submitted.seen}
    assert reasons == {0: "release", 1: None}, "released, not run without its input"
    assert [e["tasks"] for e in events.named("flow_input.unavailable")] == [2]
