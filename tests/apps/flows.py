"""The flows the acceptance tests run. Every handler records its execution
in the effect ledger (tests/apps/ledger.py) before doing anything else.

- `diamond`: a diamond (prepare -> left | right | items -> summarize) plus a
  map step (`square`, one task per element of `items`, possibly none).
- `gated`, `gated_sync`, `gated_kill`: `hold` blocks while the gate file named
  in the flow input is missing, then `after` runs. They differ in the task
  timeout (the claim's visibility timeout is timeout + claim_grace) and in
  whether `hold` is `async def` or a plain `def`.
- `timeout_async`, `timeout_sync`: one step that always overruns its 1 s timeout.
- `ping`: one no-op step, for latency.
- `flaky`: fails its first attempt, then succeeds.
- `checkout`: handler control (Fail, RetryAfter, retry_on, a typed input).
- `repair`: fetch -> (pack, a map | charge) -> ship; one element of `pack`
  fails while the file named `broken` in the flow input exists (the bug a
  fix deploys away), so that a failed run can be retried.
- `parcel`: pick -> post, two quick steps (a paused flow).
- `webhook`: order -> paid (a wait step, 60 s timeout) -> ship.
- `approval`: draft -> review (an approval gate: approve | reject, reject
  fails the run) -> publish, which returns the decision it got.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pydantic

from flowworker import Context, Fail, Flow, RetryAfter
from tests.apps.ledger import arecord, await_gate, gate_of, record, record_soon, wait_gate

SYNC_GATE_MAX_SECONDS = 120.0
SYNC_OVERRUN_SECONDS = 2.5


def _nap_seconds(flow_input: object) -> float:
    if isinstance(flow_input, dict):
        return float(flow_input.get("sleep", 0))
    return 0.0


# ---------------------------------------------------------------- diamond

diamond = Flow("diamond", max_attempts=3, base_delay=1, timeout=10)


def diamond_expected(n: int) -> dict[str, Any]:
    """The output a `diamond` run with input {"n": n} must end with."""
    squares = [(n + i) ** 2 for i in range(n % 3)]
    return {"summarize": {"l": 2 * n, "r": n + 1, "squares": squares,
                          "total": 2 * n + n + 1 + sum(squares)}}


@diamond.step()
async def prepare(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    await asyncio.sleep(_nap_seconds(flow_input))
    n = int(flow_input["n"])
    return {"n": n, "items": [n + i for i in range(n % 3)]}


@diamond.step(depends_on=[prepare])
async def left(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    await asyncio.sleep(_nap_seconds(ctx.flow_input))
    return {"l": 2 * deps["prepare"]["n"]}


@diamond.step(depends_on=[prepare])
def right(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A plain `def`: runs in the worker's thread pool."""
    record(ctx)
    time.sleep(_nap_seconds(ctx.flow_input))
    return {"r": deps["prepare"]["n"] + 1}


@diamond.step(depends_on=[prepare])
async def items(deps: dict[str, Any], ctx: Context) -> list[int]:
    await arecord(ctx)
    values: list[int] = deps["prepare"]["items"]
    return values


@diamond.map(over=items)
async def square(item: int, ctx: Context) -> int:
    await arecord(ctx)
    await asyncio.sleep(_nap_seconds(ctx.flow_input))
    return item * item


@diamond.step(depends_on=[left, right, square])
def summarize(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    record(ctx)
    left_value = int(deps["left"]["l"])
    right_value = int(deps["right"]["r"])
    squares: list[int] = deps["square"]
    return {"l": left_value, "r": right_value, "squares": squares,
            "total": left_value + right_value + sum(squares)}


# ---------------------------------------------------------------- gated

async def hold(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    gate = gate_of(flow_input)
    if gate is not None:
        await await_gate(gate)
    return {"pid": os.getpid(), "attempt": ctx.attempt}


def hold_sync(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    record(ctx)
    gate = gate_of(flow_input)
    if gate is not None:
        wait_gate(gate, SYNC_GATE_MAX_SECONDS)
    return {"pid": os.getpid(), "attempt": ctx.attempt}


async def after(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    return {"hold": deps["hold"], "pid": os.getpid()}


def _gated(slug: str, timeout: int, *, sync: bool = False) -> Flow:
    flow = Flow(slug, max_attempts=3, base_delay=1, timeout=timeout)
    flow.step(slug="hold")(hold_sync if sync else hold)
    flow.step(slug="after", depends_on=["hold"])(after)
    return flow


gated = _gated("gated", timeout=20)
gated_sync = _gated("gated_sync", timeout=20, sync=True)
gated_kill = _gated("gated_kill", timeout=3)


# ---------------------------------------------------------------- timeouts

timeout_async = Flow("timeout_async", max_attempts=3, base_delay=1, timeout=1)


@timeout_async.step()
async def sleepy(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        record_soon(ctx, "cancelled")
        raise
    return {"woke": True}


timeout_sync = Flow("timeout_sync", max_attempts=3, base_delay=1, timeout=1)


@timeout_sync.step()
def sleepy_sync(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    record(ctx)
    time.sleep(SYNC_OVERRUN_SECONDS)
    record(ctx, "returned")
    return {"late": True, "attempt": ctx.attempt}


# ---------------------------------------------------------------- ping, flaky

ping = Flow("ping", max_attempts=3, base_delay=1, timeout=10)


@ping.step()
async def pong(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    return {"ok": True}


flaky = Flow("flaky", max_attempts=3, base_delay=0, timeout=10)


@flaky.step()
async def wobble(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails on purpose")
    return {"attempt": ctx.attempt}


# ---------------------------------------------------------------- control

class Charge(pydantic.BaseModel):
    """What `checkout`'s root step declares its input to be."""

    amount: int
    card: str


checkout = Flow("checkout", max_attempts=3, base_delay=1, timeout=10)


@checkout.step(retry_on=ConnectionError)
async def pay(charge: Charge, ctx: Context) -> dict[str, Any]:
    """Handler control: `Fail` for a declined card (no retry), `RetryAfter`
    once for a rate-limited one, a typed input checked before the call."""
    await arecord(ctx)
    if charge.card == "declined":
        raise Fail("card declined")
    if charge.card == "limited" and ctx.attempt == 1:
        raise RetryAfter(2, "rate limited")
    if charge.card == "broken":
        raise KeyError("not retried: the step retries only ConnectionError")
    return {"paid": charge.amount, "attempt": ctx.attempt}


# ---------------------------------------------------------------- repair (retry_run)

repair = Flow("repair", max_attempts=2, base_delay=0, timeout=3)


def _broken(flow_input: dict[str, Any]) -> bool:
    """The bug is still deployed while the file named in the input exists."""
    return Path(flow_input["broken"]).exists()


@repair.step(slug="fetch")
async def repair_fetch(flow_input: dict[str, Any], ctx: Context) -> list[int]:
    await arecord(ctx)
    n = int(flow_input["n"])
    return [n, n + 1, n + 2]


@repair.map(slug="pack", over="fetch")
async def repair_pack(item: int, ctx: Context) -> int:
    await arecord(ctx)
    if item == int(ctx.flow_input["n"]) + 1 and _broken(ctx.flow_input):
        raise RuntimeError("the packing station is down")
    return 10 * item


@repair.step(slug="charge", depends_on=["fetch"])
def repair_charge(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    record(ctx)
    return {"charged": sum(deps["fetch"])}


@repair.step(slug="ship", depends_on=["pack", "charge"])
async def repair_ship(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    return {"packed": deps["pack"], "charged": deps["charge"]["charged"]}


# ---------------------------------------------------------------- parcel (pause_flow)

parcel = Flow("parcel", max_attempts=3, base_delay=1, timeout=5)


@parcel.step(slug="pick")
async def parcel_pick(flow_input: dict[str, Any], ctx: Context) -> int:
    await arecord(ctx)
    return int(flow_input["n"])


@parcel.step(slug="post", depends_on=["pick"])
async def parcel_post(deps: dict[str, Any], ctx: Context) -> int:
    await arecord(ctx)
    return 2 * int(deps["pick"])


# ---------------------------------------------------------------- webhook, approval (waits)

webhook = Flow("webhook", max_attempts=3, base_delay=1, timeout=5)


@webhook.step(slug="order")
async def webhook_order(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    return {"order": flow_input["order"]}


paid = webhook.wait("paid", depends_on=["order"], timeout=60)


@webhook.step(slug="ship", depends_on=[paid])
async def webhook_ship(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    return {"shipped": deps["paid"]}


approval = Flow("approval", max_attempts=3, base_delay=1, timeout=5)


@approval.step(slug="draft")
async def approval_draft(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    return {"title": flow_input["title"]}


review = approval.wait("review", depends_on=["draft"], options=["approve", "reject"],
                       fail_on=["reject"])


@approval.step(slug="publish", depends_on=[review])
async def approval_publish(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    return {"published": ctx.flow_input["title"], "decision": deps["review"]}
