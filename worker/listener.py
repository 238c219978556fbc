"""The LISTEN connection: wakes producers on NOTIFY, reconnects when lost."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from flowworker import logs, metrics
from flowworker.dbpool import backoff, connect, is_retryable

CHECK_INTERVAL = 2.0  # seconds between liveness checks of the LISTEN connection
CHECK_TIMEOUT = 3.0


class Listener:
    """Holds one connection LISTENing on every flow's channel.

    `wake(flow_slug)` is called for each notification and once per flow after
    every (re)LISTEN, because notifications sent while we were away are lost.
    """

    def __init__(self, url: str, flow_slugs: list[str], wake: Callable[[str], None]) -> None:
        self.url = url
        self.channels = {f"flowworker_{slug}": slug for slug in flow_slugs}
        self.wake = wake
        self.up = False
        self.connected = anyio.Event()  # set once, at the first LISTEN

    def _on_notify(self, _conn: object, _pid: int, channel: str, _payload: str) -> None:
        slug = self.channels.get(channel)
        if slug is not None:
            self.wake(slug)

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._listen_until_lost()
                attempt = 0
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                self._set_up(False)
                logs.event("listener.lost", error=type(exc).__name__)
                await anyio.sleep(backoff(attempt))
                attempt += 1

    async def _listen_until_lost(self) -> None:
        conn = await connect(self.url, timeout=10,
                             server_settings={"application_name": "flowworker-listener"})
        try:
            for channel in self.channels:
                await conn.add_listener(channel, self._on_notify)
            self._set_up(True)
            self.connected.set()
            logs.event("listener.connected", channels=len(self.channels))
            for slug in self.channels.values():
                self.wake(slug)
            while True:
                await anyio.sleep(CHECK_INTERVAL)
                with anyio.fail_after(CHECK_TIMEOUT):
                    await conn.fetchval("SELECT 1")
        finally:
            self._set_up(False)
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await conn.close(timeout=1)
            conn.terminate()

    def _set_up(self, up: bool) -> None:
        self.up = up
        metrics.LISTENER_UP.set(1 if up else 0)



