"""An order pipeline: validate, then charge and pack every item in
parallel, then ship once both are done.

    validate ──> charge ──────────────────┐
        └──────> list_items ──> pack_item (one task per item) ──> ship
"""

from __future__ import annotations

import asyncio
from typing import Any

from flowworker import Context, Flow

orders = Flow("orders", max_attempts=3, base_delay=1, timeout=30)


@orders.step()
async def validate(order: dict[str, Any], ctx: Context) -> dict[str, Any]:
    order_id = int(order["order_id"])
    quantities = [1 + i % 3 for i in range(1 + order_id % 4)]
    items = [{"sku": f"SKU-{(order_id * 7 + i) % 100:03d}", "qty": qty}
             for i, qty in enumerate(quantities)]
    return {"order_id": order_id, "items": items, "total_cents": 999 * sum(quantities)}


@orders.step(depends_on=[validate])
def charge(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A plain `def`: runs in the worker's thread pool, like a blocking SDK call."""
    order = deps["validate"]
    return {"payment_id": f"pay_{ctx.run_id.hex[:12]}", "charged_cents": order["total_cents"]}


@orders.step(depends_on=[validate])
async def list_items(deps: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = deps["validate"]["items"]
    return items


@orders.map(over=list_items, timeout=10)
async def pack_item(item: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await asyncio.sleep(0.005)  # stands in for a call to the warehouse
    return {"sku": item["sku"], "box": f"box-{ctx.task_index}", "qty": item["qty"]}


@orders.step(depends_on=[charge, pack_item])
async def ship(deps: dict[str, Any], ctx: Context) -> dict[str, Any]:
    boxes = deps["pack_item"]
    return {"tracking": f"TRK{ctx.run_id.hex[:10].upper()}", "boxes": len(boxes),
            "payment_id": deps["charge"]["payment_id"]}
