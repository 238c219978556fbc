"""The LISTEN connection: wakes producers on NOTIFY, reconnects when lost."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import anyio
import asyncpg

from flowworker import connect_errors, logs, metrics
from flowworker.daemon.db_asyncpg import ConnectionLostError, backoff, connect, is_retryable
from flowworker.errors import ConfigurationError, DatabaseRefusedError

CHECK_INTERVAL = 2.0  # seconds between liveness checks of the LISTEN connection
CHECK_TIMEOUT = 3.0
PROBE_TIMEOUT = 2.0  # seconds a NOTIFY sent from another connection may take to arrive


class Listener:
    """Holds one connection LISTENing on every flow's channel.

    `wake(flow_slug)` is called for each notification and once per flow after
    every (re)LISTEN, because notifications sent while we were away are lost.
    """

    def __init__(self, url: str, flow_slugs: list[str], wake: Callable[[str], None],
                 send_probe: Callable[[str], Awaitable[None]], refuse_without: bool,
                 statement_cache_size: int = 100, command_timeout: float = 30.0) -> None:
        self.url = url
        self.command_timeout = command_timeout
        self.statement_cache_size = statement_cache_size
        self.channels = {f"flowworker_{slug}": slug for slug in flow_slugs}
        self.wake = wake
        self.send_probe = send_probe
        self.refuse_without = refuse_without
        self.up = False
        self.available = True  # False once a probe showed NOTIFY cannot reach us
        self.settled = anyio.Event()  # set at the first LISTEN, or when there can be none

    def _on_notify(self, _conn: object, _pid: int, channel: str, _payload: str) -> None:
        slug = self.channels.get(channel)
        if slug is not None:
            self.wake(slug)

    async def run(self) -> None:
        self._attempt = 0
        while self.available:
            try:
                await self._listen_until_lost()
                if self.available:
                    metrics.DB_RECONNECTS.inc()
                    logs.event("listener.lost", error="connection closed")
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                self._set_up(False)
                metrics.DB_RECONNECTS.inc()
                logs.event("listener.lost", error=type(exc.__cause__ or exc).__name__)
                await anyio.sleep(backoff(self._attempt))
                self._attempt += 1

    async def _listen_until_lost(self) -> None:
        try:
            conn = await connect(self.url, timeout=10,
                                 statement_cache_size=self.statement_cache_size,
                                 command_timeout=self.command_timeout,
                                 server_settings={"application_name": "flowworker-listener"})
        except Exception as exc:
            problem = connect_errors.from_asyncpg(self.url, exc)
            if isinstance(problem, DatabaseRefusedError) and not self.settled.is_set():
                # No such database or role before the first LISTEN: the URL is
                # wrong, and waiting will not mend it. Later (a password rotated
                # under a running worker) it is waited out like the pool's.
                raise problem from None
            raise ConnectionLostError(str(problem)) from exc  # restarting, refused: wait
        # A connection the server ends is down at once, not at the next check.
        lost = anyio.Event()

        def on_lost(_conn: object) -> None:
            self._set_up(False)
            lost.set()

        conn.add_termination_listener(on_lost)
        try:
            with anyio.fail_after(self.command_timeout + PROBE_TIMEOUT):
                for channel in self.channels:
                    await conn.add_listener(channel, self._on_notify)
                if not await self._probe(conn):
                    self._unavailable()
                    return
            self._set_up(True)
            self._attempt = 0  # a loss after a good LISTEN reconnects at once
            self.settled.set()
            logs.event("listener.connected", channels=len(self.channels))
            for slug in self.channels.values():
                self.wake(slug)
            while not conn.is_closed():
                with anyio.move_on_after(CHECK_INTERVAL):
                    await lost.wait()
                if lost.is_set():
                    return
                with anyio.fail_after(CHECK_TIMEOUT):
                    await conn.fetchval("SELECT 1")
        finally:
            self._set_up(False)
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await conn.close(timeout=1)
            conn.terminate()

    async def _probe(self, conn: asyncpg.Connection) -> bool:
        """Does a NOTIFY sent from another connection reach this one? Not
        through PgBouncer in transaction pooling mode, for one."""
        channel = f"flowworker_probe_{uuid.uuid4().hex[:16]}"
        arrived = anyio.Event()

        def on_probe(*_: object) -> None:
            arrived.set()

        await conn.add_listener(channel, on_probe)
        try:
            await self.send_probe(channel)
            with anyio.move_on_after(PROBE_TIMEOUT):
                await arrived.wait()
        finally:
            await conn.remove_listener(channel, on_probe)
        return arrived.is_set()

    def _unavailable(self) -> None:
        reason = ("NOTIFY sent from another connection never reached the LISTEN connection "
                  "(PgBouncer in transaction pooling mode?)")
        if self.refuse_without:
            raise ConfigurationError(f"{reason}; use --signal poll, or let the worker fall "
                                     "back to polling with FLOWWORKER_LISTEN_UNAVAILABLE=poll")
        self.available = False
        self.settled.set()
        logs.event("listener.unavailable", fallback="poll", reason=reason)

    def _set_up(self, up: bool) -> None:
        self.up = up
        metrics.LISTENER_UP.set(1 if up else 0)



