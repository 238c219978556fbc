"""`diamond` with another shape than tests/apps/flows.py: its last step is
`tally` where the real flow has `summarize`. A worker started with this app
against a database holding the real `diamond` must refuse (exit 4)."""

from __future__ import annotations

from typing import Any

from flowworker import Context, Flow

diamond = Flow("diamond", max_attempts=3, base_delay=1, timeout=10)


@diamond.step()
def prepare(flow_input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return {"n": flow_input["n"], "items": []}


@diamond.step(depends_on=[prepare])
def left(deps: dict[str, Any], ctx: Context) -> int:
    return 0


@diamond.step(depends_on=[prepare])
def right(deps: dict[str, Any], ctx: Context) -> int:
    return 0


@diamond.step(depends_on=[prepare])
def items(deps: dict[str, Any], ctx: Context) -> list[int]:
    return []


@diamond.map(over=items)
def square(item: int, ctx: Context) -> int:
    return item * item


@diamond.step(depends_on=[left, right, square])
def tally(deps: dict[str, Any], ctx: Context) -> int:
    return 0
