"""Flows for the network/clock fault rows (tests/faults/test_net_*.py) and
the chaos runs (`make chaos`). Every handler records its execution in the
effect ledger (tests/apps/ledger.py) first, like the acceptance flows.

- `backoff`: one step that fails its first three attempts, then succeeds;
  base_delay 1 s, so the retries wait 1, 2 and 4 s (D9 measures them).
- `chaos`: a small DAG with a map step, for steady load under crashes:
  fetch -> (double | items -> each) -> combine. Its output is a pure
  function of the input, so a run's result can be checked. `fetch` and
  `each` take 0-200 ms, so that a kill -9 finds tasks in flight.
- `chaos_wait`: order -> approve (a wait step, 10 min timeout) -> settle;
  the chaos run signals its waits (payload {"approved": n}) while it
  crashes things, so `settle`'s output shows which signal applied.
- `gated_kill` and `ping` from tests.apps.flows, so that one worker
  (`--app tests.faults.chaos.flows`) serves all of them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flowworker import Context, Flow
from tests.apps.flows import gated_kill, ping
from tests.apps.ledger import arecord, record

__all__ = ["backoff", "chaos", "chaos_expected", "chaos_wait", "chaos_wait_expected",
           "gated_kill", "ping"]

BACKOFF_FAILURES = 3

backoff = Flow("backoff", max_attempts=BACKOFF_FAILURES + 1, base_delay=1, timeout=10)


@backoff.step()
async def stumble(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    if ctx.attempt <= BACKOFF_FAILURES:
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    return {"attempt": ctx.attempt}


chaos = Flow("chaos", max_attempts=5, base_delay=1, timeout=10)


def chaos_expected(n: int) -> dict[str, Any]:
    """The output a `chaos` run with input {"n": n} must end with."""
    values = [n + i for i in range(n % 4)]
    return {"combine": {"double": 2 * n, "squares": [v * v for v in values],
                        "total": 2 * n + sum(v * v for v in values)}}


def _nap(n: int) -> float:
    return (n % 5) * 0.05


@chaos.step()
async def fetch(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    n = int(flow_input["n"])
    await asyncio.sleep(_nap(n))
    return {"n": n}


@chaos.step(depends_on=[fetch])
async def double(deps: dict[str, Any], ctx: Context) -> int:
    await arecord(ctx)
    return 2 * int(deps["fetch"]["n"])


@chaos.step(depends_on=[fetch])
def items(deps: dict[str, Any], ctx: Context) -> list[int]:
    record(ctx)
    n = int(deps["fetch"]["n"])
    return [n + i for i in range(n % 4)]


@chaos.map(over=items)
async def each(item: int, ctx: Context) -> int:
    await arecord(ctx)
    await asyncio.sleep(_nap(item))
    return item * item


@chaos.step(depends_on=[double, each])
async def combine(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    squares: list[int] = deps["each"]
    return {"double": deps["double"], "squares": squares,
            "total": deps["double"] + sum(squares)}


chaos_wait = Flow("chaos_wait", max_attempts=5, base_delay=1, timeout=10)
WAIT_TIMEOUT = 600  # seconds: far beyond any outage, so no wait times out


def chaos_wait_expected(n: int) -> dict[str, Any]:
    """The output a `chaos_wait` run with input {"n": n} must end with, once
    its wait was signalled with {"approved": n}."""
    return {"settle": {"n": n, "approved": n}}


@chaos_wait.step(slug="order")
async def wait_order(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    n = int(flow_input["n"])
    await asyncio.sleep(_nap(n))
    return {"n": n}


chaos_wait.wait("approve", depends_on=["order"], timeout=WAIT_TIMEOUT)


@chaos_wait.step(slug="settle", depends_on=["approve"])
async def wait_settle(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    return {"n": int(ctx.flow_input["n"]), "approved": deps["approve"]["approved"]}
