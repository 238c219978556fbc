"""run_alone: a task whose worker was lost twice starts only once its
flow holds nothing else here, keeps its claim alive while it waits, drops
it when the claim is lost, and hands it back if stopped before it ran."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import anyio

from flowworker import Flow
from flowworker.daemon.claims import ClaimedTask
from flowworker.daemon.inflight import InFlight
from flowworker.daemon.isolation import run_alone
from flowworker.daemon.slots import Slots
from tests.unit.fakes import Calls, claimed, quiet

mine, other = Flow("mine"), Flow("other")
HOUR = 3600.0  # a renewal interval that never comes during a test


class Renewals:
    """The claim renewal run_alone calls: records when, answers from a list
    (then True: the claim is still ours)."""

    def __init__(self, *answers: bool) -> None:
        self.answers = list(answers)
        self.at = Calls[float]()

    async def __call__(self, _task: ClaimedTask) -> bool:
        self.at(time.monotonic())
        return self.answers.pop(0) if self.answers else True


class Rig:
    def __init__(self, renew: Renewals, renew_every: float = HOUR, slots: int = 4) -> None:
        self.inflight = InFlight()
        self.slots = Slots(slots)
        self.submitted = Calls[ClaimedTask]()
        self.renew = renew
        self.renew_every = renew_every
        self.suspect = claimed(mine, isolated=True)
        self.returned = anyio.Event()

    def hold(self, flow: Flow) -> ClaimedTask:
        task = claimed(flow)
        self.inflight.add(task)
        return task

    async def run(self) -> None:
        await run_alone(self.suspect, self.inflight, self.slots, self.submitted, self.renew,
                        self.renew_every)
        self.returned.set()


@contextlib.asynccontextmanager
async def running(r: Rig) -> AsyncIterator[anyio.abc.TaskGroup]:
    async with anyio.create_task_group() as group:
        group.start_soon(r.run)
        yield group


async def test_the_suspect_waits_for_its_own_flows_tasks_only() -> None:
    r = Rig(Renewals())
    held = [r.hold(mine), r.hold(mine)]
    r.hold(other)  # still held when the suspect starts
    async with running(r):
        await quiet()
        r.inflight.settle(held[0])
        await quiet()
        assert r.submitted.seen == [], "one of its flow's tasks is still held"
        r.inflight.settle(held[1])
        assert await r.submitted.reach(1) == [r.suspect]
        assert len(r.renew.at.seen) == 1, "a fresh claim for the run itself"
        await quiet()
        assert not r.returned.is_set(), "the producer waits for the suspect to finish"
        assert r.suspect.finished is not None
        r.suspect.finished.set()
    assert r.returned.is_set()


async def test_it_waits_for_a_free_slot_too() -> None:
    r = Rig(Renewals(), slots=1)
    r.slots.take(1)
    async with running(r):
        await quiet()
        assert r.submitted.seen == []
        r.slots.give(1)
        await r.submitted.reach(1)
        assert r.suspect.finished is not None
        r.suspect.finished.set()


async def test_the_claim_is_renewed_on_schedule_while_it_waits() -> None:
    every = 0.02
    r = Rig(Renewals(), renew_every=every)
    r.hold(mine)
    began = time.monotonic()
    async with running(r) as group:
        renewed = await r.renew.at.reach(3)
        group.cancel_scope.cancel()
    gaps = [later - earlier for earlier, later in zip([began, *renewed], renewed, strict=False)]
    assert all(every - 0.001 <= gap < every + 0.5 for gap in gaps), gaps
    assert r.submitted.seen == [r.suspect], "handed back when stopped"
    assert r.suspect.cancel_reason == "release"


async def test_a_lost_claim_is_dropped() -> None:
    r = Rig(Renewals(False), renew_every=0.01)
    r.hold(mine)
    async with running(r):
        await r.returned.wait()
    assert (r.submitted.seen, r.suspect.cancel_reason) == ([], None), "not run, not released"


async def test_a_claim_lost_while_its_flow_settled_is_dropped() -> None:
    r = Rig(Renewals(False))
    held = r.hold(mine)
    async with running(r):
        await quiet()
        r.inflight.settle(held)
        await r.returned.wait()
    assert (r.submitted.seen, len(r.renew.at.seen)) == ([], 1)


async def test_stopped_before_it_started_it_is_handed_back() -> None:
    r = Rig(Renewals())
    r.hold(mine)
    async with running(r) as group:
        await quiet()
        group.cancel_scope.cancel()
    assert r.submitted.seen == [r.suspect]
    assert r.suspect.cancel_reason == "release"
    assert not r.returned.is_set()


async def test_stopped_while_it_runs_it_is_not_handed_back() -> None:
    r = Rig(Renewals())
    async with running(r) as group:
        await r.submitted.reach(1)
        group.cancel_scope.cancel()
    assert r.submitted.seen == [r.suspect], "submitted once"
    assert r.suspect.cancel_reason is None
