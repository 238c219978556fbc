"""--prune-after's job, against a fake database: batches until none is
left, yields to another worker, survives a lost connection, refuses a role
that may not prune."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from flowworker.daemon import maintenance
from flowworker.errors import ConfigurationError

T = TypeVar("T")
WEEK = timedelta(days=7)


class FakeDatabase:
    """Answers prune_batch from a script; records the calls."""

    def __init__(self, answers: list[Any], may_prune: bool = True) -> None:
        self.answers = answers
        self.may_prune = may_prune
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, name: str, *args: Any) -> list[Any]:
        raise AssertionError(f"unexpected fetch {name}")

    async def fetchval(self, name: str, *args: Any) -> Any:
        self.calls.append((name, args))
        if name == "may_prune":
            return self.may_prune
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def retrying(self, what: str, operation: Callable[[], Awaitable[T]],
                       give_up: Callable[[], bool] = lambda: False) -> T:
        return await operation()


async def test_a_round_goes_on_until_nothing_is_left() -> None:
    db = FakeDatabase([1000, 1000, 7, 0])
    assert await maintenance.prune_round(db, WEEK, 1000) == 2007
    assert db.calls == [("prune_batch", (WEEK, 1000))] * 4


async def test_a_round_ends_when_another_worker_prunes() -> None:
    db = FakeDatabase([1000, None, 1000])
    assert await maintenance.prune_round(db, WEEK, 1000) == 1000
    assert db.answers == [1000]


async def test_a_lost_connection_ends_the_round_not_the_worker() -> None:
    db = FakeDatabase([5, ConnectionResetError("reset"), 1000])
    assert await maintenance.prune_round(db, WEEK, 1000) == 5


async def test_any_other_error_stops_the_worker() -> None:
    db = FakeDatabase([ValueError("a bug")])
    with pytest.raises(ValueError, match="a bug"):
        await maintenance.prune_round(db, WEEK, 1000)


async def test_a_role_that_may_not_prune_is_refused_at_once() -> None:
    db = FakeDatabase([], may_prune=False)
    with pytest.raises(ConfigurationError, match=r"may not execute flowworker\.prune"):
        await maintenance.prune(db, WEEK)
    assert db.calls == [("may_prune", ())]
