"""worker/daemon/health.py in process: what each endpoint answers, what a bad
request gets, and the bounds (header size, request time, connections).
tests/faults/test_security_http.py attacks a real worker's endpoint."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from flowworker.daemon import health
from flowworker.devdb import free_port
from flowworker.errors import ConfigurationError

GET = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"


async def always_ready() -> str | None:
    return None


async def never_ready() -> str | None:
    return "listener down"


async def broken_check() -> str | None:
    raise RuntimeError("a bug in the ready check")


@asynccontextmanager
async def serving(ready: health.ReadyCheck = always_ready) -> AsyncIterator[int]:
    port = free_port()
    async with anyio.create_task_group() as group:
        await group.start(health.serve, f"127.0.0.1:{port}", ready)
        yield port
        group.cancel_scope.cancel()


async def ask(port: int, data: bytes, *, finish: bool = True) -> bytes:
    """Send data (then our FIN); everything the server sends until it closes."""
    chunks: list[bytes] = []
    async with await anyio.connect_tcp("127.0.0.1", port) as client:
        await client.send(data)
        if finish:
            await client.send_eof()
        with anyio.fail_after(10):
            while True:
                try:
                    chunks.append(await client.receive())
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
    return b"".join(chunks)


def parse(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


@pytest.mark.parametrize(("request_bytes", "status", "body"), [
    (GET % b"/healthz", 200, b"ok\n"),
    (GET % b"/healthz?probe=1&x", 200, b"ok\n"),
    (GET % b"/readyz", 200, b"ready\n"),
    (GET % b"/nope", 404, b"not found\n"),
    (b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, b""),
    (b"GET /healthz HTTP/1.0\r\n\r\n", 200, b"ok\n"),
    (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 405,
     b"Method Not Allowed\n"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, b"Bad Request\n"),
    (b"GET /\xff HTTP/1.1\r\n\r\n", 400, b"Bad Request\n"),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * health.MAX_HEADER_BYTES, 431,
     b"Request Header Fields Too Large\n"),
])
async def test_answers(request_bytes: bytes, status: int, body: bytes) -> None:
    async with serving() as port:
        got_status, headers, got_body = parse(await ask(port, request_bytes))
    assert (got_status, got_body) == (status, body)
    assert headers["connection"] == "close"
    if request_bytes.startswith(b"HEAD"):
        assert headers["content-length"] == "3"
    if status == 405:
        assert headers["allow"] == "GET, HEAD"


async def test_metrics_are_prometheus_text() -> None:
    async with serving() as port:
        status, headers, body = parse(await ask(port, GET % b"/metrics"))
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE_LATEST
    assert b"# TYPE flowworker_" in body
    assert headers["content-length"] == str(len(body))


async def test_readyz_says_why_not() -> None:
    async with serving(never_ready) as port:
        status, _, body = parse(await ask(port, GET % b"/readyz"))
    assert (status, body) == (503, b"not ready: listener down\n")


async def test_a_failing_ready_check_is_a_500_and_serving_goes_on() -> None:
    async with serving(broken_check) as port:
        assert parse(await ask(port, GET % b"/readyz"))[0] == 500
        assert parse(await ask(port, GET % b"/healthz"))[0] == 200


async def test_readiness_checks_run_one_at_a_time() -> None:
    """Each check may take a database connection; a /readyz flood takes one."""
    running, most = 0, 0

    async def slow_check() -> str | None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.sleep(0.02)  # a query's worth of time
        running -= 1
        return None

    statuses: list[int] = []

    async def one(port: int) -> None:
        statuses.append(parse(await ask(port, GET % b"/readyz"))[0])

    async with serving(slow_check) as port, anyio.create_task_group() as clients:
        for _ in range(8):
            clients.start_soon(one, port)
    assert statuses == [200] * 8
    assert most == 1


async def test_a_request_that_never_ends_gets_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "REQUEST_SECONDS", 0.2)
    async with serving() as port:
        with anyio.fail_after(3):
            reply = await ask(port, b"GET /healthz HTTP/1.1\r\nHost:", finish=False)
    assert parse(reply)[0] == 408


async def test_connections_past_the_limit_are_closed_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "MAX_CONNECTIONS", 2)
    async with serving() as port:
        idle = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(2)]
        with anyio.fail_after(health.REQUEST_SECONDS / 2):  # not held like the idle two
            assert await ask(port, GET % b"/healthz") == b""
        for stream in idle:
            await stream.aclose()
        for _ in range(100):  # served again once the server saw the idle two go
            if reply := await ask(port, GET % b"/healthz"):
                break
            await anyio.sleep(0.05)
        assert parse(reply)[0] == 200


async def test_a_port_in_use_is_one_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError) as caught:
            await health.serve(f"127.0.0.1:{port}", always_ready)
    message = str(caught.value)
    assert f"metrics address 127.0.0.1:{port} is in use" in message
    assert "--metrics-addr (FLOWWORKER_METRICS_ADDR)" in message
    assert "\n" not in message
