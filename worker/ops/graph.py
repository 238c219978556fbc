"""A flow's DAG laid out for drawing: depths (for layers) and a spanning
tree (for a terminal), from the steps in definition order and their deps.

Definition order is topological: a step can only be added after its deps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TreeRow:
    """One step in the tree: `lasts` says, for each ancestor level and then
    this step, whether it is the last child there (what the guides draw);
    `also_after` are its deps other than the parent it is drawn under."""

    step: str
    lasts: tuple[bool, ...]
    also_after: tuple[str, ...]

    @property
    def depth(self) -> int:
        return len(self.lasts) - 1


def depths(order: Sequence[str], deps: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """The longest path from a root to each step (roots are 0)."""
    depth: dict[str, int] = {}
    for step in order:
        depth[step] = 1 + max((depth[d] for d in deps.get(step, ())), default=-1)
    return depth


def tree(order: Sequence[str], deps: Mapping[str, Sequence[str]]) -> list[TreeRow]:
    """Every step once, under its deepest dep (the latest defined of equals),
    so a step is drawn below the longest chain that leads to it; in
    definition order among siblings; roots at the top level."""
    depth = depths(order, deps)
    position = {step: i for i, step in enumerate(order)}
    parent: dict[str, str | None] = {
        step: max(deps.get(step, ()), key=lambda d: (depth[d], position[d]), default=None)
        for step in order}
    children: dict[str | None, list[str]] = {}
    for step in order:
        children.setdefault(parent[step], []).append(step)
    rows: list[TreeRow] = []
    # Depth first, children in order; a stack, not recursion: a chain of
    # steps may be deeper than Python's recursion limit.
    roots = children.get(None, [])
    stack: list[tuple[str, tuple[bool, ...]]] = [
        (root, (i == len(roots) - 1,)) for i, root in reversed(list(enumerate(roots)))]
    while stack:
        step, lasts = stack.pop()
        rows.append(TreeRow(step, lasts, tuple(d for d in deps.get(step, ())
                                                if d != parent[step])))
        kids = children.get(step, [])
        stack.extend((kid, (*lasts, i == len(kids) - 1))
                     for i, kid in reversed(list(enumerate(kids))))
    return rows
