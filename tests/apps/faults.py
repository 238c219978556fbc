"""Flows of the fault tests (tests/faults/, RELIABILITY.md). Handlers record
every execution in the effect ledger (tests/apps/ledger.py) unless noted.

- `noop`: one no-op step (L1, D1, F2, S3, B2); `{"sleep": s}` naps first.
- `bare`: one no-op step that writes no ledger (L5: no extra connections).
- `wide`: a root map step that doubles each element (L4), no ledger.
- `sized`: a root map step that reports the length of its flow input (B5).
- `drain`: one plain-`def` step that waits for its gate, then sleeps (F2).
- `zombie`: a root map step `parts` whose elements wait for a gate and, on
  attempt 1, may fail; a root step `keep` that holds the run open until a
  second gate; `join` after both (F4).
- `crash`: `parts` of `zombie` with a 3 s timeout, then `join` (F1).
- `blocker`: an `async def` step that blocks the event loop with
  `time.sleep` on its first attempt (F5).
- `stuck_sync`, `stuck_async`: overrun a 1 s timeout on attempt 1 only (F6).
- `overrun`: a plain `def` that ignores its 1 s timeout, 3 s every attempt.
- `poison`: `os._exit(1)` when the input says poison (F7).
- `suspect`: the same, or held on a gate; 6 s timeout (isolation tests).
- `gated_long`: `gated` with a 60 s timeout, so a claim outlives a 30 s
  database outage (D4).
- `s4`: one real step; the tests add steps `stray` and `system` to the
  database definition (not to the code) while a worker runs (S4, B2).
- `secret`: echoes a secret, or fails with it in the exception (S5).
- `redo`: `work` reads the code version deployed when it starts (a file) and
  waits for that version's gate, then `join` (R6: a zombie of a retried run).
- `halt`: a root map step whose elements wait for a gate, then `total` (R7:
  kill -9 while the run is paused and resumed).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from flowworker import Context, Flow
from tests.apps.flows import after, hold
from tests.apps.ledger import arecord, await_gate, gate_of, record, record_soon, wait_gate

STUCK_SYNC_MAX_SECONDS = 60.0
STRAY_MARKER_ENV = "FLOWWORKER_TEST_STRAY_MARKER"


def _sleep_of(value: object) -> float:
    if isinstance(value, dict):
        return float(value.get("sleep", 0))
    return 0.0


# ---------------------------------------------------------------- noop, bare, wide

noop = Flow("noop", max_attempts=3, base_delay=1, timeout=5)


@noop.step()
async def tick(flow_input: Any, ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    nap = _sleep_of(flow_input)
    if nap:
        await asyncio.sleep(nap)
    return {"ok": True}


bare = Flow("bare", max_attempts=3, base_delay=1, timeout=10)


@bare.step()
async def nap(flow_input: Any, ctx: Context) -> dict[str, Any]:
    await asyncio.sleep(_sleep_of(flow_input))
    return {"pid": os.getpid()}


wide = Flow("wide", max_attempts=3, base_delay=1, timeout=30)


@wide.map()
async def cell(item: int, ctx: Context) -> int:
    return 2 * item


sized = Flow("sized", max_attempts=3, base_delay=1, timeout=30)


@sized.map()
async def measure(item: dict[str, Any], ctx: Context) -> int:
    """B5: what a map task over a large input gets (its element; the flow input)."""
    await arecord(ctx)
    return int(item["i"]) * 10_000 + len(ctx.flow_input)


# ---------------------------------------------------------------- drain (F2)

drain = Flow("drain", max_attempts=3, base_delay=1, timeout=20)


@drain.step()
def work(flow_input: Any, ctx: Context) -> dict[str, Any]:
    """A plain `def`: it needs one of the worker's sync threads to start."""
    record(ctx)
    gate = gate_of(flow_input)
    if gate is not None:
        wait_gate(gate, 60)
    time.sleep(_sleep_of(flow_input))
    return {"pid": os.getpid(), "attempt": ctx.attempt}


# ---------------------------------------------------------------- zombie (F4)

zombie = Flow("zombie", max_attempts=3, base_delay=0, timeout=20)


@zombie.map(slug="parts")
async def zombie_part(item: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    # A later attempt may wait on a gate of its own, so that the test can hold
    # the rescuer's claim open while the zombie's late outcomes arrive.
    gate = item.get("rescue_gate") if ctx.attempt > 1 else None
    await await_gate(Path(gate or item["gate"]))
    if item.get("fail") and ctx.attempt == 1:
        raise RuntimeError(f"late failure of attempt {ctx.attempt}")
    return {"pid": os.getpid(), "attempt": ctx.attempt, "index": ctx.task_index}


@zombie.step(slug="keep")
async def zombie_keep(flow_input: list[dict[str, Any]], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    await await_gate(Path(flow_input[0]["hold"]))
    return {"pid": os.getpid(), "attempt": ctx.attempt}


@zombie.step(slug="join", depends_on=["parts", "keep"])
async def zombie_join(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    return {"parts": deps["parts"], "keep": deps["keep"], "pid": os.getpid()}


crash = Flow("crash", max_attempts=3, base_delay=1, timeout=3)
crash.map(slug="parts")(zombie_part)


@crash.step(slug="join", depends_on=["parts"])
async def crash_join(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    return {"parts": deps["parts"], "pid": os.getpid()}


# ---------------------------------------------------------------- blocker (F5)

blocker = Flow("blocker", max_attempts=3, base_delay=0, timeout=1)


@blocker.step()
async def block(flow_input: Any, ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    if ctx.attempt == 1:
        # The bug under test: a blocking call inside `async def`.
        time.sleep(float(flow_input["block"]))  # noqa: ASYNC251
    return {"pid": os.getpid(), "attempt": ctx.attempt}


# ---------------------------------------------------------------- stuck (F6)

stuck_sync = Flow("stuck_sync", max_attempts=3, base_delay=1, timeout=1)


@stuck_sync.step(slug="stall")
def stall_sync(flow_input: Any, ctx: Context) -> dict[str, Any]:
    """Attempt 1 blocks its thread until the gate opens (long past the
    timeout), then writes a `returned` marker: its late result."""
    record(ctx)
    if ctx.attempt == 1:
        gate = gate_of(flow_input)
        if gate is not None:
            wait_gate(gate, STUCK_SYNC_MAX_SECONDS)
        record(ctx, "returned")
    return {"pid": os.getpid(), "attempt": ctx.attempt}


stuck_async = Flow("stuck_async", max_attempts=3, base_delay=1, timeout=1)


@stuck_async.step(slug="stall")
async def stall_async(flow_input: Any, ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    if ctx.attempt == 1:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            record_soon(ctx, "cancelled")
            raise
    return {"pid": os.getpid(), "attempt": ctx.attempt}


overrun = Flow("overrun", max_attempts=2, base_delay=0, timeout=1)


@overrun.step(slug="hang")
def hang(flow_input: Any, ctx: Context) -> dict[str, Any]:
    """A plain `def` that ignores its 1 s timeout: its thread runs 3 s every
    time; `start` and `end` markers give each thread's span."""
    record(ctx, "start")
    time.sleep(3)
    record(ctx, "end")
    return {"attempt": ctx.attempt}


# ---------------------------------------------------------------- poison (F7)

poison = Flow("poison", max_attempts=3, base_delay=1, timeout=2)


@poison.step()
async def eat(flow_input: Any, ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    if isinstance(flow_input, dict) and flow_input.get("poison"):
        os._exit(1)
    await asyncio.sleep(_sleep_of(flow_input))
    return {"pid": os.getpid(), "attempt": ctx.attempt}


suspect = Flow("suspect", max_attempts=3, base_delay=1, timeout=6)


@suspect.step()
async def swallow(flow_input: Any, ctx: Context) -> dict[str, Any]:
    """Isolation tests: a poison (`os._exit`), or a task held on a gate beside it."""
    await arecord(ctx)
    if isinstance(flow_input, dict) and flow_input.get("poison"):
        os._exit(1)
    gate = gate_of(flow_input)
    if gate is not None:
        await await_gate(gate)
    return {"pid": os.getpid(), "attempt": ctx.attempt}


# ---------------------------------------------------------------- gated_long (D4)

gated_long = Flow("gated_long", max_attempts=3, base_delay=1, timeout=60)
gated_long.step(slug="hold")(hold)
gated_long.step(slug="after", depends_on=["hold"])(after)


# ---------------------------------------------------------------- s4

s4 = Flow("s4", max_attempts=2, base_delay=0, timeout=5)


@s4.step()
async def probe(flow_input: Any, ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    return {"ok": True}


def stray(flow_input: Any, ctx: Context) -> dict[str, Any]:
    """Looks like a handler and sits at the top of the app module, but is no
    step of any flow. A worker that resolved an unknown step by name here
    would run it: it leaves a marker file behind."""
    marker = os.environ.get(STRAY_MARKER_ENV)
    if marker:
        Path(marker).write_text(f"stray ran: {ctx.step_slug}\n")
    return {"stray": True}


def system(flow_input: Any, ctx: Context) -> dict[str, Any]:
    """Same as `stray`, named like `os.system`."""
    return stray(flow_input, ctx)


# ---------------------------------------------------------------- secret (S5)

secret = Flow("secret", max_attempts=2, base_delay=0, timeout=5)


@secret.step()
async def leak(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    if flow_input.get("fail"):
        raise RuntimeError(f"could not log in with password {flow_input['secret']}")
    return {"echo": flow_input["secret"]}


# ---------------------------------------------------------------- redo (R6)

redo = Flow("redo", max_attempts=3, base_delay=0, timeout=20)


@redo.step(slug="work")
async def redo_work(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Which code ran is the version file's content when the handler started:
    an attempt started before a fix answers with the old version."""
    await arecord(ctx)
    version = Path(flow_input["version"]).read_text().strip()  # noqa: ASYNC240 - a few bytes
    await await_gate(Path(flow_input["gates"]) / f"open-{version}")
    return {"version": version, "pid": os.getpid(), "attempt": ctx.attempt}


@redo.step(slug="join", depends_on=["work"])
async def redo_join(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await arecord(ctx)
    return {"work": deps["work"]}


# ---------------------------------------------------------------- halt (R7)

halt = Flow("halt", max_attempts=3, base_delay=0, timeout=5)


@halt.map(slug="part")
async def halt_part(item: dict[str, Any], ctx: Context) -> int:
    await arecord(ctx)
    await await_gate(Path(item["gate"]))
    return int(item["i"])


@halt.step(slug="total", depends_on=["part"])
async def halt_total(deps: dict[str, Any], ctx: Context) -> int:
    await arecord(ctx)
    return sum(deps["part"])
