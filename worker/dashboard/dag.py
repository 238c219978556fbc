"""A run's DAG laid out for an inline SVG: one column per depth (the
longest path from a root, flowworker.ops.graph), steps in definition order
down each column, an edge from each dependency to its step. The template
draws it; every text goes through Jinja's escaping there."""

from __future__ import annotations

from dataclasses import dataclass

from flowworker.ops.graph import depths
from flowworker.ops.models import StepDetail

BOX_W, BOX_H = 190, 54
GAP_X, GAP_Y = 60, 20
MARGIN = 12
MAX_LABEL = 24
# Statuses with a colour of their own (dashboard.css); any other, such as
# one a later schema adds, is drawn as `other`.
KNOWN = frozenset({"created", "started", "completed", "failed", "cancelled", "paused",
                   "waiting", "timed_out", "queued"})


@dataclass(frozen=True)
class Box:
    slug: str
    label: str
    status: str
    css: str
    counts: str
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    path: str


@dataclass(frozen=True)
class Drawing:
    width: int
    height: int
    boxes: list[Box]
    edges: list[Edge]


def state_class(status: str | None) -> str:
    """The CSS class for a status: itself when known, else `other`."""
    name = status or "created"
    return name if name in KNOWN else "other"


def counts(step: StepDetail) -> str:
    """What a box says under its name: the status, and for a map step how
    many of its tasks are done (12/15 done, 1 failed)."""
    status = step.status or "not started"
    if step.step_type != "map" or step.tasks.total == 0:
        return status
    text = f"{step.tasks.completed}/{step.tasks.total} done"
    if step.tasks.failed:
        text += f", {step.tasks.failed} failed"
    return text


def layout(steps: list[StepDetail]) -> Drawing:
    order = [s.step_slug for s in steps]
    deps = {s.step_slug: s.depends_on for s in steps}
    depth = depths(order, deps)
    rows: dict[int, int] = {}
    where: dict[str, tuple[int, int]] = {}
    boxes = []
    for step in steps:
        column = depth[step.step_slug]
        row = rows.get(column, 0)
        rows[column] = row + 1
        x, y = MARGIN + column * (BOX_W + GAP_X), MARGIN + row * (BOX_H + GAP_Y)
        where[step.step_slug] = (x, y)
        boxes.append(Box(step.step_slug, _label(step.step_slug), step.status or "created",
                         state_class(step.status), counts(step), x, y))
    edges = [Edge(_edge(where[dep], where[step.step_slug]))
             for step in steps for dep in step.depends_on if dep in where]
    width = MARGIN * 2 + (max(depth.values(), default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    # The lane under the last row (long edges) stays inside the picture.
    height = MARGIN * 2 + max(rows.values(), default=1) * (BOX_H + GAP_Y) - GAP_Y // 2
    return Drawing(width, height, boxes, edges)


def _label(slug: str) -> str:
    return slug if len(slug) <= MAX_LABEL else slug[:MAX_LABEL - 1] + "…"


def _edge(start: tuple[int, int], end: tuple[int, int]) -> str:
    """From the right middle of one box to the left middle of another: a
    curve to the next column; past a column, along the free lane under the
    source's row and up through the gap before the target, so it never
    runs behind a box between them."""
    x1, y1 = start[0] + BOX_W, start[1] + BOX_H // 2
    x2, y2 = end[0], end[1] + BOX_H // 2
    if x2 - x1 <= GAP_X:
        bend = (x2 - x1) // 2
        return f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
    lane = start[1] + BOX_H + GAP_Y // 2
    a, b = x1 + GAP_X // 2, x2 - GAP_X // 2
    return (f"M{x1},{y1} C{a},{y1} {x1},{lane} {a},{lane} L{b},{lane} "
            f"C{x2},{lane} {b},{y2} {x2},{y2}")
