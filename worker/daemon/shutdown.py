"""The stop sequence (ARCHITECTURE.md §3, Shutdown).

The first SIGTERM/SIGINT (or --drain finding nothing left) stops claiming,
hands back what has not started, and gives running handlers the shutdown
timeout; a second signal skips that wait. Past the timeout (and a second to
write what just finished), outcomes the database cannot take are given up:
their claims expire and are redelivered, and the worker still exits.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from flowworker import logs
from flowworker.daemon.inflight import InFlight
from flowworker.daemon.slots import Slots


class Shutdown:
    """Whether the worker is stopping, and how patient it still is.
    Made inside the event loop (it holds anyio primitives)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.stopping = False
        self.skip_wait = anyio.Event()  # set by the second signal
        self.stop_claiming = anyio.CancelScope()  # the producers run inside it
        self._give_up_at = float("inf")

    def begin(self, reason: str, held: int) -> None:
        """Stop claiming and drain (first signal, or --drain finished)."""
        if self.stopping:
            return
        self.stopping = True
        self._give_up_at = time.monotonic() + self.timeout + 1.0
        logs.event("worker.draining", reason=reason, in_flight=held,
                   shutdown_timeout=self.timeout)
        self.stop_claiming.cancel()

    def hurry(self, signal_name: str) -> None:
        """The second signal: skip the wait for running handlers."""
        logs.event("worker.hurry", signal=signal_name)
        self.skip_wait.set()

    def give_up(self) -> bool:
        """Whether outcomes the database cannot take now are to be dropped."""
        return self.skip_wait.is_set() or time.monotonic() > self._give_up_at

    def seconds_to_give_up(self) -> float:
        """How long until give_up() turns true (inf while not stopping)."""
        if self.skip_wait.is_set():
            return 0.0
        return max(0.0, self._give_up_at - time.monotonic())

    async def drain(self, inflight: InFlight, slots: Slots) -> None:
        """Hand back what has not started, give running handlers the
        shutdown timeout (or until a second signal), then hand back the rest."""
        inflight.release(started=False)
        with anyio.move_on_after(self.timeout):
            async with anyio.create_task_group() as race:
                async def first_wins(wait: Callable[[], Awaitable[None]]) -> None:
                    await wait()
                    race.cancel_scope.cancel()
                race.start_soon(first_wins, slots.wait_empty)
                race.start_soon(first_wins, self.skip_wait.wait)
        inflight.release(started=True)
