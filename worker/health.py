"""/metrics, /healthz and /readyz on --metrics-addr (127.0.0.1 by default)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import SocketStream, TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flowworker.metrics import REGISTRY

ReadyCheck = Callable[[], Awaitable[str | None]]


def parse_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port)


async def serve(addr: str, ready: ReadyCheck,
                *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; `ready()` returns None when ready, else why not."""
    host, port = parse_addr(addr)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    task_status.started()

    async def handle(stream: SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(5):
                request = await stream.receive(4096)
                path = request.split(b" ", 2)[1].decode() if request.count(b" ") >= 2 else "/"
                status, ctype, body = await _respond(path.split("?")[0], ready)
                head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
                await stream.send(head.encode() + body)

    await listener.serve(handle)


async def _respond(path: str, ready: ReadyCheck) -> tuple[str, str, bytes]:
    if path == "/metrics":
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
    if path == "/healthz":
        return "200 OK", "text/plain", b"ok\n"
    if path == "/readyz":
        problem = await ready()
        if problem is None:
            return "200 OK", "text/plain", b"ready\n"
        return "503 Service Unavailable", "text/plain", f"not ready: {problem}\n".encode()
    return "404 Not Found", "text/plain", b"not found\n"
