"""A TCP fault proxy on 127.0.0.1 in front of the test's PostgreSQL
(RELIABILITY.md: the stand-in for toxiproxy, which this platform lacks).

It runs an asyncio event loop in a background thread, so tests stay
synchronous, and can:

- pass traffic through unchanged (the default);
- delay it (`set_delay`: every chunk waits that long in each direction);
- reset connections (`reset_all`, or a rule returning `Verdict.RESET`):
  both sides are closed at once with an RST (SO_LINGER 0);
- blackhole them (`blackhole` / `restore`): sockets stay open but nothing
  moves in either direction, not even a FIN, for the connections open now
  and for new ones (accepted, but never connected upstream until restored).
  Like a network partition that heals: when restored, what was sent meanwhile
  is delivered late (TCP would retransmit it), closes included.

It also reads the PostgreSQL wire protocol in both directions (startup
packet, SSL/GSS negotiation, then typed messages), so that a *rule* can act
on one message: forward it, drop it, replace it, or reset the connection the
moment a given statement is sent or its reply arrives. Each connection knows
its startup parameters (application_name, ...) and maps prepared statement
names to their SQL, so a rule can recognise a `Bind` of a statement prepared
long before (asyncpg's statement cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.database import PgServer

T = TypeVar("T")
Direction = Literal["client", "server"]  # who sent the message

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3 = 196608

FLUSH = b"H\x00\x00\x00\x04"  # a Flush message: the server sends what it has, no commit


class Verdict(enum.Enum):
    FORWARD = "forward"
    DROP = "drop"
    RESET = "reset"
    PAUSE = "pause"  # blackhole this connection from this message on, until restore()


@dataclass(frozen=True)
class Message:
    """One protocol message as it travels: `kind` is the type byte (b"" for the
    untyped startup-phase messages and for SSL/GSS answers), `data` the whole
    message on the wire."""

    kind: bytes
    data: bytes

    @property
    def body(self) -> bytes:
        return self.data[5:] if self.kind else self.data

    def cstrings(self, count: int) -> list[str]:
        """The first `count` NUL-terminated strings of the body."""
        parts = self.body.split(b"\x00", count)
        return [part.decode("utf-8", "replace") for part in parts[:count]]


# A rule sees every message of every connection. It returns None or
# Verdict.FORWARD to pass the message on, Verdict.DROP to swallow it,
# Verdict.RESET to reset the connection before the message goes anywhere,
# Verdict.PAUSE to hold this connection (this message included) until
# restore(), or bytes to send instead of the message. Rules run on the
# proxy's thread and must not block.
Rule = Callable[["ProxyConnection", Direction, Message], "Verdict | bytes | None"]


class _Parser:
    """Splits one direction's byte stream into protocol messages."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.buffer = bytearray()
        self.startup = direction == "client"  # the client starts untyped
        self.single_bytes = 0  # server: answers to SSL/GSS requests still due
        self.opaque = False  # TLS was accepted: bytes only from here on

    def feed(self, chunk: bytes) -> list[Message]:
        if self.opaque:
            return [Message(b"", bytes(chunk))]
        self.buffer += chunk
        out: list[Message] = []
        while True:
            message = self._next()
            if message is None:
                return out
            out.append(message)
            if self.opaque:
                if self.buffer:
                    out.append(Message(b"", bytes(self.buffer)))
                    self.buffer.clear()
                return out

    def _next(self) -> Message | None:  # noqa: PLR0911 - one return per protocol state
        buf = self.buffer
        if self.single_bytes:
            if not buf:
                return None
            self.single_bytes -= 1
            answer = bytes(buf[:1])
            del buf[:1]
            return Message(b"", answer)
        if self.startup:
            if len(buf) < 8:
                return None
            (length,) = struct.unpack("!I", buf[:4])
            if len(buf) < length:
                return None
            data = bytes(buf[:length])
            del buf[:length]
            (code,) = struct.unpack("!I", data[4:8])
            if code not in (SSL_REQUEST, GSSENC_REQUEST):
                self.startup = False  # the startup packet (or a cancel request)
            return Message(b"", data)
        if len(buf) < 5:
            return None
        (length,) = struct.unpack("!I", buf[1:5])
        if len(buf) < 1 + length:
            return None
        data = bytes(buf[:1 + length])
        del buf[:1 + length]
        return Message(data[:1], data)


@dataclass(eq=False)
class ProxyConnection:
    """One client connection through the proxy, as rules and tests see it."""

    id: int
    opened_at: float
    parameters: dict[str, str] = field(default_factory=dict)
    statements: dict[str, str] = field(default_factory=dict)  # prepared name -> SQL
    last_bound: str | None = None  # SQL of the statement of the last Bind
    state: dict[str, Any] = field(default_factory=dict)  # for rules
    closed_at: float | None = None
    reset_by_proxy: bool = False
    bytes_up: int = 0
    bytes_down: int = 0

    @property
    def application_name(self) -> str:
        return self.parameters.get("application_name", "")

    def sql_of(self, message: Message) -> str | None:
        """The SQL a Parse, Bind or simple Query message is about."""
        if message.kind == b"Q":
            return message.cstrings(1)[0]
        if message.kind == b"P":
            return message.cstrings(2)[1]
        if message.kind == b"B":
            return self.statements.get(message.cstrings(2)[1])
        return None


class _Link:
    """The sockets and tasks of one ProxyConnection (loop thread only)."""

    def __init__(self, info: ProxyConnection, client: tuple[asyncio.StreamReader,
                                                           asyncio.StreamWriter]) -> None:
        self.info = info
        self.client_reader, self.client_writer = client
        self.server_writer: asyncio.StreamWriter | None = None
        self.flowing = asyncio.Event()
        self.done = False

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client_writer, self.server_writer) if w is not None]

    def reset(self) -> None:
        """Close both sides at once with an RST."""
        if self.done:
            return
        self.done = True
        for writer in self.writers():
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            writer.transport.abort()
        self.info.closed_at = time.time()

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        for writer in self.writers():
            writer.transport.close()
        self.info.closed_at = time.time()


class Proxy:
    """A fault-injecting TCP proxy to `target_host:target_port`; see the module doc.

    Use as a context manager, or call start() and close(). Every public
    method is synchronous and thread-safe.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.delay = 0.0
        self.rules: list[Rule] = []
        self.log: list[tuple[float, int, str]] = []  # (time, connection id, what happened)
        self._blackholed = False
        self._links: dict[int, _Link] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None

    # -- lifecycle (test thread)

    def start(self) -> Proxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, conninfo: str) -> str:
        """conninfo (URL or key=value) with host and port pointed at the proxy."""
        params = conninfo_to_dict(conninfo)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo("", **params)

    # -- faults (test thread)

    def set_delay(self, seconds: float) -> None:
        """Every chunk, each direction, waits `seconds` before it is forwarded."""
        self.delay = seconds

    def add_rule(self, rule: Rule) -> None:
        with self._lock:
            self.rules.append(rule)

    def clear_rules(self) -> None:
        with self._lock:
            self.rules.clear()

    def reset_all(self, match: Callable[[ProxyConnection], bool] = lambda _c: True) -> int:
        """Reset every open connection that `match` accepts; how many."""
        return self._call(self._reset_matching(match))

    def blackhole(self) -> None:
        """Stop every byte, both ways, on open and new connections; keep the sockets."""
        self._call(self._set_flowing(False))

    def restore(self) -> None:
        """End a blackhole (and every paused connection): what waited is
        delivered, new connections go upstream."""
        self._call(self._set_flowing(True))

    @property
    def blackholed(self) -> bool:
        return self._blackholed

    def connections(self) -> list[ProxyConnection]:
        """Every connection seen so far, open or closed, oldest first."""
        with self._lock:
            return [link.info for link in self._links.values()]

    def open_connections(self) -> list[ProxyConnection]:
        return [c for c in self.connections() if c.closed_at is None]

    def events(self) -> list[tuple[float, int, str]]:
        with self._lock:
            return list(self.log)

    # -- the loop thread

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _note(self, conn: ProxyConnection, what: str) -> None:
        with self._lock:
            self.log.append((time.time(), conn.id, what))

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links.values()):
            link.reset()
            link.flowing.set()  # wake what waits on a blackhole, so it can end
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _set_flowing(self, flowing: bool) -> None:
        self._blackholed = not flowing
        for link in self._links.values():
            if flowing:
                link.flowing.set()
            else:
                link.flowing.clear()

    async def _reset_matching(self, match: Callable[[ProxyConnection], bool]) -> int:
        count = 0
        for link in list(self._links.values()):
            if not link.done and match(link.info):
                link.info.reset_by_proxy = True
                self._note(link.info, "reset (reset_all)")
                link.reset()
                count += 1
        return count

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # cancelled: the proxy is closing
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = ProxyConnection(id=next(self._ids), opened_at=time.time())
        link = _Link(info, (reader, writer))
        if not self._blackholed:
            link.flowing.set()
        with self._lock:
            self._links[info.id] = link
        try:
            await link.flowing.wait()  # a blackhole accepts, and never goes upstream
            if link.done:
                return
            server_reader, link.server_writer = await asyncio.open_connection(
                self.target_host, self.target_port)
        except OSError:
            link.reset()
            return
        client_parser, server_parser = _Parser("client"), _Parser("server")
        up = asyncio.create_task(self._pump(link, reader, link.server_writer, "client",
                                            client_parser, server_parser))
        down = asyncio.create_task(self._pump(link, server_reader, writer, "server",
                                              server_parser, client_parser))
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        # One side ended: end the other (a reset, or a close after the EOF).
        await link.flowing.wait()
        link.close()
        await asyncio.gather(up, down, return_exceptions=True)

    async def _pump(self, link: _Link, source: asyncio.StreamReader,
                    sink: asyncio.StreamWriter, direction: Direction, parser: _Parser,
                    other: _Parser) -> None:
        info = link.info
        try:
            while not link.done:
                await link.flowing.wait()
                chunk = await source.read(65536)
                if not chunk:
                    return
                out = bytearray()
                for message in parser.feed(chunk):
                    self._observe(info, direction, message, parser, other)
                    verdict = self._judge(info, direction, message)
                    if verdict is Verdict.RESET:
                        info.reset_by_proxy = True
                        self._note(info, f"reset by rule at {direction} {message.kind!r}")
                        if out:
                            await self._forward(link, sink, bytes(out), direction)
                        link.reset()
                        return
                    if verdict is Verdict.DROP:
                        self._note(info, f"dropped {direction} {message.kind!r}")
                        continue
                    if verdict is Verdict.PAUSE:
                        self._note(info, f"paused at {direction} {message.kind!r}")
                        if out:  # what came before the message still goes
                            await self._forward(link, sink, bytes(out), direction)
                            out.clear()
                        link.flowing.clear()
                    out += verdict if isinstance(verdict, bytes) else message.data
                if out:
                    await self._forward(link, sink, bytes(out), direction)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            return

    async def _forward(self, link: _Link, sink: asyncio.StreamWriter, data: bytes,
                       direction: Direction) -> None:
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        await link.flowing.wait()  # a blackhole holds what was read
        if link.done:
            return
        sink.write(data)
        if direction == "client":
            link.info.bytes_up += len(data)
        else:
            link.info.bytes_down += len(data)
        await sink.drain()

    @staticmethod
    def _observe(info: ProxyConnection, direction: Direction, message: Message,
                 parser: _Parser, other: _Parser) -> None:
        """Track startup parameters, SSL answers and prepared statements."""
        if direction == "client" and not message.kind and len(message.data) >= 8:
            (code,) = struct.unpack("!I", message.data[4:8])
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                other.single_bytes += 1
            elif code == PROTOCOL_3:
                fields = message.data[8:].split(b"\x00")
                pairs = [f.decode("utf-8", "replace") for f in fields]
                info.parameters.update(
                    (k, v) for k, v in zip(pairs[0::2], pairs[1::2], strict=False) if k)
        elif direction == "server" and not message.kind and message.data in (b"S", b"G"):
            # TLS or GSS encryption accepted: nothing to read from here on.
            parser.opaque = other.opaque = True
        elif direction == "client" and message.kind == b"P":
            name, sql = message.cstrings(2)
            info.statements[name] = sql
        elif direction == "client" and message.kind == b"B":
            info.last_bound = info.statements.get(message.cstrings(2)[1])

    def _judge(self, info: ProxyConnection, direction: Direction,
               message: Message) -> Verdict | bytes:
        with self._lock:
            rules = list(self.rules)
        for rule in rules:
            verdict = rule(info, direction, message)
            if verdict is not None and verdict is not Verdict.FORWARD:
                return verdict
        return Verdict.FORWARD


@pytest.fixture
def db_proxy(pg_server: PgServer) -> Iterator[Proxy]:
    """A fault proxy in front of the session's test server."""
    port = conninfo_to_dict(pg_server.admin_url).get("port")
    with Proxy(int(port or 5432), str(conninfo_to_dict(pg_server.admin_url).get("host")
                                      or "127.0.0.1")) as proxy:
        yield proxy
