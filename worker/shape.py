"""Compare a flow's shape in the database with its definition in code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flowworker.dsl import Flow


def shape_difference(flow: Flow, rows: Iterable[Mapping[str, Any]]) -> str | None:
    """None when the database rows (step_slug, step_type, deps) match the
    code; otherwise one sentence naming the first step that differs."""
    stored = {row["step_slug"]: (row["step_type"], tuple(sorted(row["deps"]))) for row in rows}
    if not stored:
        return (f"flow {flow.slug!r} is not in the database; compile and apply it "
                f"(flowworker compile --out DIR, then flowworker migrate --dir DIR)")
    for step in flow.steps.values():
        if step.slug not in stored:
            return f"flow {flow.slug!r}: step {step.slug!r} is in the code but not the database"
        db_type, db_deps = stored[step.slug]
        if db_type != step.step_type:
            return (f"flow {flow.slug!r}: step {step.slug!r} is {db_type} in the database, "
                    f"{step.step_type} in the code")
        if db_deps != tuple(sorted(step.deps)):
            return (f"flow {flow.slug!r}: step {step.slug!r} depends on {list(db_deps)} in the "
                    f"database, {sorted(step.deps)} in the code")
    extra = sorted(set(stored) - set(flow.steps))
    if extra:
        return f"flow {flow.slug!r}: step {extra[0]!r} is in the database but not the code"
    return None
