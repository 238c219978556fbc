"""Compare a flow's shape in the database, or in its last compiled file, with
its definition in code."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowworker.dsl import Flow


def shape_difference(flow: Flow, rows: Iterable[Mapping[str, Any]]) -> str | None:
    """None when the database rows (step_slug, step_type, deps) match the
    code; otherwise one sentence naming the first step that differs, and
    the way forward."""
    stored = {row["step_slug"]: (row["step_type"], tuple(sorted(row["deps"]))) for row in rows}
    if not stored:
        return (f"flow {flow.slug!r} is not in the database; compile and apply it "
                f"(flowworker compile --out DIR, then flowworker migrate --dir DIR)")
    difference = _first_difference(flow, stored)
    if difference is None:
        return None
    return (f"flow {flow.slug!r}: {difference}; compile and migrate the change, or, when the "
            f"flow has runs, keep it as it was and give the new shape a new slug, e.g. "
            f"{next_slug(flow.slug)} (docs/flows.md, \"Changing a flow\")")


def _first_difference(flow: Flow, stored: dict[str, tuple[str, tuple[str, ...]]]) -> str | None:
    for step in flow.steps.values():
        if step.slug not in stored:
            return f"step {step.slug!r} is in the code but not the database"
        db_type, db_deps = stored[step.slug]
        if db_type != step.step_type:
            return f"step {step.slug!r} is {db_type} in the database, {step.step_type} in the code"
        if db_deps != tuple(sorted(step.deps)):
            return (f"step {step.slug!r} depends on {list(db_deps)} in the database, "
                    f"{sorted(step.deps)} in the code")
    extra = sorted(set(stored) - set(flow.steps))
    if extra:
        return f"step {extra[0]!r} is in the database but not the code"
    return None


# ---------- A flow's definition, as code or a compiled file states it ----------

FLOW_OPTIONS = ("max_attempts", "base_delay", "timeout")
STEP_OPTIONS = ("max_attempts", "base_delay", "timeout", "start_delay")
_VERSIONED = re.compile(r"^(.*)_v(\d+)$")


@dataclass(frozen=True)
class StepDefinition:
    step_type: str
    deps: tuple[str, ...]  # sorted: the database keeps them as a set
    options: tuple[int | None, ...]  # STEP_OPTIONS, None where unset
    gate: tuple[tuple[str, ...] | None, ...] = (None, None)  # a wait step's options, fail_on


@dataclass(frozen=True)
class FlowDefinition:
    """What create_flow and add_step are told about one flow."""

    slug: str
    options: tuple[int, ...]  # FLOW_OPTIONS
    steps: dict[str, StepDefinition] = field(default_factory=dict)


def definition_of(flow: Flow) -> FlowDefinition:
    steps = {
        step.slug: StepDefinition(step.step_type, tuple(sorted(step.deps)),
                                  tuple(getattr(step, name) for name in STEP_OPTIONS),
                                  (step.options, step.fail_on))
        for step in flow.steps.values()}
    return FlowDefinition(flow.slug, tuple(getattr(flow, name) for name in FLOW_OPTIONS), steps)


@dataclass(frozen=True)
class FlowChange:
    """How a definition differs from an earlier one, one phrase per change."""

    shape: tuple[str, ...]  # steps added or removed, deps or step types changed
    options: tuple[str, ...]
    removed: bool = False  # a step was removed
    reshaped: bool = False  # a step kept its slug but changed deps or type


def compare(old: FlowDefinition, new: FlowDefinition) -> FlowChange:
    added = [f"step {slug!r} added" for slug in new.steps if slug not in old.steps]
    removed = [f"step {slug!r} removed" for slug in old.steps if slug not in new.steps]
    reshaped: list[str] = []
    options = _option_changes("", FLOW_OPTIONS, old.options, new.options)
    for slug, step in new.steps.items():
        before = old.steps.get(slug)
        if before is None:
            continue
        if before.step_type != step.step_type:
            reshaped.append(f"step {slug!r} is now {step.step_type} (was {before.step_type})")
        if before.deps != step.deps:
            reshaped.append(f"step {slug!r} now depends on {_names(step.deps)} "
                            f"(was {_names(before.deps)})")
        options += _option_changes(f"step {slug!r} ", STEP_OPTIONS, before.options, step.options)
        if before.gate != step.gate:
            options.append(f"step {slug!r} gate options {before.gate[0]} -> {step.gate[0]}, "
                           f"fail_on {before.gate[1]} -> {step.gate[1]}")
    return FlowChange(tuple(added + removed + reshaped), tuple(options),
                      removed=bool(removed), reshaped=bool(reshaped))


def _option_changes(where: str, names: tuple[str, ...], old: tuple[int | None, ...],
                    new: tuple[int | None, ...]) -> list[str]:
    return [f"{where}{name} {_value(a)} -> {_value(b)}"
            for name, a, b in zip(names, old, new, strict=True) if a != b]


def _value(value: int | None) -> str:
    return "unset" if value is None else str(value)


def _names(slugs: tuple[str, ...]) -> str:
    return "[" + ", ".join(slugs) + "]"


def shape_warning(slug: str, since: str, change: FlowChange) -> str:
    """What a shape change means for a flow in the database, and the way
    that works: one line."""
    if change.removed:
        refused = "a removed step stays in the database, and workers then refuse the flow"
    elif change.reshaped:
        refused = "migrate refuses it (exit 4)"
    else:
        refused = f"migrate adds steps only while {slug!r} has no runs (else exit 4)"
    return (f"flow {slug!r} changed shape since {since}: {', '.join(change.shape)}. A flow "
            f"cannot change shape in place once it has runs: {refused}. Keep {slug!r} as it "
            f"was until its runs have drained and give the new shape a new slug, e.g. "
            f"Flow(\"{next_slug(slug)}\") (docs/flows.md, \"Changing a flow\")")


def next_slug(slug: str) -> str:
    """The slug to suggest for a flow's next shape: orders_v2 after orders."""
    match = _VERSIONED.match(slug)
    if match:
        return f"{match[1]}_v{int(match[2]) + 1}"
    return f"{slug}_v2"
