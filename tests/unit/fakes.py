"""Stand-ins for what the daemon's parts are given, so that they can be
tested without PostgreSQL (as River tests its completer with a fake
executor): a database implementing `Queries` that answers from a script and
records every call, callbacks that record what they were given, and a log
catcher. Tests wait for what these record, with a deadline, never on a clock.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio

from flowworker.daemon.claims import ClaimedTask
from flowworker.daemon.db_asyncpg import GaveUpError, is_retryable
from flowworker.dsl import Flow

T = TypeVar("T")

DEADLINE = 5.0  # seconds: a bound for a broken part, not synchronisation
WORKER = uuid.UUID("00000000-0000-4000-8000-00000000f4ce")

# An answer is a value, an exception to raise, or a function of the query's
# arguments (sync or async) that returns the value or raises.
Answer = Any


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]


class Calls(Generic[T]):
    """A callback that records what it is given; `reach` waits for more."""

    def __init__(self) -> None:
        self.seen: list[T] = []
        self._more = asyncio.Event()

    def __call__(self, value: T) -> None:
        self.seen.append(value)
        self._more.set()
        self._more = asyncio.Event()

    async def reach(self, count: int) -> list[T]:
        """Wait until `count` values have been seen; the first `count` of them."""
        with anyio.fail_after(DEADLINE):
            while len(self.seen) < count:
                await self._more.wait()
        return self.seen[:count]


class FakeDatabase:
    """The daemon's database (db_asyncpg.Queries) without a database.

    Each named query answers from its script, in order (`script`), then
    from its default (`defaults`); a query with neither fails the test.
    Every call is recorded. `retrying` classifies errors as the real one
    does (flowworker.daemon.db_asyncpg.is_retryable, GaveUpError) but
    retries at once instead of after a backoff."""

    def __init__(self, defaults: Mapping[str, Answer] | None = None) -> None:
        self.defaults = dict(defaults or {})
        self.calls = Calls[Call]()
        self.retried = Calls[str]()  # what, each time retrying went round again
        self._scripts: defaultdict[str, deque[Answer]] = defaultdict(deque)

    def script(self, name: str, *answers: Answer) -> None:
        self._scripts[name].extend(answers)

    def calls_to(self, name: str) -> list[Call]:
        return [call for call in self.calls.seen if call.name == name]

    async def called(self, name: str, times: int = 1) -> list[Call]:
        """Wait until `name` has been called `times` times; those calls."""
        with anyio.fail_after(DEADLINE):
            while len(self.calls_to(name)) < times:
                await self.calls.reach(len(self.calls.seen) + 1)
        return self.calls_to(name)[:times]

    async def fetch(self, name: str, *args: Any) -> list[Any]:
        return list(await self._answer(name, args))

    async def fetchval(self, name: str, *args: Any) -> Any:
        return await self._answer(name, args)

    async def retrying(self, what: str, operation: Callable[[], Awaitable[T]],
                       give_up: Callable[[], bool] = lambda: False) -> T:
        while True:
            try:
                return await operation()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                if give_up():
                    raise GaveUpError(f"{what}: gave up after {type(exc).__name__}") from exc
                self.retried(what)
                await asyncio.sleep(0)  # the real one waits a backoff here

    async def _answer(self, name: str, args: tuple[Any, ...]) -> Any:
        self.calls(Call(name, args))
        await asyncio.sleep(0)  # a round trip lets other tasks run, as a real one does
        if self._scripts[name]:
            answer = self._scripts[name].popleft()
        elif name in self.defaults:
            answer = self.defaults[name]
        else:
            raise AssertionError(f"unexpected query {name}{args!r}")
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            answer = answer(*args)
            if inspect.isawaitable(answer):
                answer = await answer
        return answer


async def quiet() -> None:
    """Until every other task waits on something: what has not happened by
    then cannot happen without new input (or a timer of the part's own)."""
    with anyio.fail_after(DEADLINE):
        await anyio.wait_all_tasks_blocked()


def claimed(flow: Flow, step: str = "each", run_id: uuid.UUID | None = None,
            index: int = 0, *, isolated: bool = False) -> ClaimedTask:
    task = ClaimedTask(flow, WORKER, index + 1, run_id or uuid.uuid4(), step, index, 1,
                       {"i": index}, None, 30, isolated)
    if isolated:
        task.finished = asyncio.Event()
    return task


def claim_row(run_id: uuid.UUID, step: str = "each", index: int = 0, *,
              fetch_flow_input: bool = False, isolated: bool = False) -> dict[str, Any]:
    """One row of start_tasks, as the producer reads it."""
    return {"msg_id": index + 1, "run_id": run_id, "step_slug": step, "task_index": index,
            "attempt": 1, "input": {"i": index},
            "flow_input": None if fetch_flow_input else {"inline": True},
            "fetch_flow_input": fetch_flow_input, "timeout": 30, "isolated": isolated,
            "waited": 0.0}


class LogEvents(logging.Handler):
    """flowworker's log events as (name, level, fields)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, int, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), record.levelno, getattr(record, "fields", {})))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, _, fields in self.seen if event == name]
