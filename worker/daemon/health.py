"""/metrics, /healthz and /readyz on --metrics-addr (127.0.0.1 by default).

Whoever reaches the address may send anything: a TCP probe that connects
and closes, TLS, garbage, a request that never ends. So requests are parsed
by h11, what one connection may send and how long it may stay is bounded,
so is the number of connections, and whatever goes wrong with a connection
ends that connection only, never the worker.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import NamedTuple

import anyio
import h11
from anyio.abc import Listener, SocketStream, TaskGroup, TaskStatus
from anyio.streams.stapled import MultiListener
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flowworker import logs
from flowworker.errors import ConfigurationError
from flowworker.metrics import REGISTRY

ReadyCheck = Callable[[], Awaitable[str | None]]

MAX_HEADER_BYTES = 8 * 1024  # request line and headers; more is answered 431
REQUEST_SECONDS = 5.0  # to send the request line and headers; then 408
CONNECTION_SECONDS = 10.0  # for everything, the answer and the close included
MAX_CONNECTIONS = 64  # more are closed at once: slow clients cannot use up fds
RECEIVE_BYTES = 4096
LINGER_SECONDS = 2.0  # after the answer, for the client to close first
LINGER_BYTES = 64 * 1024  # read and dropped meanwhile (a body we never wanted)
ACCEPT_BACKOFF_SECONDS = 0.1  # after accept() failed, e.g. out of file descriptors
TEXT = "text/plain; charset=utf-8"


class Reply(NamedTuple):
    status: int
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


def parse_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port)


async def serve(addr: str, ready: ReadyCheck,
                *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; `ready()` returns None when ready, else why not.

    Raises ConfigurationError when the address cannot be listened on."""
    listener = await _listen(addr)
    server = _Server(ready)
    async with listener, anyio.create_task_group() as connections:
        task_status.started()
        for one in listener.listeners:  # one per address the host resolved to
            connections.start_soon(server.accept, one, connections)


async def _listen(addr: str) -> MultiListener[SocketStream]:
    host, port = parse_addr(addr)
    try:
        return await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as exc:
        where = f"metrics address {host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"{where} is in use (another worker on this host?); give each worker its "
                "own --metrics-addr (FLOWWORKER_METRICS_ADDR) or `off`") from None
        raise ConfigurationError(
            f"cannot listen on {where}: {exc.strerror or exc}; choose another "
            "--metrics-addr (FLOWWORKER_METRICS_ADDR) or `off`") from None


class _Server:
    def __init__(self, ready: ReadyCheck) -> None:
        self._ready = ready
        # One readiness check at a time: a flood of /readyz must not take
        # every connection of the worker's pool.
        self._checking = anyio.Lock()
        self._open = 0

    async def accept(self, listener: Listener[SocketStream], connections: TaskGroup) -> None:
        while True:  # serve() only returns by raising what accept() raised
            try:
                await listener.serve(self._connection, connections)
            except OSError as exc:  # out of fds, a client gone before accept(): not fatal
                logs.event("http.accept_failed", logging.DEBUG,
                           error=errno.errorcode.get(exc.errno or 0, type(exc).__name__))
                await anyio.sleep(ACCEPT_BACKOFF_SECONDS)

    async def _connection(self, stream: SocketStream) -> None:
        async with stream:
            if self._open >= MAX_CONNECTIONS:
                logs.event("http.refused", logging.DEBUG, open=self._open)
                return
            self._open += 1
            try:
                with anyio.move_on_after(CONNECTION_SECONDS):
                    await self._exchange(stream)
            except Exception as exc:  # a reset, a client gone mid-answer: this connection ends
                logs.event("http.dropped", logging.DEBUG, error=type(exc).__name__)
            finally:
                self._open -= 1

    async def _exchange(self, stream: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            with anyio.fail_after(REQUEST_SECONDS):
                request = await _receive_request(conn, stream)
        except h11.RemoteProtocolError as exc:  # not HTTP, or headers past the limit
            await _reply(conn, stream, _plain(exc.error_status_hint))
        except TimeoutError:
            await _reply(conn, stream, _plain(408))
        else:
            if request is not None:  # None: closed without asking anything, a TCP probe
                await _reply(conn, stream, await self._answer(request),
                             head_only=request.method == b"HEAD")

    async def _answer(self, request: h11.Request) -> Reply:
        if request.method not in (b"GET", b"HEAD"):
            return _plain(405)._replace(headers=(("allow", "GET, HEAD"),))
        path = request.target.partition(b"?")[0]
        try:
            return await _route(path, self._ready_now)
        except Exception as exc:  # a bug behind one endpoint must not end the worker
            logs.event("http.failed", logging.WARNING, path=path.decode("ascii"),
                       error=type(exc).__name__)
            return _plain(500)

    async def _ready_now(self) -> str | None:
        async with self._checking:
            return await self._ready()


def _plain(status: int) -> Reply:
    return Reply(status, f"{HTTPStatus(status).phrase}\n".encode())


async def _receive_request(conn: h11.Connection, stream: SocketStream) -> h11.Request | None:
    """The request line and headers (the body is never read); None when the
    client closed before sending any."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                conn.receive_data(await stream.receive(RECEIVE_BYTES))
            except anyio.EndOfStream:
                conn.receive_data(b"")
        elif isinstance(event, h11.Request):
            return event
        else:
            return None


async def _reply(conn: h11.Connection, stream: SocketStream, reply: Reply, *,
                 head_only: bool = False) -> None:
    headers = [("content-type", reply.content_type), ("content-length", str(len(reply.body))),
               ("connection", "close"), *reply.headers]
    events: list[h11.Event] = [h11.Response(status_code=reply.status, headers=headers,
                                            reason=HTTPStatus(reply.status).phrase)]
    if not head_only:
        events.append(h11.Data(data=reply.body))
    events.append(h11.EndOfMessage())
    await stream.send(b"".join(conn.send(event) or b"" for event in events))
    await _linger(stream)


async def _linger(stream: SocketStream) -> None:
    """Close our side, then wait a little for the client to close first and
    drop what it still sends: closing on unread data would reset the
    connection and could destroy the answer before the client read it."""
    await stream.send_eof()
    with anyio.move_on_after(LINGER_SECONDS), contextlib.suppress(anyio.EndOfStream):
        dropped = 0
        while dropped < LINGER_BYTES:
            dropped += len(await stream.receive(RECEIVE_BYTES))


async def _route(path: bytes, ready: ReadyCheck) -> Reply:
    if path == b"/metrics":
        return Reply(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
    if path == b"/healthz":
        return Reply(200, b"ok\n")
    if path == b"/readyz":
        problem = await ready()
        if problem is None:
            return Reply(200, b"ready\n")
        return Reply(503, f"not ready: {problem}\n".encode())
    return Reply(404, b"not found\n")
