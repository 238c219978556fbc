"""RELIABILITY S6: nothing a client sends to the metrics address ends the
worker. A TCP probe (connect, close), a reset, bytes that are not HTTP, a
half request, a huge Content-Length, 200 slow connections and a header flood
each reach a real `flowworker run` through raw sockets; after each the worker
is alive, /healthz answers at once and a run still completes. The server
bounds what it holds: the header size, the time per connection and the number
of connections. A second worker on the same metrics port exits 2 in one line.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowworker.devdb import free_port
from tests.acceptance.harness import (
    APP,
    Database,
    WorkerProcess,
    as_url,
    http_get,
    wait_until,
)
from tests.cli.helpers import assert_one_error_line, run_cli
from tests.faults.support import POOL_SIZE, tcp_sockets
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]

# worker/health.py
MAX_HEADER_BYTES = 8 * 1024
REQUEST_SECONDS = 5.0
MAX_CONNECTIONS = 64

PROMPT = 2.0  # how long /healthz may take after an attack
ESTABLISHED, LISTENING = "01", "0A"  # /proc/net/tcp states


@dataclass
class Endpoint:
    """A worker and its metrics port, talked to through raw sockets."""

    worker: WorkerProcess
    port: int

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def exchange(self, data: bytes, *, finish: bool = True,
                 timeout: float = REQUEST_SECONDS + 5) -> bytes:
        """Send data (then our FIN when `finish`); all the server sends
        until it closes. A server that closes while we send is fine."""
        with self.connect() as sock:
            with contextlib.suppress(OSError):
                sock.sendall(data)
                if finish:
                    sock.shutdown(socket.SHUT_WR)
            return read_to_close(sock, timeout)

    def connections(self) -> list[str]:
        """The states of the worker's sockets on the metrics port, but the listening one."""
        return [s.state for s in tcp_sockets(self.worker.pid)
                if s.local_port == self.port and s.state != LISTENING]


def read_to_close(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            raise AssertionError(f"the server held the connection over {timeout:.0f} s, "
                                 f"having sent {b''.join(chunks)[:200]!r}") from None
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    """The status code of an HTTP reply; 0 when there is none."""
    parts = reply.split(b" ", 2)
    return int(parts[1]) if reply.startswith(b"HTTP/1.") and len(parts) > 1 else 0


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def client_hello() -> bytes:
    """The first bytes a TLS client sends (a real ClientHello from ssl)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16", hello[:16]  # a TLS handshake record
    return hello


@pytest.fixture
def endpoint(db: Database, spawn: Spawn) -> Endpoint:
    port = free_port()
    worker = spawn("ping", app=APP, args=["--metrics-addr", f"127.0.0.1:{port}"])
    return Endpoint(worker, port)


def assert_serving(endpoint: Endpoint) -> float:
    """The worker is alive and /healthz answers 200 within PROMPT; how long it took."""
    worker = endpoint.worker
    started = time.monotonic()
    status, body = http_get(f"http://127.0.0.1:{endpoint.port}/healthz", timeout=PROMPT)
    took = time.monotonic() - started
    assert worker.alive(), "the worker died\n" + worker.tail()
    assert status == 200, f"/healthz answered {status} {body[:200]!r}\n" + worker.tail()
    assert took < PROMPT, f"/healthz took {took:.2f} s"
    return took


def assert_still_working(db: Database, endpoint: Endpoint) -> None:
    """A run started now completes, and nothing printed a traceback."""
    run_id = db.start_run("ping", {})
    assert db.wait_runs([run_id], timeout=15, workers=[endpoint.worker]) == {"completed": 1}
    worker = endpoint.worker
    assert worker.alive()
    assert "Traceback" not in worker.stderr_text(), worker.tail()
    loud = worker.find(where=lambda e: str(e["event"]).startswith("http.")
                       and e.get("level") != "debug")
    assert not loud, f"a client's doing logged above DEBUG: {loud[:3]}"


# ---------------------------------------------------------------- attacks

def connect_and_close(endpoint: Endpoint) -> None:
    """A TCP liveness probe, `nc -z`: connect, send nothing, close."""
    for _ in range(50):
        endpoint.connect().close()


def connect_and_reset(endpoint: Endpoint) -> None:
    for _ in range(20):
        reset(endpoint.connect())


def request_then_reset(endpoint: Endpoint) -> None:
    """The client is gone (RST) before the answer is written."""
    for _ in range(20):
        sock = endpoint.connect()
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        reset(sock)


def non_utf8_path(endpoint: Endpoint) -> None:
    reply = endpoint.exchange(b"GET /\xff\xfe\xc3( HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(reply) == 400, reply[:200]


def tls_client_hello(endpoint: Endpoint) -> None:
    """https:// to the plain HTTP port."""
    reply = endpoint.exchange(client_hello())
    assert status_of(reply) == 400, reply[:200]


def huge_content_length(endpoint: Endpoint) -> None:
    """A body announced and never sent is neither waited for nor allocated."""
    rss_before = rss_kib(endpoint.worker.pid)
    for method, expected in ((b"GET", 200), (b"POST", 405)):
        started = time.monotonic()
        reply = endpoint.exchange(method + b" /healthz HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 10000000000\r\n\r\n", finish=False)
        took = time.monotonic() - started
        assert status_of(reply) == expected, (method, reply[:200])
        assert took < PROMPT, f"{method!r} with a huge Content-Length answered after {took:.1f} s"
    grown = rss_kib(endpoint.worker.pid) - rss_before
    assert grown < 10 * 1024, f"RSS grew by {grown} KiB"


def header_flood(endpoint: Endpoint) -> None:
    """Headers past the limit, as one long header and as many short ones."""
    long_one = b"X-Flood: " + b"a" * (4 * MAX_HEADER_BYTES)
    many = b"".join(b"X-%d: a\r\n" % i for i in range(MAX_HEADER_BYTES // 4))
    for headers in (long_one, many):
        reply = endpoint.exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers)
        assert status_of(reply) == 431, reply[:200]


ATTACKS: dict[str, Callable[[Endpoint], None]] = {
    "connect_and_close": connect_and_close,
    "connect_and_reset": connect_and_reset,
    "request_then_reset": request_then_reset,
    "non_utf8_path": non_utf8_path,
    "tls_client_hello": tls_client_hello,
    "huge_content_length": huge_content_length,
    "header_flood": header_flood,
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_s6_no_request_ends_the_worker(attack: str, db: Database, endpoint: Endpoint) -> None:
    assert_serving(endpoint)
    ATTACKS[attack](endpoint)
    assert_serving(endpoint)
    assert_still_working(db, endpoint)


def test_s6_a_half_request_is_closed_within_the_limit(db: Database, endpoint: Endpoint) -> None:
    started = time.monotonic()
    reply = endpoint.exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n", finish=False,
                              timeout=REQUEST_SECONDS + 2)
    held = time.monotonic() - started
    assert status_of(reply) == 408, reply[:200]
    assert held <= REQUEST_SECONDS + 2, held
    assert_serving(endpoint)
    assert_still_working(db, endpoint)


@contextlib.contextmanager
def slow_connections(endpoint: Endpoint, count: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(endpoint.connect())
        yield socks
    finally:
        for sock in socks:
            sock.close()


def drip_until_closed(socks: list[socket.socket], deadline: float) -> list[socket.socket]:
    """Send each open connection one header byte now and then (slowloris)
    until the server has closed them all; those still open at the deadline."""
    open_ = list(socks)
    for sock in open_:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(open_, [], [], 0.5)
        for sock in readable:
            with contextlib.suppress(OSError):
                if sock.recv(65536):
                    continue  # the start of an answer; the close follows
            open_.remove(sock)
        for sock in open_:
            with contextlib.suppress(OSError):
                sock.send(b"a")
    return open_


def test_s6_slow_connections_are_bounded(db: Database, endpoint: Endpoint) -> None:
    """Slowloris: 200 connections that never finish their request."""
    pid = endpoint.worker.pid
    rss_before, fds_before = rss_kib(pid), open_fds(pid)
    with slow_connections(endpoint, 200) as socks:
        # Work goes on while they are open.
        run_id = db.start_run("ping", {})
        assert db.wait_runs([run_id], timeout=15, workers=[endpoint.worker]) == {"completed": 1}
        held = endpoint.connections().count(ESTABLISHED)
        fds = open_fds(pid)
        assert held <= MAX_CONNECTIONS, f"the worker holds {held} connections"
        # The pool may have opened the rest of its connections meanwhile.
        assert fds <= fds_before + MAX_CONNECTIONS + POOL_SIZE, f"{fds} fds, {fds_before} before"
        left = drip_until_closed(socks, time.monotonic() + REQUEST_SECONDS + 2)
        assert not left, f"{len(left)} slow connections still open after the limit"
    wait_until(lambda: not endpoint.connections(), timeout=PROMPT,
               message="the worker to let go of every metrics connection")
    grown = rss_kib(pid) - rss_before
    assert grown < 20 * 1024, f"RSS grew by {grown} KiB"
    assert_serving(endpoint)
    assert_still_working(db, endpoint)


def test_s6_a_second_worker_on_the_same_port_exits_2_in_one_line(
        db: Database, endpoint: Endpoint) -> None:
    address = f"127.0.0.1:{endpoint.port}"
    result = run_cli("run", "--app", APP, "--flow", "ping", "--database-url", as_url(db.url),
                     "--metrics-addr", address, env={"FLOWWORKER_LOG_LEVEL": "WARNING"})
    line = assert_one_error_line(result, 2)
    assert address in line, line
    assert "--metrics-addr" in line, line
    assert_serving(endpoint)
