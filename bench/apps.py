"""The flows the benchmark runs. Every handler is a no-op, so the figures
measure flowworker and PostgreSQL, not the work.

- `bench`: one step; the drain and enqueue figures.
- `dag`: a -> (b, c) -> d, plus `m`, a map step over the 10-element array
  that `a` returns: 14 handler executions per run.
- `ping`: one step that writes its arrival time (see below); enqueue->start latency.
- `chain`: five steps in a line, each writing its arrival time; step-to-step hop.

`ping` and `chain` append `run_id step_slug unix_time` lines to the file named
by BENCH_STAMPS (line-buffered, so a SIGTERM loses nothing). The drain flows
record nothing: their timing comes from flowworker.step_tasks.
"""

from __future__ import annotations

import os
import time
from typing import IO, Any

from flowworker import Context, Flow

STAMPS_ENV = "BENCH_STAMPS"
MAP_WIDTH = 10

_stamps: IO[str] | None = None


def _stamp(ctx: Context) -> None:
    """Record when this handler started, in the worker's own clock."""
    arrived = time.time()
    global _stamps  # noqa: PLW0603 - one file per worker process, opened on first use
    if _stamps is None:
        _stamps = open(os.environ[STAMPS_ENV], "a", buffering=1)  # noqa: SIM115 - kept open
    _stamps.write(f"{ctx.run_id} {ctx.step_slug} {arrived:.6f}\n")


bench = Flow("bench")


@bench.step(slug="noop")
async def bench_noop(_input: Any, _ctx: Context) -> None:
    return None


dag = Flow("dag")


@dag.step(slug="a")
async def dag_a(_input: Any, _ctx: Context) -> list[int]:
    return list(range(MAP_WIDTH))


@dag.step(slug="b", depends_on=["a"])
async def dag_b(_deps: Any, _ctx: Context) -> None:
    return None


@dag.step(slug="c", depends_on=["a"])
async def dag_c(_deps: Any, _ctx: Context) -> None:
    return None


@dag.map(slug="m", over="a")
async def dag_m(_item: Any, _ctx: Context) -> None:
    return None


@dag.step(slug="d", depends_on=["b", "c"])
async def dag_d(_deps: Any, _ctx: Context) -> None:
    return None


ping = Flow("ping")


@ping.step(slug="ping")
async def ping_ping(_input: Any, ctx: Context) -> None:
    _stamp(ctx)


chain = Flow("chain")


@chain.step(slug="s1")
async def chain_s1(_input: Any, ctx: Context) -> None:
    _stamp(ctx)


@chain.step(slug="s2", depends_on=["s1"])
async def chain_s2(_deps: Any, ctx: Context) -> None:
    _stamp(ctx)


@chain.step(slug="s3", depends_on=["s2"])
async def chain_s3(_deps: Any, ctx: Context) -> None:
    _stamp(ctx)


@chain.step(slug="s4", depends_on=["s3"])
async def chain_s4(_deps: Any, ctx: Context) -> None:
    _stamp(ctx)


@chain.step(slug="s5", depends_on=["s4"])
async def chain_s5(_deps: Any, ctx: Context) -> None:
    _stamp(ctx)


FLOWS = (bench, dag, ping, chain)
STEPS_PER_DAG_RUN = len(dag.steps) - 1 + MAP_WIDTH
CHAIN_STEPS = [step for step in chain.steps]
