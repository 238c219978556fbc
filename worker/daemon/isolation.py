"""Run a task whose worker was lost twice (perhaps a poison) alone in its flow.

start_tasks hands such a task out alone; if it kills this worker too, it
must take none of its flow's tasks along: not one still running here, not an
outcome still waiting to be written. Its producer (the only one claiming
for the flow) waits here, so nothing more of the flow is claimed; the task
starts once everything the worker holds of its flow is settled, and the
producer goes on once the task has finished. Other flows are not held up:
their tasks die with the worker only if the task is a poison, and that
counts as one lost attempt for each. All the while the task's claim is
renewed, since the wait spends its visibility timeout.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from flowworker import logs
from flowworker.daemon.claims import ClaimedTask
from flowworker.daemon.inflight import InFlight
from flowworker.daemon.slots import Slots

Renew = Callable[[ClaimedTask], Awaitable[bool]]  # False: the claim is no longer ours


async def run_alone(task: ClaimedTask, inflight: InFlight, slots: Slots,
                    submit: Callable[[ClaimedTask], None], renew: Renew,
                    renew_every: float) -> None:
    logs.event("task.isolated", in_flight=inflight.held(task.flow.slug), **task.fields())
    submitted = False
    # One renewal schedule across all the waits: the claim was made just now.
    renew_at = time.monotonic() + renew_every

    async def keep_claim_while(wait: Callable[[], Awaitable[object]]) -> bool:
        nonlocal renew_at
        while True:
            with anyio.move_on_after(max(0.0, renew_at - time.monotonic())):
                await wait()
                return True
            if not await renew(task):
                return False
            renew_at = time.monotonic() + renew_every

    try:
        if not (await keep_claim_while(lambda: inflight.wait_flow_settled(task.flow.slug))
                and await renew(task)  # a fresh timeout for the run itself
                and await keep_claim_while(slots.wait_free)):
            return
        submit(task)  # no await since wait_free returned: the slot is still free
        submitted = True
        assert task.finished is not None
        await task.finished.wait()
    except BaseException:
        if not submitted:  # stopping: hand the claim back without spending an attempt
            task.cancel("release")
            submit(task)
        raise
