"""The flow of the operator session (tests/cli/test_operator_session.py):
`checkout` validates an order, packs each item (a map) and charges it; the
charge fails while the flag file named in the flow input is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowworker import Context, Flow

checkout = Flow("checkout", max_attempts=2, base_delay=0, timeout=10)


@checkout.step()
async def validate(order: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return {"items": order["items"]}


@checkout.step(depends_on=[validate])
async def items(deps: dict[str, Any], ctx: Context) -> list[Any]:
    found: list[Any] = deps["validate"]["items"]
    return found


@checkout.map(over=items)
async def pack(item: Any, ctx: Context) -> dict[str, Any]:
    return {"packed": item}


@checkout.step(depends_on=[validate])  # a plain def: it reads a file, in a thread
def charge(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    if not Path(ctx.flow_input["flag"]).exists():
        raise RuntimeError("card declined: the flag is not set")
    return {"charged": True}


@checkout.step(depends_on=[charge, pack])
async def ship(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return {"boxes": len(deps["pack"])}
