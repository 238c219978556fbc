"""Run a task whose worker was lost twice (perhaps a poison) with nothing beside it.

start_tasks hands such a task out alone; if it kills this worker too, it must
take no other task along: not one still running here, not an outcome still
waiting to be written. So the worker first lets everything it holds finish and
be written, taking each slot as it frees so that no producer claims into it,
and keeps every slot until the task has finished. All the while the task's
claim is renewed, since the wait spends its visibility timeout.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from flowworker import logs
from flowworker.tasks import ClaimedTask, Slots

Renew = Callable[[ClaimedTask], Awaitable[bool]]  # False: the claim is no longer ours


async def run_alone(task: ClaimedTask, slots: Slots, dispatch: Callable[[ClaimedTask], None],
                    all_written: Callable[[], Awaitable[None]], renew: Renew,
                    renew_every: float) -> None:
    logs.event("task.isolated", in_flight=slots.used, **task.fields())
    held, dispatched = 0, False

    async def hold_every_slot() -> None:
        nonlocal held
        while held < slots.total:
            await slots.wait_free()
            free = slots.free
            slots.take(free)
            held += free

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
        # One isolated task at a time: two holding half the slots each would wait forever.
        if not await keep_claim_while(slots.alone.acquire):
            return
        try:
            if not (await keep_claim_while(hold_every_slot) and await keep_claim_while(all_written)
                    and await renew(task)):  # a fresh timeout for the run itself
                return
            slots.give(1)
            held -= 1
            dispatch(task)
            dispatched = True
            assert task.finished is not None
            await task.finished.wait()
        finally:
            slots.alone.release()
    except BaseException:
        if not dispatched:  # stopping: hand the claim back without spending an attempt
            task.cancel("release")
            dispatch(task)
        raise
    finally:
        slots.give(held)
